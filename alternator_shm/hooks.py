"""botocore event handlers: route every attempt, trim headers, compress, send it ourselves.

botocore re-creates and re-signs the request for every attempt of a call
(``Endpoint._send_request``), and the ``AWSRequest.context`` of each attempt is the *same* dict
(``create_request_object`` copies the reference from the request dict). We hook two public
events of a DynamoDB client:

``before-parameter-build.dynamodb`` (only with key-route affinity)
    classify the call and hash its partition key(s) into the request context; the plan over
    the node table is built at the first attempt and reused by every retry.

``before-sign.dynamodb``
    1. request compression: gzip the body *before* signing, so ``Content-Encoding`` is signed
       and the payload hash covers the compressed bytes, which is what Alternator verifies;
    2. routing: ask the router for this attempt's node (excluding the nodes already tried by
       this call, remembered in the context; along the call's affinity plan if it has one)
       and point ``request.url`` at it, so the signature (its ``host``) matches the node
       actually contacted and every retry lands elsewhere.

``before-send.dynamodb``
    set or remove ``User-Agent``, optionally drop every header Alternator never reads (but
    never a signed one), then send the request through our
    :class:`~alternator_shm.transport.Transport` and return the response; botocore skips its
    own HTTP session when a ``before-send`` handler answers (``Endpoint._do_get_response``).
    Connection-level failures are reported to the router and raised as botocore's own
    exceptions, so botocore retries them as usual. A final HTTP answer is a health success,
    except 500/502/503/504: those are health-neutral (node-health spec) and not reported.
"""

from __future__ import annotations

import gzip
import re
import weakref
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import botocore.awsrequest
import botocore.exceptions
import botocore.handlers
import botocore.hooks
from urllib3.util import SKIP_HEADER

from alternator_shm._version import __version__
from alternator_shm.affinity import Affinity, DescribeTable, Target
from alternator_shm.metrics import annotate_attempt
from alternator_shm.transport import PROXY_HOP_FAILURE, Transport

__all__ = [
    "HookOptions",
    "Router",
    "register_hooks",
    "skip_sdk_retry_headers",
    "skip_sdk_user_agent_builds",
]

#: Key in ``request.context`` holding the nodes tried by the current call, in order.
TRIED_KEY = "alternator_shm.tried"
_GZIP_KEY = "alternator_shm.gzip"
#: Key-route affinity: the call's key hashes (set when parameters are built), then its plan.
AFFINITY_TARGET_KEY = "alternator_shm.affinity_target"
AFFINITY_PLAN_KEY = "alternator_shm.affinity_plan"
_GZIP_LEVEL = 6

# Headers Alternator reads (ALTERNATOR_PROTOCOL.md §3.1) plus HTTP framing. Everything else is
# dropped by optimize_headers unless it is signed.
_ALWAYS_KEPT = frozenset(
    {
        "host",
        "x-amz-target",
        "content-length",
        "transfer-encoding",
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "content-encoding",
    }
)
_SIGNED_HEADERS = re.compile(r"SignedHeaders=([^,\s]+)")
#: Answers that say nothing about a node's health (node-health spec, outcome classification),
#: and 407 Proxy Authentication Required: only a proxy sends it (no Alternator node does), so the
#: node was not reached.
HEALTH_NEUTRAL_STATUSES = frozenset({407, 500, 502, 503, 504})


class Router(Protocol):
    """Chooses the node of each attempt and hears how it went (implemented in routing.py)."""

    def choose(self, tried: Collection[str], plan: Sequence[str] | None = None) -> str:
        """Base URL ``scheme://host:port`` for this attempt; ``tried`` = earlier attempts;
        ``plan`` = the call's fixed candidate order (key-route affinity), if any."""
        ...

    def nodes(self) -> tuple[str, ...]:
        """Every discovered node (the affinity ring is built from them)."""
        ...

    def report_failure(self, node: str, error: BaseException) -> None: ...

    def report_success(self, node: str) -> None: ...


@dataclass(frozen=True)
class HookOptions:
    #: Drop every header Alternator never reads (Content-Type is removed before signing;
    #: every signed header is kept).
    optimize_headers: bool = False
    #: None -> ``alternator-shm/<version>`` (none at all with optimize_headers);
    #: "" -> send no User-Agent at all; any other string is sent as is.
    user_agent: str | None = None
    #: gzip request bodies of at least this many bytes (before signing); None = never.
    request_compression: int | None = None
    #: send ``Accept-Encoding: gzip, deflate`` and decode compressed answers.
    response_compression: bool = False

    @property
    def wire_user_agent(self) -> str:
        """The User-Agent sent with every attempt ("" = none): the rule of ``user_agent``."""
        if self.user_agent is not None:
            return self.user_agent
        # Alternator only stores the User-Agent for system.clients; when the user did not
        # ask for one, header optimisation drops it.
        return "" if self.optimize_headers else f"alternator-shm/{__version__}"


