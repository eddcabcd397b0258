"""Alternator's wire conventions: error bodies, the operation allow-list, compression.

Kept separate from the HTTP front so the pipeline reads like server.cc's ``handle_api_request``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

JSON_CT = "application/x-amz-json-1.0"
MAX_BODY = 16 * 1024 * 1024  # Alternator's request content length limit
COMPRESSION_THRESHOLD = 4096  # alternator_response_compression_threshold_in_bytes default

# server.cc:958-1031 -- everything else (transactions included) is UnknownOperationException.
ALLOWED_OPERATIONS = frozenset(
    {
        "CreateTable", "DescribeTable", "DeleteTable", "UpdateTable", "PutItem", "UpdateItem",
        "GetItem", "DeleteItem", "ListTables", "Scan", "DescribeEndpoints", "BatchWriteItem",
        "BatchGetItem", "Query", "TagResource", "UntagResource", "ListTagsOfResource",
        "UpdateTimeToLive", "DescribeTimeToLive", "ListStreams", "DescribeStream",
        "GetShardIterator", "GetRecords", "DescribeContinuousBackups",
    }
)  # fmt: skip
# Forwarded only when the cluster opts in (forward_transactions=True).
TRANSACTION_OPERATIONS = frozenset({"TransactWriteItems", "TransactGetItems"})


@dataclass
class Response:
    """A response the front writes in a single ``send``."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    compressible: bool = False  # only successful API answers may be compressed


class ApiError(Exception):
    """An Alternator ``api_error``: HTTP status, DynamoDB type and message."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message

    def response(self, extra: dict[str, Any] | None = None) -> Response:
        return error_response(self.status, self.type, self.message, extra)


def error_response(
    status: int, type_: str, message: str, extra: dict[str, Any] | None = None
) -> Response:
    """Alternator's ``generate_error_reply``: extra fields first, then ``__type``, ``message``."""
    body: dict[str, Any] = dict(extra or {})
    body["__type"] = f"com.amazonaws.dynamodb.v20120810#{type_}"
    body["message"] = message
    return json_response(status, body)


def json_response(status: int, body: Any) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    return Response(status, data, [("Content-Type", JSON_CT)], compressible=status == 200)


def internal_error(what: str) -> ApiError:
    return ApiError(500, "InternalServerError", f"Internal server error: {what}")


def decompress_request(encoding: str, body: bytes) -> bytes:
    """Decode a ``Content-Encoding`` request body the way Alternator 2026.1+ does.

    Any failure is a 500 InternalServerError (as in DynamoDB); an oversized result is 413.
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        if not body:
            raise internal_error("Error during gzip decompression of request body")
        out = bytearray()
        rest = body
        while rest:  # concatenated gzip members are allowed
            d = zlib.decompressobj(wbits=31)
            try:
                out += d.decompress(rest, MAX_BODY + 1 - len(out))
            except zlib.error:
                raise internal_error("Error during gzip decompression of request body") from None
            if len(out) > MAX_BODY:
                raise _too_large()
            if not d.eof:
                raise internal_error("Truncated gzip in request body")
            rest = d.unused_data
        return bytes(out)
    if enc == "deflate":
        d = zlib.decompressobj()
        try:
            out_b = d.decompress(body, MAX_BODY + 1)
        except zlib.error:
            raise internal_error("Error during deflate decompression of request body") from None
        if len(out_b) > MAX_BODY:
            raise _too_large()
        if not d.eof:
            raise internal_error("Truncated deflate in request body")
        return out_b
    raise internal_error(f"Unsupported Content-Encoding: {encoding}")


def _too_large() -> ApiError:
    message = f"Request content length limit of {MAX_BODY} bytes exceeded"
    return ApiError(413, "PayloadTooLarge", message)


def payload_too_large() -> ApiError:
    return _too_large()


def choose_encoding(accept_encoding: str) -> str | None:
    """Pick gzip or deflate from ``Accept-Encoding`` (with ``q=`` weights), or None."""
    best: tuple[float, str] | None = None
    star_q: float | None = None
    explicit: dict[str, float] = {}
    for part in accept_encoding.split(","):
        items = part.strip().split(";")
        name = items[0].strip().lower()
        if not name:
            continue
        q = 1.0
        for param in items[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name == "*":
            star_q = q
        else:
            explicit[name] = q
    for name in ("gzip", "deflate"):
        q = explicit.get(name, star_q if star_q is not None else 0.0)
        if q > 0 and (best is None or q > best[0]):
            best = (q, name)
    return best[1] if best else None


def compress_body(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=6, mtime=0)
    return zlib.compress(body, 6)
