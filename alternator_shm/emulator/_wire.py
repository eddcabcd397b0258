"""Alternator's wire conventions: error bodies, the operation allow-list, compression.

Kept separate from the HTTP front so the pipeline reads like server.cc's ``handle_api_request``.
"""

from __future__ import annotations

import gzip
import json
import re
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
    streamed: bool = False  # sent with Transfer-Encoding: chunked (Alternator's body_writer)
    date_header: bool = True  # False: alternator_http_response_disable_date_header


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
        if not body:
            raise internal_error("Error during deflate decompression of request body")
        out = bytearray()
        rest = body
        while rest:  # concatenated zlib streams are decoded one after the other, like gzip
            d = zlib.decompressobj()
            try:
                out += d.decompress(rest, MAX_BODY + 1 - len(out))
            except zlib.error:
                raise internal_error("Error during deflate decompression of request body") from None
            if len(out) > MAX_BODY:
                raise _too_large()
            if not d.eof:
                raise internal_error("Truncated deflate in request body")
            rest = d.unused_data
        return bytes(out)
    raise internal_error(f"Unsupported Content-Encoding: {encoding}")


def _too_large() -> ApiError:
    message = f"Request content length limit of {MAX_BODY} bytes exceeded"
    return ApiError(413, "PayloadTooLarge", message)


def payload_too_large() -> ApiError:
    return _too_large()


# std::from_chars(float, general): optional '-', digits with an optional fraction, an optional
# exponent; or inf/infinity/nan. No '+', no spaces, no '_' (which Python's float() accepts).
_Q_NUMBER = re.compile(
    r"-?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?))"
)
_ENCODINGS = ("gzip", "deflate", "*", "identity")  # response_compressor::compression_names
_FLT_MIN = 1.1754943508222875e-38  # identity: "enabled, but lowest priority"


def _q_value(params: list[str]) -> float | None:
    """The first well-formed ``q=`` of one entry, clamped to [0, 1]; None when there is none."""
    for raw in params:
        param = raw.lstrip()
        if not param or param[0].lower() != "q":
            continue
        param = param[1:].lstrip()
        if not param.startswith("="):
            continue
        value = param[1:].strip()
        if not _Q_NUMBER.fullmatch(value):
            continue  # malformed: ignored, the next q= may still count
        q = float(value)
        return 0.0 if q < 0.0 else 1.0 if q > 1.0 else q
    return None


def choose_encoding(
    accept_encoding: str, size: int, threshold: int = COMPRESSION_THRESHOLD
) -> str | None:
    """Pick ``gzip``/``deflate`` (or None) exactly as Alternator's ``find_compression`` does.

    Entries are read in order; on equal quality the first listed wins (a later explicit
    encoding beats an earlier ``*`` of the same q); q is clamped to [0, 1]; the first
    well-formed ``q=`` of an entry counts and malformed ones are ignored; an entry already
    seen with a non-zero q is skipped; ``identity`` never displaces anything. Several
    ``Accept-Encoding`` lines are merged by the caller (joined with ``,``).
    """
    if size < threshold:
        return None
    quality: dict[str, float] = {"identity": _FLT_MIN}
    selected = "identity"
    for entry in accept_encoding.split(","):
        params = entry.split(";")
        name = params[0].strip().lower()
        if name not in _ENCODINGS:
            continue
        seen = quality.get(name)
        if seen is not None and seen != 0.0:
            continue
        if name == "identity":
            continue  # its threshold is "never", so Alternator skips it
        q = _q_value(params[1:])
        quality[name] = 1.0 if q is None else q
        if selected == "*":
            if quality[name] >= quality["*"]:
                selected = name
        elif quality[name] > quality[selected]:
            selected = name
    if selected == "*":
        selected = "identity"
        for name in ("gzip", "deflate"):
            if name not in quality:
                return name
            if quality[name] > quality[selected]:
                selected = name
    return None if selected == "identity" else selected


def compress_body(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=6, mtime=0)
    return zlib.compress(body, 6)


# --------------------------------------------------------------------------- request JSON

MAX_NESTING = 78  # rjson's default max_nested_level: deeper request bodies are refused
# Strings (with escapes, even unterminated) and the brackets between them.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
_MESSAGES = {  # Python's json messages -> rapidjson's GetParseError_En texts
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Extra data": "The document root must not be followed by other values.",
}


def _rapidjson_error(message: str, offset: int) -> ApiError:
    return ApiError(400, "ValidationException", f"Parsing JSON failed: {message} at {offset}")