def _base_url(url: str) -> str:
    """``scheme://host:port`` of a request URL (what the router handed out)."""
    slash = url.find("/", url.find("://") + 3)
    return url if slash < 0 else url[:slash]


def _set_header(headers: Any, name: str, value: str) -> None:
    # AWSRequest headers are an email.message-like HTTPHeaders: assignment appends.
    del headers[name]
    headers[name] = value


class _Answer(Protocol):
    @property
    def status_code(self) -> int: ...


_A = TypeVar("_A", bound=_Answer)


class Attempt:
    """One attempt on one node: in flight (host-wide) while open, its outcome reported on exit.

    The one owner of before-send reporting, for the sync handler and the async one (which
    awaits inside the ``with``). A connection-level failure (botocore's ``HTTPClientError`` /
    ``ConnectionError``: refused, reset, timed out, TLS, undecodable answer) counts against the
    node: the node, not the request, is at fault; not a ``ProxyConnectionError`` nor an error
    marked :data:`~alternator_shm.transport.PROXY_HOP_FAILURE` (the proxy could not be reached
    or refused the tunnel: the node was not, and counting it would put every
    node behind that proxy out of rotation host-wide, for processes without the proxy too; a
    proxy's 5xx answer on the http path is neutral likewise). A final answer proves the node
    serves, unless it is one of the 5xx that may come from an overloaded or shutting-down node
    (:data:`HEALTH_NEUTRAL_STATUSES`): those count neither way. Any other exit (cancellation,
    another error) only ends the in-flight count; only an answered attempt's latency counts.
    """

    __slots__ = ("_handlers", "_status", "_token", "node")

    def __init__(self, handlers: _Handlers, node: str) -> None:
        self._handlers = handlers
        self.node = node
        self._status: int | None = None
        self._token: Any = None

    def __enter__(self) -> Attempt:
        started = self._handlers._started
        self._token = started(self.node) if started is not None else None
        return self

    def answered(self, response: _A) -> _A:
        """Record the final answer of this attempt; return it."""
        self._status = response.status_code
        return response

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        handlers = self._handlers
        router = handlers._router
        answered = exc is None and self._status is not None
        try:
            if isinstance(exc, (botocore.exceptions.HTTPClientError,
                                botocore.exceptions.ConnectionError)) and not (
                isinstance(exc, botocore.exceptions.ProxyConnectionError)
                or getattr(exc, PROXY_HOP_FAILURE, False)
            ):  # fmt: skip
                router.report_failure(self.node, exc)
        finally:
            finished = handlers._finished
            if finished is not None:
                finished(self._token, answered)
        if answered and self._status not in HEALTH_NEUTRAL_STATUSES:
            router.report_success(self.node)


