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

from alternator_shm.emulator import _rjson, _updates

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


class _Numbers:
    """``parse_float``/``parse_int`` hooks: remember a number a double cannot hold (rapidjson
    refuses it, Python's json would give ``inf`` or a big int)."""

    __slots__ = ("too_big",)

    def __init__(self) -> None:
        self.too_big = False

    def float(self, text: str) -> float:
        value = float(text)
        if value in (_INF, -_INF):
            self.too_big = True
        return value

    def int(self, text: str) -> int:
        if len(text) > 308:
            self.too_big = True
        return int(text)


_INF = float("inf")
MAX_NESTING = _rjson.MAX_NESTING


def _rapidjson_error(message: str, offset: int) -> ApiError:
    return ApiError(400, "ValidationException", f"Parsing JSON failed: {message} at {offset}")


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
    DynamoDB Local would keep the last), or without what follows a NUL byte that ended it."""
    hook = _FirstMemberWins()
    parsed = parse_request_json(body, hook)
    if hook.repeated:
        body = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return parsed, body


def parse_request_json(body: bytes, _hook: _FirstMemberWins | None = None) -> Any:
    """Parse a request body the way Alternator's rjson does, in stream order.

    The first problem met while reading decides the error, always a 400 ValidationException:
    nesting deeper than 78 levels (``Max nested level reached: 78``), or a syntax error as
    ``Parsing JSON failed: <rapidjson message> at <byte offset>`` (invalid UTF-8 inside a string
    is ``Invalid encoding in string.``). Python's json parses; only when it fails, or the body
    holds what Python accepts and rapidjson may not (a surrogate escape, a number too big for a
    double, more than 78 brackets), does :mod:`._rjson` walk the bytes for rapidjson's verdict.
    """
    numbers = _Numbers()
    parsed: Any = None
    ok = False
    try:
        parsed = json.loads(
            body.decode("utf-8"),
            parse_float=numbers.float,
            parse_int=numbers.int,
            parse_constant=_reject_constant,
            object_pairs_hook=_hook or _FirstMemberWins(),
        )
        ok = True
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        pass
    if (
        ok
        and not numbers.too_big
        and not _rjson.suspect(body)
        and body.count(b"[") + body.count(b"{") <= MAX_NESTING  # cannot be too deep
    ):
        return parsed
    try:
        end = _rjson.scan(body)
    except _rjson.ParseError as err:
        if err.nesting:
            raise ApiError(400, "ValidationException", err.message) from None
        raise _rapidjson_error(err.message, err.offset) from None
    if ok:
        return parsed
    # rapidjson accepted what Python did not: the document ended at a NUL byte. The backend
    # must be given the document without what follows it.
    hook = _hook or _FirstMemberWins()
    hook.repeated = True
    try:
        return json.loads(body[:end].decode("utf-8"), object_pairs_hook=hook)
    except (ValueError, RecursionError) as err:  # a disagreement the scan does not model
        offset = getattr(err, "pos", 0)
        raise _rapidjson_error(_rjson.VALUE_INVALID, offset) from None


# big_decimal's syntax (utils/big_decimal.cc): an optional sign, digits with an optional
# fraction (at least one digit in all), an optional integer exponent. No spaces, NaN or Infinity.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Top-level request members that hold AttributeValues; Alternator never reads other members,
# so a malformed value there (or in ExpressionAttributeNames) is ignored.
_VALUE_MEMBERS = (
    "Key", "Item", "ExpressionAttributeValues", "ExclusiveStartKey", "AttributeUpdates",
    "Expected", "KeyConditions", "QueryFilter", "ScanFilter",
)  # fmt: skip
# An "N" member whose value is neither an object nor a number string that is surely valid and
# in range (<= 37 digits, no exponent); only then is the request walked. An escape anywhere
# ("\u004E") also makes the walk run.
_UNUSUAL_N = re.compile(rb'"N"\s*:(?!\s*(?:[{]|"-?[0-9]{1,20}(?:\.[0-9]{1,17})?"))')
_SKIPPED = frozenset({"ExpressionAttributeNames", "ProjectionExpression", "AttributesToGet"})


def _magnitude_and_precision(s: str) -> tuple[int, int]:
    """DynamoDB's magnitude and significant digits of a well-formed number, computed on its
    text as Alternator's ``get_magnitude_and_precision`` does (serialization.cc)."""
    mantissa, _, exponent = s.lower().partition("e")
    base = mantissa.lstrip("+-")
    integer, _, fraction = base.partition(".")
    digits = (integer + fraction).lstrip("0")
    if not digits.rstrip("0"):
        return 0, 0  # zero, however written
    precision = len(digits.rstrip("0"))
    if integer.lstrip("0"):
        magnitude = len(integer.lstrip("0")) - 1
    else:
        magnitude = -(len(fraction) - len(fraction.lstrip("0"))) - 1
    if exponent:
        if len(exponent) > 4:  # Alternator does not even parse such an exponent
            magnitude = -9999 if exponent.startswith("-") else 9999
        else:
            magnitude += int(exponent)
    return magnitude, precision


