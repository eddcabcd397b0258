"""Which writes qualify, and the typed hash of a partition key (``key-route-affinity.md``).

Both rules must match the Go, Java and Python clients bit for bit, or processes written in
different languages would send one key's lightweight transactions to different coordinators:

* classification (AFF-REQ-001): ``"any_write"`` takes every PutItem, UpdateItem and
  DeleteItem, and BatchWriteItem (voted); ``"rmw"`` takes only the single-item writes that read
  the old item (a condition, legacy ``Expected``, old values returned, an update expression, a
  legacy ADD, or a legacy DELETE with a value);
* hashing (AFF-REQ-003): one type byte (S=1, N=2, B=3) then the value's bytes, unnormalised,
  through MurmurHash3 x64-128 with seed 0; the first 64 bits, signed, seed the plan.

Anything that cannot be hashed (other types, malformed shapes) returns ``None``: the call is
routed normally instead of failing (the server will judge the request itself).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import mmh3

__all__ = [
    "SINGLE_WRITES",
    "AffinityMode",
    "batch_targets",
    "hash_key",
    "qualifies",
]

AffinityMode = Literal["rmw", "any_write"]

SINGLE_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
_RETURN_OLD = frozenset({"ALL_OLD", "UPDATED_OLD", "ALL_NEW"})
_TYPE_BYTE = {"S": b"\x01", "N": b"\x02", "B": b"\x03"}
# DynamoDB's number literal: no blanks, no inf/nan, no hex. Anything else is malformed and
# falls back (the server would refuse it anyway); valid spellings are hashed as written.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _nonempty_map(value: object) -> bool:
    return isinstance(value, Mapping) and len(value) > 0


def _reads_old_item(operation: str, params: Mapping[str, Any]) -> bool:
    if _nonempty_str(params.get("ConditionExpression")) or _nonempty_map(params.get("Expected")):
        return True
    returns = params.get("ReturnValues")
    if operation != "UpdateItem":
        # Any ReturnValues but NONE, the empty string included (botocore sends it as is).
        return returns is not None and returns != "NONE"
    if returns in _RETURN_OLD or _nonempty_str(params.get("UpdateExpression")):
        return True
    updates = params.get("AttributeUpdates")
    if isinstance(updates, Mapping):
        for update in updates.values():
            if not isinstance(update, Mapping):
                continue
            action = update.get("Action")
            if action == "ADD" or (action == "DELETE" and update.get("Value") is not None):
                return True
    return False


def qualifies(mode: AffinityMode, operation: str, params: Mapping[str, Any]) -> bool:
    """Whether ``operation`` with ``params`` gets an affinity plan under ``mode``.

    For BatchWriteItem this says only that the operation *may* qualify (``"any_write"``);
    it qualifies when at least one of its targets votes (:func:`batch_targets`).
    """
    if operation in SINGLE_WRITES:
        return mode == "any_write" or _reads_old_item(operation, params)
    return operation == "BatchWriteItem" and mode == "any_write"


def _key_bytes(value: object) -> bytes | None:
    """Typed bytes of one AttributeValue (``{"S": "x"}``), or None if it cannot be hashed."""
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    ((kind, payload),) = value.items()
    prefix = _TYPE_BYTE.get(kind) if isinstance(kind, str) else None
    if prefix is None:
        return None
    try:
        if kind == "B":
            if isinstance(payload, (bytes, bytearray, memoryview)):
                return prefix + bytes(payload)
            if isinstance(payload, str):  # botocore encodes a str blob as UTF-8
                return prefix + payload.encode("utf-8")
            return None
        if not isinstance(payload, str):
            return None
        if kind == "N" and _NUMBER.fullmatch(payload) is None:
            return None
        return prefix + payload.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not a valid DynamoDB string
        return None


def hash_key(value: object) -> int | None:
    """Signed 64-bit affinity hash of an AttributeValue, or None when it is not hashable."""
    data = _key_bytes(value)
    if data is None:
        return None
    h1: int = mmh3.hash64(data, seed=0, signed=True)[0]
    return h1


def batch_targets(params: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(table, item or key)`` of each usable put or delete of a BatchWriteItem.

    An entry must hold exactly one ``PutRequest`` (with a map ``Item``) or one
    ``DeleteRequest`` (with a map ``Key``); anything else is skipped, not fatal.
    """
    out: list[tuple[str, Mapping[str, Any]]] = []
    request_items = params.get("RequestItems")
    if not isinstance(request_items, Mapping):
        return out
    for table, entries in request_items.items():
        if not isinstance(table, str) or not isinstance(entries, (list, tuple)):
            continue
        for entry in entries:
            if not isinstance(entry, Mapping) or len(entry) != 1:
                continue
            ((kind, body),) = entry.items()
            if not isinstance(body, Mapping):
                continue
            field = {"PutRequest": "Item", "DeleteRequest": "Key"}.get(kind)
            shape = body.get(field) if field is not None else None
            if isinstance(shape, Mapping):
                out.append((table, shape))
    return out
