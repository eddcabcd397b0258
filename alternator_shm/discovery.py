"""Node discovery: ``GET /localnodes`` with a routing scope, strict parsing, scope fallback.

Alternator answers ``GET /localnodes`` (no authentication) with a JSON list of the addresses of
the live nodes of one datacenter: by default the contacted node's own, or the one named by
``?dc=``, optionally narrowed to one rack by ``?rack=``. An unknown dc or rack yields ``[]``;
servers older than 2025.1 ignore both parameters.

:class:`Discovery` turns that into the node table we route over:

* candidates are the nodes of the published table, asked in random order, then the seeds (a
  host-name seed contributes every address it resolves to, IPv4 and IPv6, resolved again each
  time the seeds are used), so a cluster whose seeds were all replaced is still found and no
  single node is always asked first;
* every request has ONE total deadline (:data:`REQUEST_TIMEOUT`, not per socket read) and a body
  cap (:data:`_MAX_BODY_BYTES`): a node that trickles or never stops answering is cut off; one
  :meth:`Discovery.fetch` has one overall budget (:data:`FETCH_TIMEOUT`). Unresponsive nodes
  are asked concurrently (at most :data:`MAX_IN_FLIGHT` at once, a new one every
  :data:`HEDGE_DELAY` while none answered), so N paused nodes cost about one timeout, not N;
* no single node can narrow the table: a node of the previous table that an answer leaves out
  is asked itself, and leaves only if it fails to answer or answers without itself. A node
  that lists only itself is outvoted by the others it omits. Nor does one node's word alone
  make the table: when there is no table of this scope yet, or the only answer lists nothing
  but its own node, a second witness is asked (a node the answer lists, else the remaining
  candidates and the seeds), so a first table is never one partial view, and a table that a
  partial view already narrowed to itself is widened again by the seeds at the next refresh;
* a rack or datacenter scope is the union of those answers; the cluster scope is the union
  of the answers of every datacenter reachable from the candidates;
* with ``fallback`` an empty scope widens: rack -> datacenter -> cluster (one WARNING naming
  the scope used, each time it changes); without it, an empty configured scope is a verdict
  (:class:`DiscoveryResult` with no node and ``empty=True``) that the refresher publishes, so
  every process raises :class:`~alternator_shm.errors.NoLiveNodesError` naming the scope;
* answers are parsed strictly (a JSON list of at most 4096 host names / IP addresses); a bad
  answer is a failure of that candidate, never a partial table.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

from urllib3.connection import HTTPConnection

from alternator_shm._version import __version__
from alternator_shm.errors import ConfigurationError, DiscoveryError
from alternator_shm.fleet import events as _events
from alternator_shm.transport import Transport

__all__ = [
    "FETCH_TIMEOUT",
    "MAX_NODES",
    "REQUEST_TIMEOUT",
    "Discovery",
    "DiscoveryResult",
    "Scope",
    "node_url",
    "parse_localnodes",
    "scope_chain",
]

log = logging.getLogger(__name__)

#: Most entries accepted in one ``/localnodes`` answer.
MAX_NODES = 4096
#: Discovery socket timeouts (connect, read) in seconds: /localnodes is tiny, so a node slower
#: than this is treated as unreachable and the next candidate is asked.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0
#: Total deadline of one ``/localnodes`` request or one probe, connect to last byte (seconds).
REQUEST_TIMEOUT = 2.0
#: Total budget of one :meth:`Discovery.fetch`, every scope and confirmation included (seconds).
FETCH_TIMEOUT = 4.0
#: While no node has answered, ask one more candidate every this many seconds.
HEDGE_DELAY = 0.2
#: Most requests of one fetch in flight at once, and most requests of one fetch in all.
MAX_IN_FLIGHT = 8
MAX_ASKS = 64
# A 4096-entry list of 253-character names is ~1.1 MB; anything much bigger is not an answer.
_MAX_BODY_BYTES = 2 * 1024 * 1024
_MAX_PROBE_BODY_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_HEADERS = {"User-Agent": f"alternator-shm/{__version__}", "Accept": "application/json"}
# Probes say what they are, so server logs (and tests) tell them from discovery.
_PROBE_HEADERS = {**_HEADERS, "User-Agent": f"alternator-shm/{__version__} (health probe)"}
_FEATURE_PROBE_RACK = "fakeRack"


def node_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with an IPv6 literal in brackets (``http://[::1]:8000``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _canonical_host(entry: str) -> str | None:
    """The canonical form of one host (IP address or DNS name), or None if it is not one."""
    bracketed = entry.startswith("[") and entry.endswith("]")
    candidate = entry[1:-1] if bracketed else entry
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id:
                return None  # a zone id cannot be used in a URL without %25-escaping
            return str(address)
        return None if bracketed else str(address)
    if bracketed:  # brackets around something that is not an IPv6 literal
        return None
    name = entry[:-1] if entry.endswith(".") else entry
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # "1.2.3.999" or "300": a malformed IPv4, not a host name
        return None
    return name.lower()


def parse_localnodes(body: bytes) -> list[str]:
    """Parse a ``/localnodes`` answer strictly: deduplicated, sorted hosts.

    Accepts only a JSON list of at most :data:`MAX_NODES` strings, each an IPv4 address, an
    IPv6 address (bare, as the server sends it, or bracketed) or a DNS host name. Anything else
    raises :class:`DiscoveryError` saying what was wrong; nothing is silently dropped, because
    a half-understood answer must not replace a good node table.
    """
    if len(body) > _MAX_BODY_BYTES:
        raise DiscoveryError(f"/localnodes answer too large ({len(body)} bytes)")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise DiscoveryError(f"/localnodes answer is not JSON: {_snippet(body)}") from e
    if not isinstance(value, list):
        raise DiscoveryError(
            f"/localnodes answer is not a JSON list but {type(value).__name__}: {_snippet(body)}"
        )
    if len(value) > MAX_NODES:
        raise DiscoveryError(f"/localnodes answer has {len(value)} entries (max {MAX_NODES})")
    hosts: set[str] = set()
    for entry in value:
        if not isinstance(entry, str):
            raise DiscoveryError(f"/localnodes entry is not a string: {entry!r:.80}")
        host = _canonical_host(entry)
        if host is None:
            raise DiscoveryError(
                f"/localnodes entry is not an IP address or host name: {entry!r:.80}"
            )
        hosts.add(host)
    return sorted(hosts)


def _snippet(body: bytes) -> str:
    return repr(body[:80]) + ("..." if len(body) > 80 else "")


@dataclass(frozen=True)
class Scope:
    """One routing scope: a rack, a datacenter, or the whole cluster.

    ``datacenter=None`` with ``kind`` "rack" or "datacenter" means the contacted node's own
    datacenter (server semantics of a query without ``dc``). ``kind`` is derived from the
    fields when not given.
    """

    datacenter: str | None = None
    rack: str | None = None
    kind: str = field(default="", compare=True)

    def __post_init__(self) -> None:
        if not self.kind:
            kind = "rack" if self.rack else "datacenter" if self.datacenter else "cluster"
            object.__setattr__(self, "kind", kind)
        if self.kind not in ("rack", "datacenter", "cluster"):
            raise ConfigurationError(f"unknown scope kind {self.kind!r}")
        if self.kind == "rack" and not self.rack:
            raise ConfigurationError("a rack scope needs a rack name")

    def query(self) -> str:
        """The URL-encoded query string (``dc=..&rack=..``); "" for the cluster."""
        if self.kind == "cluster":
            return ""
        params: list[tuple[str, str]] = []
        if self.datacenter:
            params.append(("dc", self.datacenter))
        if self.kind == "rack" and self.rack:
            params.append(("rack", self.rack))
        return urlencode(params, quote_via=quote)

    def describe(self) -> str:
        dc = f"datacenter {self.datacenter!r}" if self.datacenter else "the seed's datacenter"
        if self.kind == "rack":
            return f"rack {self.rack!r} in {dc}"
        if self.kind == "datacenter":
            return dc
        return "the whole cluster"


def scope_chain(datacenter: str | None, rack: str | None, fallback: bool) -> list[Scope]:
    """The scopes to try in order: rack -> datacenter -> cluster (each level only if asked).

    A rack without a datacenter is that rack in the contacted node's datacenter (the server
    gets ``rack=`` only). Without ``fallback`` only the narrowest scope is returned.
    """
    datacenter = datacenter or None
    rack = rack or None
    chain: list[Scope] = []
    if rack is not None:
        chain.append(Scope(datacenter, rack, "rack"))
    if datacenter is not None or (rack is not None and fallback):
        chain.append(Scope(datacenter, None, "datacenter"))
    chain.append(Scope(None, None, "cluster"))
    return chain if fallback else chain[:1]


Resolver = Callable[[str, int], Sequence[str]]


def resolve_all(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP (IPv4 and IPv6), in resolver order.

    Link-local IPv6 answers that need a zone id are left out: they cannot be put in a URL.
    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    addresses: list[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _Failure(Exception):
    """One candidate could not give a usable answer (kept internal; message says why)."""


class _Exchange:
    """One GET with a total deadline, run in its own daemon thread.

    The caller (or the fetch coordinator) waits on :attr:`done` and calls :meth:`abort` at the
    deadline: that shuts the socket down, so a node that trickles its answer one byte at a time
    cannot hold anybody past the deadline. The thread itself also checks the deadline between
    body chunks and keeps the socket timeout below what remains. The body is streamed with a
    hard cap: past ``max_body`` bytes the connection is dropped, never read to the end.
    """

    def __init__(
        self,
        transport: Transport,
        url: str,
        deadline: float,
        max_body: int,
        wake: threading.Condition | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.headers = _HEADERS if headers is None else headers
        self.deadline = deadline
        #: A failure says something about the node (it was not cut short by a caller's budget
        #: before its own full request deadline). Set by the creator.
        self.full_budget = True
        self.timed_out = False  # cut by the deadline (not refused, reset, bad answer...)
        self.max_body = max_body
        self.done = threading.Event()
        self.status = 0
        self.body = b""
        self.error: str | None = None
        self._transport = transport
        self._wake = wake
        self._lock = threading.Lock()
        self._conn: HTTPConnection | None = None
        self._aborted = False

    def start(self) -> _Exchange:
        threading.Thread(target=self._run, name="alternator-shm-discovery", daemon=True).start()
        return self

    def _remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self._aborted:
            raise TimeoutError(f"no complete answer within the deadline ({self.url})")
        return remaining

    def _run(self) -> None:
        try:
            self.status, self.body = self._exchange()
        except BaseException as e:  # every failure is "this candidate failed"
            kind = "SSLError" if isinstance(e, ssl.SSLError) else type(e).__name__
            if self._aborted or time.monotonic() >= self.deadline - 0.01:
                # Cut by the total deadline, whichever way: our abort or the socket timeout.
                self.timed_out = True
                self.error = f"deadline exceeded ({kind})"
            else:
                self.error = f"{kind}: {e}"
        finally:
            with self._lock:
                conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            self.done.set()
            if self._wake is not None:
                with self._wake:
                    self._wake.notify_all()

    def _exchange(self) -> tuple[int, bytes]:
        remaining = self._remaining()
        conn = self._transport.connection(self.url, timeout=min(CONNECT_TIMEOUT, remaining))
        with self._lock:
            if self._aborted:
                raise TimeoutError("aborted")
            self._conn = conn
        conn.connect()
        # urllib3 re-applies conn.timeout before reading the status line: keep it the total.
        conn.timeout = self._remaining()
        self._settimeout(conn)
        parts = urlsplit(self.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers=self.headers, preload_content=False,
                     decode_content=False)
        response = conn.getresponse()
        if response.status != 200:
            return response.status, b""
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _Failure(f"answer too large ({length} bytes announced)")
        chunks: list[bytes] = []
        size = 0
        while True:
            self._settimeout(conn)
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_body:
                raise _Failure(f"answer too large (more than {self.max_body} bytes)")
            chunks.append(chunk)
        return response.status, b"".join(chunks)

    def _settimeout(self, conn: HTTPConnection) -> None:
        remaining = self._remaining()
        if conn.sock is not None:
            conn.sock.settimeout(remaining)

    def abort(self) -> None:
        """Cut the exchange off now (from any thread): the socket is shut down, not closed,
        so the thread reading it wakes up with an error and closes it itself."""
        with self._lock:
            self._aborted = True
            conn = self._conn
            sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # the raw socket, also under TLS
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def wait(self) -> None:
        """Wait until done or the deadline (then abort); returns within the deadline."""
        if not self.done.wait(max(0.0, self.deadline - time.monotonic())):
            self.abort()
            self.error = self.error or "deadline exceeded"

    @property
    def conclusive(self) -> bool:
        """Whether a failure of this exchange is the node's own doing: an error, or no answer
        within a full request deadline (not one shortened by the fetch budget)."""
        return self.full_budget or not (self._aborted or self.timed_out)


class DiscoveryResult(list[str]):
    """The node URLs (sorted) of one fetch, plus what the published table must say about them.

    ``scope`` is the scope the nodes belong to (the configured one unless ``fallback`` widened
    it). ``empty`` is True when the configured scope answered with no node and ``fallback`` is
    off: then the list is empty and that is the answer, not a failure. ``note`` is the one-line
    text the refresher stores with the table (it is how the next fetch knows which scope the
    published table was for, and how every process learns that the scope is empty).
    """

    def __init__(self, nodes: Iterable[str], *, scope: Scope, empty: bool = False) -> None:
        super().__init__(nodes)
        self.scope = scope
        self.empty = empty
        self.note = empty_note(scope) if empty else scope_note(scope)


def scope_note(scope: Scope) -> str:
    """The table note of a table of the nodes of ``scope``."""
    return f"scope {scope.describe()}"


def empty_note(scope: Scope) -> str:
    """The table note of an empty table: ``scope`` lists no live node (and no fallback)."""
    return f"no live node in {scope.describe()} (fallback=False)"


@dataclass
class _Round:
    """The state of one fetch, shared by its scopes (a failed node is not asked twice)."""

    deadline: float
    failed: dict[str, str] = field(default_factory=dict)
    conclusive: set[str] = field(default_factory=set)  # failed on their own, not cut short
    asks: int = 0
    seeds: list[str] | None = None  # resolved seed URLs, once per fetch


class Discovery:
    """Asks the cluster which nodes to route to. Stateless between calls (apart from what was
    last logged); thread-safe."""

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        scheme: str,
        port: int,
        datacenter: str | None = None,
        rack: str | None = None,
        fallback: bool = True,
        transport: Transport,
        resolver: Resolver | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        if isinstance(seeds, str):
            raise ConfigurationError("seeds must be a list of host names or IPs, not a string")
        if not seeds:
            raise ConfigurationError("at least one seed node is required")
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"scheme must be 'http' or 'https', not {scheme!r}")
        if not 0 < port < 65536:
            raise ConfigurationError(f"port out of range: {port}")
        if not 0 < request_timeout <= fetch_timeout:
            raise ConfigurationError("need 0 < request_timeout <= fetch_timeout")
        seed_hosts: list[str] = []
        for seed in seeds:
            host = _canonical_host(seed) if isinstance(seed, str) else None
            if host is None:
                raise ConfigurationError(
                    f"seed {seed!r} is not a host name or IP address (no scheme, no port)"
                )
            if host not in seed_hosts:
                seed_hosts.append(host)
        self.scheme = scheme
        self.port = port
        self.datacenter = datacenter or None
        self.rack = rack or None
        self.fallback = fallback
        self.seed_hosts: tuple[str, ...] = tuple(seed_hosts)
        #: The seeds as configured (host names not resolved).
        self.seeds: tuple[str, ...] = tuple(node_url(scheme, h, port) for h in seed_hosts)
        self.scopes: tuple[Scope, ...] = tuple(scope_chain(self.datacenter, self.rack, fallback))
        self.request_timeout = request_timeout
        self.fetch_timeout = fetch_timeout
        self._transport = transport
        self._resolver: Resolver = resolver or resolve_all
        self._logged: str | None = None  # the last scope verdict logged at WARNING

    # -- seeds ---------------------------------------------------------------------------------

    def resolve_seeds(self, deadline: float | None = None) -> tuple[list[str], dict[str, str]]:
        """(seed URLs, failures): every address of every seed, host names resolved now.

        Names are resolved concurrently in daemon threads, so a hung resolver costs at most
        the deadline (default: :attr:`request_timeout` from now).
        """
        if deadline is None:
            deadline = time.monotonic() + self.request_timeout
        results: dict[str, list[str] | str] = {}
        threads: list[threading.Thread] = []
        for host in self.seed_hosts:
            if _is_ip(host):
                results[host] = [host]
                continue

            def resolve(name: str = host) -> None:
                try:
                    answer = self._resolver(name, self.port)
                    found = [a for a in map(_canonical_host, answer) if a is not None]
                    results[name] = found or "resolves to no usable address"
                except Exception as e:
                    results[name] = f"cannot resolve: {type(e).__name__}: {e}"

            thread = threading.Thread(target=resolve, name="alternator-shm-resolve", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        urls: list[str] = []
        failed: dict[str, str] = {}
        for host in self.seed_hosts:
            found = results.get(host, "name resolution did not finish in time")
            if isinstance(found, str):
                failed[node_url(self.scheme, host, self.port)] = found
                continue
            for address in found:
                url = node_url(self.scheme, address, self.port)
                if url not in urls:
                    urls.append(url)
        return urls, failed

    def _seeds(self, state: _Round) -> list[str]:
        if state.seeds is None:
            urls, failed = self.resolve_seeds(min(state.deadline,
                                                  time.monotonic() + self.request_timeout))
            state.failed.update(failed)
            state.seeds = urls
        return state.seeds

    # -- one request ---------------------------------------------------------------------------

    def _exchange(self, url: str, deadline: float, wake: threading.Condition | None = None,
                  max_body: int = _MAX_BODY_BYTES,
                  headers: dict[str, str] | None = None,
                  request_timeout: float | None = None) -> _Exchange:
        own = time.monotonic() + (self.request_timeout if request_timeout is None
                                  else request_timeout)
        exchange = _Exchange(self._transport, url, min(deadline, own), max_body, wake, headers)
        exchange.full_budget = own <= deadline
        return exchange.start()

    def _nodes_of(self, exchange: _Exchange) -> list[str]:
        """The node URLs of a finished /localnodes exchange, or :class:`_Failure`."""
        if exchange.error is not None:
            raise _Failure(exchange.error)
        if exchange.status != 200:
            raise _Failure(f"HTTP {exchange.status}")
        try:
            hosts = parse_localnodes(exchange.body)
        except DiscoveryError as e:
            raise _Failure(str(e)) from e
        return [node_url(self.scheme, host, self.port) for host in hosts]

    def _get(self, node: str, query: str) -> list[str]:
        """``/localnodes`` of one node as node URLs, or :class:`_Failure` (total deadline)."""
        url = f"{node}/localnodes" + (f"?{query}" if query else "")
        exchange = self._exchange(url, time.monotonic() + self.request_timeout)
        exchange.wait()
        return self._nodes_of(exchange)

    # -- one scope -----------------------------------------------------------------------------

    def _ask_scope(
        self, scope: Scope, known: Sequence[str], previous: Sequence[str], state: _Round
    ) -> tuple[list[str], bool]:
        """(nodes of ``scope``, whether any node answered), within ``state.deadline``.

        Candidates are ``known`` in random order, then the seeds. While nobody has answered,
        one more candidate is asked every :data:`HEDGE_DELAY` (at once after a failure), at
        most :data:`MAX_IN_FLIGHT` at a time. Once answers are in, every node of ``previous``
        that no answer lists is asked itself (for the cluster scope: every candidate not yet
        covered, since each datacenter answers only for itself), and while the answers would
        make the table on too narrow a word (one node's with no table of this scope yet, or
        only views that list nothing but their own node) one more is asked (a witness: a node
        they list, else the remaining candidates, then the seeds; hedged like the first). A node of
        ``previous`` is dropped only if it was asked and failed on its own or answered without
        itself.
        """
        query = scope.query()
        queue = list(dict.fromkeys(known))
        random.shuffle(queue)
        seeds_queued = False
        answers: dict[str, list[str]] = {}
        pending: dict[str, _Exchange] = {}
        asked: set[str] = set()
        union: set[str] = set()
        wake = threading.Condition()
        last_launch = -1.0
        witnesses_left = True  # candidates remain that could confirm a lone answer
        witnesses: set[str] = set()  # asked only to confirm: not waited for once two answered

        def launch(node: str) -> None:
            nonlocal last_launch
            asked.add(node)
            state.asks += 1
            url = f"{node}/localnodes" + (f"?{query}" if query else "")
            pending[node] = self._exchange(url, state.deadline, wake)
            last_launch = time.monotonic()

        def fresh(node: str) -> bool:
            return node not in asked and node not in state.failed and node not in union

        def lone_word() -> bool:
            """The answers so far would make the table on too narrow a word: one node's, with
            no table of this scope yet (a first table, or the scope changed); or only
            self-only views (each lists no node but itself: a partial view's signature), however
            many -- two partly cut-off nodes confirming each other would keep a table narrowed
            by them for good, while a seed that lists everyone is never asked."""
            if not answers:
                return False
            if len(answers) == 1 and not previous:
                return True
            return all(set(nodes) <= {node} for node, nodes in answers.items())

        def second_witness() -> str | None:
            listed = [n for n in union if n not in asked and n not in state.failed]
            if listed:
                return random.choice(listed)
            return next_candidate()

        def next_candidate() -> str | None:
            nonlocal queue, seeds_queued
            while True:
                while queue:
                    node = queue.pop(0)
                    if fresh(node):
                        return node
                if seeds_queued:
                    return None
                seeds_queued = True
                queue = list(self._seeds(state))
                random.shuffle(queue)

        while True:
            now = time.monotonic()
            for node, exchange in list(pending.items()):
                if not exchange.done.is_set() and now < exchange.deadline:
                    continue
                exchange.wait()  # done, or aborts it at its deadline
                del pending[node]
                try:
                    nodes = self._nodes_of(exchange)
                except _Failure as e:
                    state.failed[node] = str(e)
                    if exchange.conclusive:
                        state.conclusive.add(node)
                    continue
                answers[node] = nodes
                union.update(nodes)
            if now >= state.deadline:
                for node, exchange in pending.items():
                    exchange.abort()
                    state.failed[node] = "fetch budget exhausted before it answered"
                break
            room = min(MAX_IN_FLIGHT - len(pending), MAX_ASKS - state.asks)
            if answers:
                if scope.kind == "cluster":
                    # Every datacenter answers only for itself: ask each candidate not covered.
                    todo = [n for n in (*queue, *(() if seeds_queued else self._seeds(state)))
                            if fresh(n)]
                else:
                    todo = [n for n in previous if fresh(n)]
                for node in dict.fromkeys(todo[: max(0, room)]):
                    launch(node)
                room = min(MAX_IN_FLIGHT - len(pending), MAX_ASKS - state.asks)
                if (lone_word() and witnesses_left and room > 0
                        and (not pending or now - last_launch >= HEDGE_DELAY)):
                    # One node's word never makes the table: a second witness is asked (a node
                    # it listed, else the remaining candidates and seeds). With union semantics
                    # a partial view is thereby outvoted by any node that lists more.
                    witness = second_witness()
                    if witness is None:
                        witnesses_left = False
                    else:
                        witnesses.add(witness)
                        launch(witness)
                if not lone_word():
                    for node in witnesses & pending.keys():
                        pending.pop(node).abort()  # not needed (a paused one would cost 2 s)
                if not pending:
                    break
            else:
                candidate: str | None = None
                if room > 0 and (not pending or now - last_launch >= HEDGE_DELAY):
                    candidate = next_candidate()
                    if candidate is not None:
                        launch(candidate)
                if candidate is None and not pending and (room <= 0 or not queue):
                    break  # nobody left to ask (or the fetch's request budget is spent)
            wait_until = min([state.deadline, *(e.deadline for e in pending.values())])
            if (not answers or (lone_word() and witnesses_left)) and room > 0:
                wait_until = min(wait_until, last_launch + HEDGE_DELAY)
            with wake:
                if not any(e.done.is_set() for e in pending.values()):
                    wake.wait(max(0.0, wait_until - time.monotonic()))
        if not answers:
            return [], False
        kept = {
            n for n in previous
            if n not in union and n not in answers and n not in state.conclusive
        }
        return sorted(union | kept), True

    # -- public API ----------------------------------------------------------------------------

    def fetch(self, known: Sequence[str] = (), *, previous_note: str | None = None
              ) -> DiscoveryResult:
        """The node URLs (sorted) for the first non-empty scope of the chain.

        ``known`` is the published table and ``previous_note`` its note (None: unknown): the
        table is only narrowed against it as described in the module docstring, and only when
        it was for the same scope. Raises :class:`DiscoveryError` saying which candidates failed
        and why when no node answered (or, with ``fallback``, when every scope was empty).
        Without ``fallback`` an empty configured scope is returned as an empty
        :class:`DiscoveryResult` with ``empty=True``. Returns within about
        :attr:`fetch_timeout` seconds, whatever the nodes do.
        """
        state = _Round(deadline=time.monotonic() + self.fetch_timeout)
        known = list(dict.fromkeys(known))
        empty: list[Scope] = []
        answered = False
        for scope in self.scopes:
            same = previous_note is None or previous_note == scope_note(scope)
            nodes, any_answer = self._ask_scope(scope, known, known if same else (), state)
            answered = answered or any_answer
            if not any_answer:
                break  # nobody is reachable: wider scopes would fail the same way
            if nodes:
                self._log_verdict(scope, empty, state.failed)
                return DiscoveryResult(nodes, scope=scope)
            empty.append(scope)
        if not answered:
            message = f"no node answered /localnodes: {_describe_failures(state.failed)}"
        elif not self.fallback:
            self._log_verdict(self.scopes[0], empty, state.failed)
            return DiscoveryResult([], scope=self.scopes[0], empty=True)
        else:
            message = f"no nodes found in {', '.join(s.describe() for s in empty)}"
            if state.failed:
                message += f"; unreachable: {_describe_failures(state.failed)}"
        log.warning("discovery failed: %s", message,
                    extra=_events.fields("discovery_failed", error=message))
        raise DiscoveryError(message)

    def _log_verdict(self, scope: Scope, empty: list[Scope], failed: dict[str, str]) -> None:
        """One WARNING when the scope in use changes to a fallback or an empty verdict."""
        if empty and not self.fallback:
            verdict = f"no live node in {scope.describe()}; fallback=False, so calls raise " \
                      "NoLiveNodesError"
        elif empty:
            verdict = (f"no nodes in {'; '.join(s.describe() for s in empty)}: "
                       f"routing to {scope.describe()} (fallback)")
        else:
            verdict = ""
        if failed:
            log.debug("discovery: unreachable: %s", _describe_failures(failed))
        if verdict == (self._logged or ""):
            return
        self._logged = verdict
        if verdict:
            log.warning("discovery: %s", verdict,
                        extra=_events.fields("discovery_fallback", scope=scope.describe()))
        else:
            log.info("discovery: routing to the configured scope, %s", scope.describe())

    def check_if_rack_and_datacenter_set_correctly(self, known: Sequence[str] = ()) -> None:
        """Check that the configured scope itself (no fallback) has nodes.

        Raises :class:`ConfigurationError` naming the scope when the nodes that answered
        returned no node for it, :class:`DiscoveryError` when no node answered at all.
        Nothing to check (returns) without a datacenter or rack.
        """
        if self.datacenter is None and self.rack is None:
            return
        scope = self.scopes[0]
        state = _Round(deadline=time.monotonic() + self.fetch_timeout)
        nodes, answered = self._ask_scope(scope, known, (), state)
        if nodes:
            return
        if not answered:
            raise DiscoveryError(
                f"no node answered /localnodes: {_describe_failures(state.failed)}"
            )
        raise ConfigurationError(
            f"no nodes found in {scope.describe()}; check the datacenter and rack names"
        )

    def check_if_rack_datacenter_feature_is_supported(self, known: Sequence[str] = ()) -> bool:
        """Whether the server honours ``?rack=`` / ``?dc=`` (ScyllaDB 2025.1+).

        Asks one node for ``?rack=fakeRack``: a new server answers ``[]`` (no such rack), an
        old one ignores the parameter and lists its datacenter. Both questions go to the same
        node, so a topology difference between nodes cannot fake an answer.
        """
        seeds, failed = self.resolve_seeds()
        for candidate in dict.fromkeys([*known, *seeds]):
            try:
                fake = self._get(candidate, urlencode({"rack": _FEATURE_PROBE_RACK}))
                if fake:
                    return False
                plain = self._get(candidate, "")
            except _Failure as e:
                failed[candidate] = str(e)
                continue
            if plain:
                return True
            failed[candidate] = "empty /localnodes answer, cannot tell"
        raise DiscoveryError(
            f"cannot tell whether rack/dc are supported: {_describe_failures(failed)}"
        )

    def probe(self, node: str, timeout: float | None = None) -> bool:
        """Node-health probe: a direct ``GET node/localnodes`` answers HTTP 200 within
        ``timeout`` seconds in total (connect to last byte; default :attr:`request_timeout`;
        the Helper passes ``HealthSettings.probe_timeout``). The body is not judged
        (node-health spec: probes classify by final status); a JOINING node, listed before it
        serves, fails it until its port opens."""
        budget = self.request_timeout if timeout is None else timeout
        exchange = self._exchange(
            node.rstrip("/") + "/localnodes", time.monotonic() + budget,
            max_body=_MAX_PROBE_BODY_BYTES, headers=_PROBE_HEADERS, request_timeout=budget,
        )
        exchange.wait()
        if exchange.error is not None:
            log.debug("probe of %s failed: %s", node, exchange.error)
            return False
        return exchange.status == 200


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe_failures(failed: dict[str, str]) -> str:
    shown = [f"{node} ({why})" for node, why in list(failed.items())[:8]]
    if len(failed) > len(shown):
        shown.append(f"and {len(failed) - len(shown)} more")
    return "; ".join(shown) if shown else "no candidates"