def _too_deep_before(text: str, end: int) -> int | None:
    """Offset where nesting first exceeds :data:`MAX_NESTING` in ``text[:end]``, else None."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text, 0, end):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return match.start()
        elif token in "]}":
            depth -= 1
    return None


def _innermost_container(text: str, end: int) -> str:
    stack: list[str] = []
    for match in _JSON_TOKENS.finditer(text, 0, end):
        token = match.group()
        if token in "[{":
            stack.append(token)
        elif token in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity: rapidjson's default flags refuse them


class _FirstMemberWins:
    """``object_pairs_hook``: a member name repeated in one object keeps its first value, as
    Alternator's lookups (rapidjson's FindMember) do; Python's json keeps the last. Remembers
    whether that happened, so the request can be re-encoded for a backend that parses it again."""

    def __init__(self) -> None:
        self.repeated = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                self.repeated = True
            else:
                obj[key] = value
        return obj


def parse_request(body: bytes) -> tuple[Any, bytes]:
    """:func:`parse_request_json`, and the body a backend should parse: ``body`` itself, or,
    when a member name repeated, the request re-encoded with each first value (moto and
    DynamoDB Local would keep the last)."""
    hook = _FirstMemberWins()
    parsed = parse_request_json(body, hook)
    if hook.repeated:
        body = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return parsed, body


def parse_request_json(body: bytes, _hook: _FirstMemberWins | None = None) -> Any:
    """Parse a request body the way Alternator's rjson does, in stream order.

    The first problem met while reading decides the error, always a 400 ValidationException:
    nesting deeper than 78 levels (``Max nested level reached: 78``), invalid UTF-8 inside a
    string (``Invalid encoding in string.``), or a syntax error, as ``Parsing JSON failed:
    <rapidjson message> at <byte offset>``. Never a recursion error, whatever the depth.
    """
    bad_utf8: int | None = None  # character offset of the first invalid UTF-8 byte
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        text = body.decode("utf-8", "surrogateescape")  # bad bytes become lone surrogates
        bad_utf8 = len(body[: err.start].decode("utf-8", "surrogateescape"))
    error_at: int | None = None
    message = ""
    parsed: Any = None
    try:
        parsed = json.loads(text, parse_constant=_reject_constant,
                            object_pairs_hook=_hook or _FirstMemberWins())
    except RecursionError:
        error_at = len(text)  # only the depth scan below can explain it
    except json.JSONDecodeError as err:
        error_at, message = err.pos, err.msg
        if not text.strip():
            message = "The document is empty."
        elif message == "Expecting ',' delimiter":
            if _innermost_container(text, err.pos) == "{":
                message = "Missing a comma or '}' after an object member."
            else:
                message = "Missing a comma or ']' after an array element."
        else:
            message = _MESSAGES.get(message, "Invalid value.")
    except ValueError:  # NaN / Infinity
        match = re.search(r"-?(?:NaN|Infinity)", text)
        error_at, message = (match.start() if match else 0), "Invalid value."
    limit = len(text) if error_at is None else error_at
    if bad_utf8 is not None and bad_utf8 < limit:
        limit = bad_utf8
    if text.count("[") + text.count("{") > MAX_NESTING:
        deep = _too_deep_before(text, min(limit + 1, len(text)))
        if deep is not None and deep <= limit:
            raise ApiError(400, "ValidationException", f"Max nested level reached: {MAX_NESTING}")
    if bad_utf8 is not None and (error_at is None or bad_utf8 < error_at):
        # Inside a string (outside one, json itself fails at that very byte).
        offset = len(text[:bad_utf8].encode("utf-8", "surrogateescape"))
        raise _rapidjson_error("Invalid encoding in string.", offset)
    if error_at is not None:
        offset = len(text[:error_at].encode("utf-8", "surrogateescape"))
        raise _rapidjson_error(message or "Invalid value.", offset)
    return parsed


_NUMBER_NOT_STRING = re.compile(rb'"N"\s*:\s*[^"\s{]|\\u')  # or any escape: "\u004E"


def check_number_values(operation: str, request: Any, raw: bytes) -> None:
    """Refuse a number attribute sent as a JSON number (``{"N": 5}``), like Alternator does.

    Alternator (and DynamoDB) answer SerializationException; moto agrees but DynamoDB Local
    stores the item, so the front checks it for every backend. An ``"N"`` whose value is an
    object is an attribute *named* N inside a map or item, and is walked into instead.
    """
    if not _NUMBER_NOT_STRING.search(raw):
        return  # the common case: no "N" followed by anything but a string or an object
    stack: list[Any] = [request]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            number = value.get("N", "")
            if len(value) == 1 and not isinstance(number, (str, dict)):
                shown = json.dumps(value, separators=(",", ":"))
                raise ApiError(
                    400,
                    "SerializationException",
                    f"{operation}: number value must be encoded as string '{shown}'",
                )
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