def number_error(text: str, stored: bool) -> ApiError | None:
    """Alternator's ``parse_and_validate_number`` verdict on an ``"N"`` string (the range
    checks only where a value is stored: items and keys)."""
    if not _NUMBER.fullmatch(text):
        message = f"The parameter cannot be converted to a numeric value: {text}"
        return ApiError(400, "ValidationException", message)
    if not stored:
        return None
    magnitude, precision = _magnitude_and_precision(text)
    if magnitude > 125:
        message = (
            f"Number overflow: {text}. Attempting to store a number with magnitude larger "
            "than supported range."
        )
    elif magnitude < -130:
        message = (
            f"Number underflow: {text}. Attempting to store a number with magnitude lower "
            "than supported range."
        )
    elif precision > 38:
        message = (
            f"Number too precise: {text}. Attempting to store a number with more significant "
            "digits than supported."
        )
    else:
        return None
    return ApiError(400, "ValidationException", message)


# How walk_values reads a JSON value: request structure (member names tell items apart), an
# item (attribute name -> value), a list of items, an item's attribute value (its own "N" is
# stored), or user data (nested values, expression values: names mean nothing).
_REQUEST, _ITEM, _ITEMS, _ATTRIBUTE, _DATA = range(5)
_ITEM_MEMBERS = frozenset({"Key", "Item", "ExclusiveStartKey"})


def walk_values(operation: str, root: Any, stored: bool, *, data: bool = False) -> ApiError | None:
    """The first bad number value under ``root``, in document order: an item when ``stored``,
    user data (an expression value...) when ``data``, else a part of a request.

    Range checks apply to an item's top-level ``N`` attributes only (Key, Item,
    ExclusiveStartKey wherever they sit, BatchGetItem's Keys): Alternator parses only those
    (``serialize_item``); numbers nested in a map or list are stored as JSON text, so they
    only get the syntax checks the front makes anyway (see the README).
    """
    start = _ITEM if stored else _DATA if data else _REQUEST
    stack: list[tuple[Any, int]] = [(root, start)]
    while stack:
        value, mode = stack.pop()
        if mode == _ITEM and isinstance(value, dict):
            stack.extend((member, _ATTRIBUTE) for member in reversed(value.values()))
            continue
        if mode == _ITEMS and isinstance(value, list):
            stack.extend((member, _ITEM) for member in reversed(value))
            continue
        inner = _DATA if mode in (_ATTRIBUTE, _DATA, _ITEM, _ITEMS) else _REQUEST
        if isinstance(value, dict):
            if len(value) == 1 and "N" in value:
                number = value["N"]
                if isinstance(number, str):
                    error = number_error(number, mode == _ATTRIBUTE)
                    if error is not None:
                        return error
                    continue
                if not isinstance(number, dict):
                    shown = json.dumps(value, separators=(",", ":"))
                    message = f"{operation}: number value must be encoded as string '{shown}'"
                    return ApiError(400, "SerializationException", message)
            for key, member in reversed(value.items()):
                if key in _SKIPPED and inner == _REQUEST:
                    continue
                if inner == _REQUEST and key in _ITEM_MEMBERS:
                    stack.append((member, _ITEM))
                elif inner == _REQUEST and key == "Keys":
                    stack.append((member, _ITEMS))
                else:
                    stack.append((member, inner))
        elif isinstance(value, list):
            stack.extend((member, inner) for member in reversed(value))
    return None


