"""Alternator's key-column checks, in Alternator's order, ahead of the value checks.

Where the rules come from (scylladb/scylladb, alternator/): ``serialization.cc``
``get_key_column_value`` / ``get_typed_value`` / ``get_key_from_typed_value`` (a missing key
column, a value object that is not ``{"<type>": "<string>"}``, the wrong type, an empty string,
then a number key through ``parse_and_validate_number``), hash key before range key
(``pk_from_json`` then ``ck_from_json``); ``check_key`` (a ``Key`` with other members); and the
operations in ``executor.cc``: the table is looked up first (``get_table``), then the key, then
each item attribute's ``validate_value``; ``BatchGetItem`` and ``BatchWriteItem`` go table by
table and, inside a table, request by request (key, then that request's values).

Alternator checks a key against the table's schema, so the emulator needs the key schema: it is
read with DescribeTable from the backend and cached per backend (:class:`KeySchemas`); an error
found with a cached schema is only answered after the schema was read again, so a table
re-created with another key is never judged by its old key.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from typing import Any

from alternator_shm.emulator._wire import ApiError, first_value_error, number_error, walk_values

# ((name, type), ...): the hash key first, then the range key if any; types "S", "N" or "B".
KeySchema = tuple[tuple[str, str], ...]
# Operations whose request names item keys (Alternator parses them with pk_from_json).
KEY_OPERATIONS = frozenset(
    {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "BatchWriteItem"}
)
# Operations after which a table's key schema may have changed.
SCHEMA_CHANGES = frozenset({"CreateTable", "DeleteTable", "UpdateTable"})


class MissingTable(Exception):  # a control-flow signal
    """A table looked up for its key schema does not exist; ``answer`` is what to send."""

    def __init__(self, answer: Any) -> None:
        super().__init__("missing table")
        self.answer = answer


def key_schema_of(table: dict[str, Any]) -> KeySchema:
    """The key schema of a DescribeTable ``Table`` description."""
    types = {
        d.get("AttributeName"): d.get("AttributeType")
        for d in table.get("AttributeDefinitions") or ()
        if isinstance(d, dict)
    }
    ordered = sorted(
        (d for d in table.get("KeySchema") or () if isinstance(d, dict)),
        key=lambda d: 0 if d.get("KeyType") == "HASH" else 1,
    )
    return tuple(
        (str(d.get("AttributeName")), str(types.get(d.get("AttributeName")))) for d in ordered
    )


def shown(value: Any) -> str:
    """A JSON value printed compactly, as Alternator formats an ``rjson::value``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _validation(message: str) -> ApiError:
    return ApiError(400, "ValidationException", message)


def key_value_error(value: Any, name: str, type_: str) -> ApiError | None:
    """Alternator's verdict on the value object given for key column ``name`` of ``type_``."""
    if not (isinstance(value, dict) and len(value) == 1):
        return _validation(f"Malformed value object for key column {name}: {shown(value)}")
    ((given, text),) = value.items()
    if not isinstance(text, str):
        return _validation(f"Malformed value object for key column {name}: {shown(value)}")
    if given != type_:
        return _validation(
            f"Type mismatch: expected type {type_} for key column {name}, got type {given}"
        )
    if not text:
        return _validation(
            "The AttributeValue for a key attribute cannot contain an empty string value. "
            f"Key: {name}"
        )
    if type_ == "N":
        return number_error(text, True)
    return None  # "B": base64 errors are left to the backend (see the README)


def key_error(key: Any, schema: KeySchema, *, exact: bool) -> ApiError | None:
    """The first problem with the key columns of ``key`` (an item, or a ``Key``); with
    ``exact`` (a ``Key``), members other than the key columns are refused too (check_key)."""
    if not isinstance(key, dict) or not schema:
        return None  # not an object, or no key schema known: the backend answers
    for name, type_ in schema:
        if name not in key:
            return _validation(f"Key column {name} not found")
        error = key_value_error(key[name], name, type_)
        if error is not None:
            return error
    if exact and len(key) != len(schema):
        return _validation("Given key attribute not in schema")
    return None


def first_error(
    operation: str,
    request: dict[str, Any],
    schema_of: Callable[[str], KeySchema],
    values: bool,
) -> ApiError | None:
    """The first error Alternator answers for a key operation's keys and values, looking each
    table up (``schema_of``, which raises :class:`MissingTable`) in Alternator's order.

    ``values``: also walk number values (:mod:`._wire`); the caller passes False when a
    cheap scan of the raw body proved every number plain.
    """
    if operation in ("BatchGetItem", "BatchWriteItem"):
        items = request.get("RequestItems")
        if not isinstance(items, dict):
            return None
        for table, part in items.items():
            schema = schema_of(table)
            error = _batch_part_error(operation, part, schema, values)
            if error is not None:
                return error
        return None
    table = request.get("TableName")
    if not isinstance(table, str):
        return None  # Alternator's own TableName errors are left to the backend
    schema = schema_of(table)
    if operation == "PutItem":
        error = key_error(request.get("Item"), schema, exact=False)
    else:
        error = key_error(request.get("Key"), schema, exact=True)
    if error is not None or not values:
        return error
    return first_value_error(operation, request)


def _batch_part_error(
    operation: str, part: Any, schema: KeySchema, values: bool
) -> ApiError | None:
    if operation == "BatchGetItem":
        keys = part.get("Keys") if isinstance(part, dict) else None
        for key in keys if isinstance(keys, list) else ():
            error = key_error(key, schema, exact=True)
            if error is not None:
                return error
        return walk_values(operation, part, False) if values else None
    for write in part if isinstance(part, list) else ():
        if not isinstance(write, dict):
            continue
        put, delete = write.get("PutRequest"), write.get("DeleteRequest")
        error = None
        if isinstance(put, dict):
            error = key_error(put.get("Item"), schema, exact=False)
        elif isinstance(delete, dict):
            error = key_error(delete.get("Key"), schema, exact=True)
        if error is None and values:
            error = walk_values(operation, write, False)
        if error is not None:
            return error
    return None


class KeySchemas:
    """Key schemas per table name, read with ``describe`` (DescribeTable) on first use.

    ``describe(table)`` returns the ``Table`` description, or raises :class:`MissingTable`.
    Bounded (cleared beyond ``limit`` names); forgotten when this node forwards a schema
    change; callers re-read (:meth:`fresh`) before answering an error found with a cached one.
    """

    def __init__(self, limit: int = 1024) -> None:
        self._lock = threading.Lock()
        self._schemas: dict[str, KeySchema] = {}
        self._limit = limit

    def cached(self, table: str, describe: Callable[[str], dict[str, Any]]) -> KeySchema:
        with self._lock:
            schema = self._schemas.get(table)
        return schema if schema is not None else self.fresh(table, describe)

    def fresh(self, table: str, describe: Callable[[str], dict[str, Any]]) -> KeySchema:
        schema = key_schema_of(describe(table))
        with self._lock:
            if len(self._schemas) >= self._limit:
                self._schemas.clear()
            self._schemas[table] = schema
        return schema

    def forget(self, table: Any) -> None:
        """Drop ``table``'s schema (every schema when the name is not a string)."""
        with self._lock:
            if isinstance(table, str):
                self._schemas.pop(table, None)
            else:
                self._schemas.clear()


_CACHES: weakref.WeakKeyDictionary[Any, KeySchemas] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def schemas_for(backend: Any) -> KeySchemas:
    """The key-schema cache of one storage backend (shared by the nodes that share it)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(backend)
        if cache is None:
            cache = _CACHES[backend] = KeySchemas()
        return cache