class _Handlers:
    """The handlers of one client; holds no per-request state (that lives in the context)."""

    def __init__(
        self,
        router: Router,
        transport: Transport | None,
        options: HookOptions,
        timeout: tuple[float, float],
        affinity: Affinity | None = None,
        describe_table: DescribeTable | None = None,
    ) -> None:
        self._router = router
        # Host-wide in-flight and latency per node (routing.Router); optional, so a router
        # without load tracking (a test's fake) still works.
        self._started: Callable[[str], Any] | None = getattr(router, "attempt_started", None)
        self._finished: Callable[[Any, bool], None] | None = getattr(
            router, "attempt_finished", None
        )
        self._affinity = affinity
        self._describe_table = describe_table
        self._transport = transport
        self._timeout = timeout
        self._decode = options.response_compression
        self._min_gzip = options.request_compression
        self._optimize = options.optimize_headers
        self._user_agent = options.wire_user_agent
        # The headers we always set on the wire; SKIP_HEADER stops http.client / urllib3
        # from adding their own defaults ("python-urllib3/x", "Accept-Encoding: identity").
        self._fixed: dict[str, str] = {"User-Agent": self._user_agent or SKIP_HEADER}
        if options.response_compression:
            self._fixed["Accept-Encoding"] = "gzip, deflate"
        elif options.optimize_headers:
            self._fixed["Accept-Encoding"] = SKIP_HEADER
        self._kept = set(_ALWAYS_KEPT) | {name.lower() for name in self._fixed}

    # -- before-sign ---------------------------------------------------------------------------

    def before_sign(self, request: botocore.awsrequest.AWSRequest, **kwargs: Any) -> None:
        if self._optimize:
            # Alternator never reads Content-Type. Dropped before signing it is neither signed
            # nor sent (and SignedHeaders gets shorter); dropped after signing it would break
            # the signature, which the server computes with an empty value for it.
            del request.headers["Content-Type"]
        if self._min_gzip is not None:
            self._compress(request)
        context: MutableMapping[str, Any] = request.context
        tried: list[str] | None = context.get(TRIED_KEY)
        if tried is None:
            tried = context[TRIED_KEY] = []
        plan = self._affinity_plan(context) if self._affinity is not None else None
        node = self._router.choose(tried, plan) if plan else self._router.choose(tried)
        tried.append(node)
        annotate_attempt(node, tried)
        url = request.url or "/"
        slash = url.find("/", url.find("://") + 3)
        request.url = node + (url[slash:] if slash >= 0 else "/")

    def _affinity_plan(self, context: MutableMapping[str, Any]) -> Sequence[str] | None:
        # Built once, at the first attempt (the freshest table); every retry reuses it.
        plan: Sequence[str] | None = context.get(AFFINITY_PLAN_KEY)
        if plan is None:
            target: Target | None = context.get(AFFINITY_TARGET_KEY)
            if target is None or self._affinity is None:
                return None
            plan = context[AFFINITY_PLAN_KEY] = self._affinity.plan(target, self._router.nodes())
        return plan

    # -- before-parameter-build (key-route affinity only) ----------------------------------------

    def before_parameter_build(
        self, params: Mapping[str, Any], model: Any, context: MutableMapping[str, Any],
        **kwargs: Any,
    ) -> None:
        assert self._affinity is not None
        target = self._affinity.target(model.name, params, self._describe_table)
        if target is not None:
            context[AFFINITY_TARGET_KEY] = target

    def _compress(self, request: botocore.awsrequest.AWSRequest) -> None:
        assert self._min_gzip is not None
        body = request.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not isinstance(body, (bytes, bytearray)) or len(body) < self._min_gzip:
            return
        if "Content-Encoding" in request.headers:
            return  # already encoded by someone else: never double-encode
        # Every attempt of a call starts from the same request-dict body: compress it once.
        cached = request.context.get(_GZIP_KEY)
        if cached is not None and cached[0] is request.data:
            compressed = cached[1]
        else:
            compressed = gzip.compress(bytes(body), compresslevel=_GZIP_LEVEL, mtime=0)
            request.context[_GZIP_KEY] = (request.data, compressed)
        if len(compressed) >= len(body):
            return  # incompressible: sending it plain is cheaper for both sides
        request.data = compressed
        _set_header(request.headers, "Content-Encoding", "gzip")
        if "Content-Length" in request.headers:
            _set_header(request.headers, "Content-Length", str(len(compressed)))

    # -- before-send ---------------------------------------------------------------------------

    def before_send(
        self, request: botocore.awsrequest.AWSPreparedRequest, **kwargs: Any
    ) -> botocore.awsrequest.AWSResponse:
        assert self._transport is not None
        with self.attempt(request) as attempt:
            response = attempt.answered(
                self._transport.send(request, timeout=self._timeout, decode_content=self._decode)
            )
        return response

    def attempt(self, request: botocore.awsrequest.AWSPreparedRequest) -> Attempt:
        """Set the wire headers of a signed attempt; ``with`` the result around its sending.

        Shared by the sync and async send paths (``alternator_shm.aio.hooks``).
        """
        return Attempt(self, self.prepare_send(request))

    def prepare_send(self, request: botocore.awsrequest.AWSPreparedRequest) -> str:
        """Set the wire headers of a signed attempt; return the node it goes to."""
        headers = request.headers
        if self._optimize:
            self._trim(headers)
        for name, value in self._fixed.items():
            headers[name] = value
        return _base_url(request.url)

    @property
    def timeout(self) -> tuple[float, float]:
        return self._timeout

    @property
    def decode(self) -> bool:
        return self._decode

    def _trim(self, headers: Any) -> None:
        kept = self._kept
        dropped = [name for name in headers if name.lower() not in kept]
        if not dropped:
            return
        authorization = headers.get("Authorization")
        if authorization:
            match = _SIGNED_HEADERS.search(str(authorization))
            if match:
                signed = set(match.group(1).lower().split(";"))
                dropped = [name for name in dropped if name.lower() not in signed]
        for name in dropped:
            del headers[name]