def plain_numbers(raw: bytes) -> bool:
    """True when a cheap scan of the raw body proves every ``"N"`` a short plain number (or an
    object), so no value walk is needed."""
    return b"\\u" not in raw and not _UNUSUAL_N.search(raw)


def first_value_error(operation: str, request: dict[str, Any]) -> ApiError | None:
    """The first bad number value in the members of a one-table request Alternator reads.

    An expression value the UpdateExpression stores, adds or subtracts is range-checked like
    a stored one (:mod:`._updates`); other expression values only for their syntax.
    """
    for name in _VALUE_MEMBERS:
        if name not in request:
            continue
        member = request[name]
        update = request.get("UpdateExpression")
        if name == "ExpressionAttributeValues" and isinstance(update, str):
            if isinstance(member, dict):
                error = _expression_values_error(operation, member, update)
            else:
                error = walk_values(operation, member, False, data=True)
        else:
            error = walk_values(
                operation, member, name in _ITEM_MEMBERS, data=name not in _ITEM_MEMBERS
            )
        if error is not None:
            return error
    return None


def _expression_values_error(
    operation: str, values: dict[str, Any], update: str
) -> ApiError | None:
    evaluated = _updates.evaluated_numbers(update)
    for name, value in values.items():
        number = value.get("N") if isinstance(value, dict) and len(value) == 1 else None
        if name in evaluated and isinstance(number, str):
            error = number_error(number, True)
        else:
            error = walk_values(operation, value, False, data=True)
        if error is not None:
            return error
    return None


def value_error(
    operation: str, request: dict[str, Any], raw: bytes
) -> tuple[list[str], ApiError] | None:
    """A number value Alternator refuses, and the tables it looks up before noticing.

    ``{"N": 5}`` is a SerializationException (Alternator's ``validate_value``; moto agrees,
    DynamoDB Local stores it); an ``"N"`` string that is no number, or a stored one out of
    DynamoDB's range, is a ValidationException with Alternator's text (moto would answer a
    500 leaking Python's ``int()`` or ``decimal`` errors, or accept it). Alternator resolves
    the table first, so the caller answers ResourceNotFoundException for a missing table in
    the returned list before this error. An ``"N"`` whose value is an object is an attribute
    *named* N and is walked into; members Alternator does not read are not looked at.
    """
    if plain_numbers(raw):
        return None  # the common case: every "N" is a short plain number (or an object)
    table = request.get("TableName")
    tables = [table] if isinstance(table, str) else []
    error = first_value_error(operation, request)
    if error is not None:
        return tables, error
    items = request.get("RequestItems")
    if isinstance(items, dict):  # BatchWriteItem / BatchGetItem: table by table
        seen: list[str] = []
        for name, part in items.items():
            seen.append(name)
            error = walk_values(operation, part, False)
            if error is not None:
                return seen, error
    transact = request.get("TransactItems")
    if isinstance(transact, list):
        seen = []
        for entry in transact:
            for action in entry.values() if isinstance(entry, dict) else ():
                target = action.get("TableName") if isinstance(action, dict) else None
                if isinstance(target, str):
                    seen.append(target)
                error = walk_values(operation, action, False)
                if error is not None:
                    return seen, error
    return None
