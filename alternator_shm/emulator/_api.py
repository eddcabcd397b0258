"""One node's request handling, in the order of Alternator's server.cc.

The handler is written against :class:`NodeContext`, so the very same code runs inside the
test process (threads) and inside a node subprocess (``process_per_node``), where the context
talks to the cluster's control server instead of shared objects.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import random
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from alternator_shm.emulator import _keys, _sigv4
from alternator_shm.emulator._backends import Backend, to_alternator
from alternator_shm.emulator._log import RequestLogEntry
from alternator_shm.emulator._profiles import Profile
from alternator_shm.emulator._server import Request
from alternator_shm.emulator._wire import (
    ALLOWED_OPERATIONS,
    JSON_CT,
    TRANSACTION_OPERATIONS,
    ApiError,
    Response,
    choose_encoding,
    compress_body,
    decompress_request,
    error_response,
    json_response,
    parse_request,
    payload_too_large,
    plain_numbers,
    value_error,
)

API_FAULTS = ("latency", "internal_error", "request_limit", "payload_too_large", "reset")
LOCALNODES_FAULTS = ("localnodes_garbage", "localnodes_500", "localnodes_hang")
HEALTH_FAULTS = ("health_500", "health_hang")
# Answers no Alternator sends, for clients' decoders (a successful API answer only): gzip in
# several members, a coding nobody asked for (bzip2), and DynamoDB's x-amz-crc32 over the bytes
# sent, right or wrong. Encodings apply whatever Accept-Encoding said; checksums come last.
ANSWER_FAULTS = (
    "answer_gzip_members", "answer_unknown_encoding", "answer_crc32", "answer_bad_crc32",
)
FAULT_KINDS = frozenset(API_FAULTS + LOCALNODES_FAULTS + HEALTH_FAULTS + ANSWER_FAULTS)
_HANG_KINDS = frozenset({"localnodes_hang", "health_hang"})


@dataclass
class Fault:
    """An injected fault: fires on every request unless a count or probability is given."""

    kind: str
    count: int | None = None
    probability: float | None = None
    delay: float | None = None

    def try_fire(self) -> bool:
        """Decide (under the caller's lock) whether this fault fires for one request."""
        if self.count is not None:
            if self.count <= 0:
                return False
            if self.probability is not None and random.random() >= self.probability:
                return False
            self.count -= 1
            return True
        if self.probability is not None:
            return random.random() < self.probability
        return True


class NodeContext(Protocol):
    """What the handler needs from the node it runs for (in-process or remote)."""

    @property
    def profile(self) -> Profile: ...

    @property
    def users(self) -> Mapping[str, str] | None: ...

    @property
    def forward_transactions(self) -> bool: ...

    @property
    def backend(self) -> Backend: ...

    @property
    def hang_poll(self) -> float:  # how often a hanging request re-checks its fault
        ...

    def fire_faults(self, kinds: tuple[str, ...]) -> list[Fault]: ...

    def fault_active(self, kind: str) -> bool: ...

    def localnodes(self, dc: str | None, rack: str | None) -> list[str]: ...

    def record(self, entry: RequestLogEntry) -> None: ...


# server.cc handle_CORS: "the list that DynamoDB returns for expose headers".
CORS_EXPOSE_HEADERS = "x-amzn-RequestId,x-amzn-ErrorType,x-amzn-ErrorMessage,Date"
# Answers Alternator streams (body_writer, Transfer-Encoding: chunked) once is_big() says the
# JSON is over 100,000 bytes: the item lists of Query, Scan and BatchGetItem.
STREAMED_OPERATIONS = frozenset({"Query", "Scan", "BatchGetItem"})
STREAM_THRESHOLD = 100_000
# TagResource / UntagResource return an empty body, not "{}".
EMPTY_BODY_OPERATIONS = frozenset({"TagResource", "UntagResource"})


def _cors(request: Request, response: Response, preflight: bool = False) -> None:
    """Alternator's handle_CORS, for GET /, POST / and OPTIONS / (not /localnodes)."""
    if not request.header("Origin"):
        return
    response.headers.append(("Access-Control-Allow-Origin", "*"))
    response.headers.append(("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS))
    if preflight:
        for src, dst in (
            ("Access-Control-Request-Headers", "Access-Control-Allow-Headers"),
            ("Access-Control-Request-Method", "Access-Control-Allow-Methods"),
        ):
            value = request.header(src)
            if value:
                response.headers.append((dst, value))
        response.headers.append(("Access-Control-Max-Age", "7200"))


class _Outcome:
    """What the log needs to know besides the response."""

    def __init__(self) -> None:
        self.operation: str | None = None
        self.signed_host: str | None = None
        self.auth_ok: bool | None = None
        self.mtls_user: str | None = None


def handle(ctx: NodeContext, request: Request, abort: threading.Event) -> Response | None:
    """Route one request like Alternator's ``set_routes``; None means reset the connection."""
    started = time.time()
    outcome = _Outcome()
    response = _route(ctx, request, abort, outcome)
    profile = ctx.profile
    if response is not None:
        if profile.server_header:
            response.headers.append(("Server", profile.server_header))
        if not profile.content_type_header:
            response.headers = [h for h in response.headers if h[0].lower() != "content-type"]
        response.date_header = profile.date_header
    ctx.record(
        RequestLogEntry(
            time=started,
            method=request.method,
            path=request.target,
            operation=outcome.operation,
            headers=dict(request.headers),
            header_bytes=request.header_bytes,
            body_bytes=request.body_bytes,
            signed_host=outcome.signed_host,
            status=response.status if response is not None else 0,
            auth_ok=outcome.auth_ok,
            mtls_user=outcome.mtls_user,
            response_chunked=response is not None
            and response.streamed
            and request.version != "HTTP/1.0",
            response_encoding=next(
                (v for n, v in (response.headers if response else []) if n == "Content-Encoding"),
                None,
            ),
        )
    )
    return response


def _not_found() -> Response:
    body = json.dumps({"message": "Not found", "code": 404}).encode()
    return Response(404, body, [("Content-Type", "application/json")])


def _hang(ctx: NodeContext, kind: str, abort: threading.Event) -> bool:
    """Block while ``kind`` stays injected; False when the node went away meanwhile."""
    while ctx.fault_active(kind):
        if abort.wait(ctx.hang_poll):
            return False
    return True


def _route(
    ctx: NodeContext, request: Request, abort: threading.Event, outcome: _Outcome
) -> Response | None:
    path, _, query = request.target.partition("?")
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]  # seastar strips one trailing slash
    if path == "/" and request.method == "POST":
        return _api(ctx, request, abort, outcome)
    if path == "/" and request.method == "GET":
        for fault in ctx.fire_faults(HEALTH_FAULTS):
            if fault.kind == "health_500":
                return error_response(500, "InternalServerError", "Internal server error: injected")
            if fault.kind == "health_hang" and not _hang(ctx, fault.kind, abort):
                return None
        body = ("healthy: " + (request.header("Host") or "")).encode()
        response = Response(200, body, [("Content-Type", "text/plain")])
        _cors(request, response)
        return response
    if path == "/localnodes" and request.method == "GET":
        return _localnodes(ctx, query, abort)
    if path == "/" and request.method == "OPTIONS":
        response = Response(200, b"", [("Content-Type", "text/plain")])
        _cors(request, response, preflight=True)
        return response
    return _not_found()


def _localnodes(ctx: NodeContext, query: str, abort: threading.Event) -> Response | None:
    for fault in ctx.fire_faults(LOCALNODES_FAULTS):
        if fault.kind == "localnodes_500":
            return error_response(500, "InternalServerError", "Internal server error: injected")
        if fault.kind == "localnodes_garbage":
            return Response(200, b"<html>not json[", [("Content-Type", "application/json")])
        if fault.kind == "localnodes_hang" and not _hang(ctx, fault.kind, abort):
            return None
    params = parse_qs(query, keep_blank_values=True)
    dc = (params.get("dc") or [""])[0] or None  # an empty value counts as "not given"
    rack = (params.get("rack") or [""])[0] or None
    if not ctx.profile.dc_rack_params:
        dc = rack = None  # before 2025.1 the query string is never read
    nodes = ctx.localnodes(dc, rack)
    body = json.dumps(nodes, separators=(",", ":")).encode()
    return Response(200, body, [("Content-Type", "application/json")])


def _api(
    ctx: NodeContext, request: Request, abort: threading.Event, outcome: _Outcome
) -> Response | None:
    target = request.header("X-Amz-Target") or ""
    operation = target.partition(".")[2] if "." in target else ""
    outcome.operation = operation or None
    try:
        response = _api_pipeline(ctx, request, abort, outcome, target, operation)
    except ApiError as err:
        response = err.response()
    except _Answer as answer:
        response = answer.response
    if response is not None:
        _cors(request, response)
    return response


def _api_pipeline(
    ctx: NodeContext,
    request: Request,
    abort: threading.Event,
    outcome: _Outcome,
    target: str,
    operation: str,
) -> Response | None:
    # 1. 16 MB limit (the body was read in full regardless).
    if request.too_large:
        raise payload_too_large()
    # 2. Injected faults (where shedding / memory limits would act).
    for fault in ctx.fire_faults(API_FAULTS):
        if fault.kind == "latency":
            if abort.wait(fault.delay or 0.0):
                return None
        elif fault.kind == "internal_error":
            raise ApiError(500, "InternalServerError", "Internal server error: injected fault")
        elif fault.kind == "request_limit":
            raise ApiError(
                400,
                "RequestLimitExceeded",
                "too many in-flight requests (configured via max_concurrent_requests_per_shard): 1",
            )
        elif fault.kind == "payload_too_large":
            raise payload_too_large()
        elif fault.kind == "reset":
            return None
    # 3. SigV4 over the body as received (still compressed). On an mTLS connection the
    #    certificate's CN is the role and any signature is ignored (dev profile).
    cn = _certificate_cn(request) if ctx.profile.mtls else None
    if cn is not None:
        outcome.mtls_user = cn
        outcome.signed_host = _sigv4.signed_host_of(request.headers)
        if ctx.users is not None and cn not in ctx.users:
            outcome.auth_ok = False
            raise ApiError(400, "UnrecognizedClientException", f"User not found: {cn}")
        outcome.auth_ok = True
    elif ctx.users is not None:
        try:
            result = _sigv4.verify(
                request.headers,
                request.body,
                ctx.users,
                new_message=ctx.profile.new_signature_message,
            )
        except ApiError:
            outcome.auth_ok = False
            outcome.signed_host = _sigv4.signed_host_of(request.headers)
            raise
        outcome.auth_ok = True
        outcome.signed_host = result.signed_host
    else:
        outcome.signed_host = _sigv4.signed_host_of(request.headers)
    # 4. Request decompression (2026.1+); older versions ignore Content-Encoding.
    body = request.body
    encoding = request.header("Content-Encoding")
    if ctx.profile.compression and encoding is not None:
        body = decompress_request(encoding, body)
    # 5. The allow-list.
    allowed = operation in ALLOWED_OPERATIONS or (
        ctx.forward_transactions and operation in TRANSACTION_OPERATIONS
    )
    if not allowed:
        raise ApiError(400, "UnknownOperationException", f"Unsupported operation {operation}")
    # 6. JSON checks (depth, UTF-8, syntax: rjson's order and messages).
    parsed, body = parse_request(body)  # a repeated member name keeps its first value
    if not isinstance(parsed, dict):
        raise ApiError(400, "ValidationException", "Request content must be an object")
    if operation in _keys.KEY_OPERATIONS:
        # 6a. Alternator looks the table up, checks the key columns against its schema, then
        #     the values; request by request in a batch.
        _check_keys(ctx, operation, parsed, body, fresh=False)
        bad_value = None
    else:
        bad_value = value_error(operation, parsed, body)
    if bad_value is not None:
        # 6b. Alternator resolves the table before it reads values: a missing one wins.
        tables, error = bad_value
        for table in tables:
            missing = _missing_table(ctx, table)
            if missing is not None:
                return missing
        raise error
    # 7. DescribeEndpoints is answered from the Host header.
    if operation == "DescribeEndpoints":
        host = request.header("Host") or ""
        response = json_response(
            200, {"Endpoints": [{"Address": host, "CachePeriodInMinutes": 1440}]}
        )
    else:
        try:
            if operation == "BatchWriteItem":
                status, data = _batch_write(ctx, target, parsed, body)
            else:
                status, data = ctx.backend.call(operation, target, body)
        except ApiError:
            raise
        except Exception as err:  # the backend is unreachable or broke
            raise ApiError(500, "InternalServerError", f"Internal server error: {err}") from None
        if status != 200 and operation in _keys.KEY_OPERATIONS:
            # The backend refused: if Alternator would have refused the keys first (with a
            # schema read now, not a cached one), that is the answer.
            _check_keys(ctx, operation, parsed, body, fresh=True)
        elif operation in _keys.SCHEMA_CHANGES:
            _keys.schemas_for(ctx.backend).forget(parsed.get("TableName"))
        response = to_alternator(status, data, parsed)
    if response.status == 200 and operation in EMPTY_BODY_OPERATIONS:
        response.body = b""
        response.compressible = False
    if (
        response.status == 200
        and operation in STREAMED_OPERATIONS
        and len(response.body) > STREAM_THRESHOLD
    ):
        response.streamed = True
    plain = response.body
    # 8. Response compression (2026.1+), never for errors or small bodies; several
    #    Accept-Encoding lines count as one list.
    if ctx.profile.compression and response.compressible:
        accept = ",".join(v for n, v in request.headers if n.lower() == "accept-encoding")
        chosen = choose_encoding(accept, len(response.body))
        if chosen is not None:
            response.body = compress_body(chosen, response.body)
            response.headers.append(("Content-Encoding", chosen))
    if response.compressible:
        _answer_faults(ctx, response, plain)
    return response


def _check_keys(
    ctx: NodeContext, operation: str, request: dict[str, Any], raw: bytes, *, fresh: bool
) -> None:
    """Raise the first key or value error Alternator answers for a key operation (or send the
    missing table's answer); with ``fresh``, read every key schema anew (DescribeTable)."""
    schemas = _keys.schemas_for(ctx.backend)
    walk = not plain_numbers(raw)

    def describe(table: str) -> dict[str, Any]:
        request = {"TableName": table}
        body = json.dumps(request).encode()
        try:
            status, data = ctx.backend.call(
                "DescribeTable", "DynamoDB_20120810.DescribeTable", body
            )
        except Exception as err:  # the backend is unreachable or broke
            raise ApiError(500, "InternalServerError", f"Internal server error: {err}") from None
        if status != 200:
            raise _keys.MissingTable(to_alternator(status, data, request))
        table_description = json.loads(data).get("Table")
        return table_description if isinstance(table_description, dict) else {}

    def lookup(table: str) -> _keys.KeySchema:
        return (schemas.fresh if fresh else schemas.cached)(table, describe)

    try:
        error = _keys.first_error(operation, request, lookup, walk)
        if error is not None and not fresh:
            # Found with cached schemas: judge again with schemas read now.
            error = _keys.first_error(
                operation, request, lambda t: schemas.fresh(t, describe), walk
            )
    except _keys.MissingTable as missing:
        raise _Answer(missing.answer) from None
    if error is not None:
        raise error


class _Answer(Exception):  # carries a finished answer out
    def __init__(self, response: Response) -> None:
        super().__init__("answer")
        self.response = response


def _missing_table(ctx: NodeContext, table: str) -> Response | None:
    """The error DescribeTable gives for ``table`` (ResourceNotFoundException, or a name
    Alternator refuses), or None when the table exists. Only asked on an error path."""
    request = {"TableName": table}
    body = json.dumps(request).encode()
    try:
        status, data = ctx.backend.call("DescribeTable", "DynamoDB_20120810.DescribeTable", body)
    except Exception as err:  # the backend is unreachable or broke
        raise ApiError(500, "InternalServerError", f"Internal server error: {err}") from None
    return None if status == 200 else to_alternator(status, data, request)


def _answer_faults(ctx: NodeContext, response: Response, plain: bytes) -> None:
    """Apply the injected ANSWER_FAULTS to a successful answer whose JSON is ``plain``."""
    fired = {fault.kind for fault in ctx.fire_faults(ANSWER_FAULTS)}
    encoding = None
    if "answer_gzip_members" in fired:
        # Three members: whoever decodes only the first one gets a third of the JSON.
        cut = [0, len(plain) // 3, 2 * len(plain) // 3, len(plain)]
        response.body = b"".join(
            gzip.compress(plain[a:b], mtime=0) for a, b in itertools.pairwise(cut)
        )
        encoding = "gzip"
    if "answer_unknown_encoding" in fired:
        response.body = bz2.compress(plain)
        encoding = "bzip2"
    if encoding is not None:
        response.headers = [h for h in response.headers if h[0] != "Content-Encoding"]
        response.headers.append(("Content-Encoding", encoding))
    if fired & {"answer_crc32", "answer_bad_crc32"}:
        crc = zlib.crc32(response.body) & 0xFFFFFFFF
        if "answer_bad_crc32" in fired:
            crc ^= 1
        response.headers.append(("x-amz-crc32", str(crc)))


BATCH_WRITE_MAX = 100  # Alternator's BatchWriteItem limit (compatibility.md); DynamoDB's is 25
_BACKEND_BATCH = 25  # what the storage backends (DynamoDB's rules) accept per call


def _batch_write(
    ctx: NodeContext, target: str, request: dict[str, Any], body: bytes
) -> tuple[int, bytes]:
    """BatchWriteItem with up to 100 writes, sent to the backend 25 at a time.

    The first failing chunk's answer is the answer (chunks before it stay written, as when
    Alternator fails part-way); unprocessed items of every chunk are merged.
    """
    items = request.get("RequestItems")
    if not isinstance(items, dict):
        return ctx.backend.call("BatchWriteItem", target, body)
    writes = [
        (table, write)
        for table, table_writes in items.items()
        if isinstance(table_writes, list)
        for write in table_writes
    ]
    if len(writes) > BATCH_WRITE_MAX:
        raise ApiError(
            400, "ValidationException", "Too many items requested for the BatchWriteItem call"
        )
    if len(writes) <= _BACKEND_BATCH:
        return ctx.backend.call("BatchWriteItem", target, body)
    unprocessed: dict[str, list[Any]] = {}
    for start in range(0, len(writes), _BACKEND_BATCH):
        chunk: dict[str, list[Any]] = {}
        for table, write in writes[start : start + _BACKEND_BATCH]:
            chunk.setdefault(table, []).append(write)
        part = json.dumps({**request, "RequestItems": chunk}).encode()
        status, data = ctx.backend.call("BatchWriteItem", target, part)
        if status != 200:
            return status, data
        answer = json.loads(data) if data else {}
        for table, rest in (answer.get("UnprocessedItems") or {}).items():
            unprocessed.setdefault(table, []).extend(rest)
    return 200, json.dumps({"UnprocessedItems": unprocessed}, separators=(",", ":")).encode()


def _certificate_cn(request: Request) -> str | None:
    """The subject commonName of a verified client certificate, if the client sent one."""
    cert = request.peer_cert
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


__all__ = ["FAULT_KINDS", "JSON_CT", "Fault", "NodeContext", "handle"]