def describe_with(client: Any) -> DescribeTable:
    """``DescribeTable`` through ``client`` (same credentials and config), for lookup threads.

    Held weakly, so a forgotten client is not kept alive by a lookup.
    """
    ref = weakref.ref(client)

    def describe(table: str) -> Mapping[str, Any]:
        live = ref()
        if live is None:
            raise RuntimeError("the client that needed this partition key is gone")
        answer: Mapping[str, Any] = live.describe_table(TableName=table)
        return answer

    return describe


class _WireUserAgent:
    """Stands in for one client's botocore ``UserAgentString``: its ``to_string()`` is the
    User-Agent our ``before-send`` puts on the wire (ours, the user's, or empty for none)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def to_string(self) -> str:
        return self._value


def skip_sdk_user_agent_builds(client: Any, user_agent: str) -> bool:
    """Spare ``client`` botocore's two User-Agent builds per attempt, whose value is never sent.

    botocore builds its User-Agent string when it serializes a request
    (``_convert_to_request_dict`` calls the client's ``_user_agent_creator.to_string()``) and
    again in a ``request-created`` handler (``rebuild_and_replace_user_agent_handler``): about
    300 Python calls each, some 10 % of a plain GetItem's client CPU together. Our
    ``before-send`` handler always replaces that header (``User-Agent`` of
    :class:`HookOptions`), so both builds are thrown away; the wire is byte for byte the same
    without them. The rebuild handler is removed with the public events API (``unregister``).
    No event precedes the serialization-time build, so the client's own creator (one per
    client, never shared) is swapped for one answering ``user_agent``: handlers that read the
    header before sending now see the value that is sent. aiobotocore clients lay this out the
    same way. Returns False (nothing changed, only the saving lost) if a botocore version lays
    it out otherwise; calling it again is a no-op.
    """
    creator = getattr(client, "_user_agent_creator", None)
    if isinstance(creator, _WireUserAgent):
        return True
    handler = getattr(creator, "rebuild_and_replace_user_agent_handler", None)
    if handler is None or not callable(getattr(creator, "to_string", None)):
        return False
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.unregister(f"request-created.{service_id}", handler)
    client._user_agent_creator = _WireUserAgent(user_agent)
    return True


def skip_sdk_retry_headers(events: botocore.hooks.BaseEventHooks) -> None:
    """With ``optimize_headers``: let botocore not add ``amz-sdk-invocation-id`` and
    ``amz-sdk-request`` to this client's requests.

    Its ``request-created`` handler adds them after the signer (so they are never signed) and
    header optimisation drops them before sending; not adding them saves both steps. Done
    with the public events API; retries themselves are unaffected (their state lives in the
    request context).
    """
    events.unregister("request-created", botocore.handlers.add_retry_headers)


def register_hooks(
    events: botocore.hooks.BaseEventHooks,
    *,
    router: Router,
    transport: Transport,
    options: HookOptions,
    timeout: tuple[float, float],
    affinity: Affinity | None = None,
    client: Any = None,
) -> None:
    """Install routing, header, compression and transport handlers on one client's events.

    ``events`` is ``client.meta.events`` (botocore copies the session's emitter per client, so
    other clients are unaffected). ``timeout`` is (connect, read) for every API attempt.
    ``affinity`` turns on key-route affinity; ``client`` (held weakly) then runs the
    background ``DescribeTable`` lookups of unknown partition keys.
    """
    describe = describe_with(client) if client is not None else None
    handlers = _Handlers(router, transport, options, timeout, affinity, describe)
    if client is not None:
        skip_sdk_user_agent_builds(client, options.wire_user_agent)
    if options.optimize_headers:
        skip_sdk_retry_headers(events)
    if affinity is not None:
        # Registered after boto3's resource transforms (same event), so a Table resource's
        # high-level values are already plain AttributeValues here.
        events.register("before-parameter-build.dynamodb", handlers.before_parameter_build)
    events.register("before-sign.dynamodb", handlers.before_sign)
    # botocore-stubs types handlers as returning None; before-send handlers may answer.
    events.register("before-send.dynamodb", handlers.before_send)  # type: ignore[arg-type]
