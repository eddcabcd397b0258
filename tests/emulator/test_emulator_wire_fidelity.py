"""Request-body details where the emulator must answer exactly like Alternator.

Found by a review after issue 12: rapidjson's verdict on surrogate escapes and numbers, its
error offsets, Alternator's own number validation (not a backend's leaked Python error), and
the order of the table lookup against value checks. Every test talks to the emulator alone
over plain HTTP, with signed raw bodies. Where each expectation comes from:

- rapidjson ``reader.h`` (``ParseStringToStream``, ``ParseNumber``, ``ParseNull``...) with the
  default flags Scylla's ``utils/rjson.hh`` leaves in place, and ``error/en.h`` for the texts;
  rjson.cc formats them as ``Parsing JSON failed: <text> at <offset>``.
- serialization.cc ``parse_and_validate_number`` for numbers, executor.cc ``validate_value``
  for ``{"N": 5}``, and the operations' order (``get_table`` first).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from _emulator_helpers import client, error_of, post, signed_headers

from alternator_shm.emulator import Cluster

VALIDATION = "ValidationException"


def _send(cluster: Cluster, operation: str, body: bytes | dict[str, Any]) -> tuple[int, str, str]:
    """(status, error type or "", message or raw body) of one signed POST."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    node = cluster.nodes[0]
    resp = post(node, raw, signed_headers(node, operation, raw), timeout=30)
    if resp.status == 200:
        return 200, "", resp.data.decode()
    return error_of(resp)


def _parse_error(cluster: Cluster, body: bytes) -> tuple[int, str, str]:
    return _send(cluster, "ListTables", body)


# ---------------------------------------------------------------- 1. surrogate escapes


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        (rb'{"a":"\ud800"}', 6),  # a high surrogate, then the closing quote
        (rb'{"a":"x\ud800y"}', 7),  # a high surrogate, then a plain character
        (rb'{"a":"\ud800\u0041"}', 6),  # a high surrogate, then a non-low escape
        (rb'{"a":"\udbff\ud800"}', 6),  # two high surrogates
        (rb'{"a":"\udc00"}', 6),  # a lone low surrogate
        (rb'{"\uDFFF":1}', 2),  # in a member name, upper-case hex
    ],
)
def test_lone_surrogate_escapes_are_refused(
    null_cluster: Cluster, body: bytes, offset: int
) -> None:
    message = f"Parsing JSON failed: The surrogate pair in string is invalid. at {offset}"
    assert _parse_error(null_cluster, body) == (400, VALIDATION, message)


def test_a_surrogate_pair_and_a_bad_hex_after_a_high_surrogate(null_cluster: Cluster) -> None:
    assert _parse_error(null_cluster, rb'{"a":"\ud83d\ude00"}')[0] == 200
    # The second escape's bad hex digit is reported at the first escape, like rapidjson does.
    message = "Parsing JSON failed: Incorrect hex digit after \\u escape in string. at 6"
    assert _parse_error(null_cluster, rb'{"a":"\ud800\u00G0"}') == (400, VALIDATION, message)


# ---------------------------------------------------------------- 2. numbers and offsets


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a":1e400}', "Number too big to be stored in double. at 5"),
        (b'{"a":-1.5E309}', "Number too big to be stored in double. at 5"),
        (b'{"a":1.8e308}', "Number too big to be stored in double. at 5"),
        (b'{"a":' + b"9" * 400 + b"}", "Number too big to be stored in double. at 5"),
        (b'{"a":1.}', "Miss fraction part in number. at 7"),
        (b'{"a":1.e5}', "Miss fraction part in number. at 7"),
        (b'{"a":1e}', "Miss exponent in number. at 7"),
        (b'{"a":2E+}', "Miss exponent in number. at 8"),
        (b'{"a":-}', "Invalid value. at 6"),
        (b'{"a":01}', "Missing a comma or '}' after an object member. at 6"),
    ],
)
def test_rapidjson_number_errors(null_cluster: Cluster, body: bytes, message: str) -> None:
    assert _parse_error(null_cluster, body) == (400, VALIDATION, f"Parsing JSON failed: {message}")


def test_numbers_rapidjson_accepts(null_cluster: Cluster) -> None:
    for number in (b"1e308", b"-0", b"0.5e-400", b"12345678901234567890123", b"1E+2"):
        assert _parse_error(null_cluster, b'{"a":' + number + b"}")[0] == 200, number


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A bad literal is reported at its first wrong byte, not where it starts.
        (b'{"a":nul}', "Invalid value. at 8"),
        (b'{"a":tru}', "Invalid value. at 8"),
        (b'{"a":fals }', "Invalid value. at 9"),
        (b'{"a":nulL}', "Invalid value. at 8"),
        # An unterminated string is reported where the input ends, not where it starts.
        (b'{"a": "xyz', "Missing a closing quotation mark in string. at 10"),
        (b'{"abc', "Missing a closing quotation mark in string. at 5"),
        # A NUL byte inside a string reads as the end of input.
        (b'{"a":"x\x00"}', "Missing a closing quotation mark in string. at 7"),
        # Truncated object, missing colon, trailing commas.
        (b'{"a":1', "Missing a comma or '}' after an object member. at 6"),
        (b'{"a":', "Invalid value. at 5"),
        (b'{"a"', "Missing a colon after a name of object member. at 4"),
        (b'{"a" :', "Invalid value. at 6"),
        (b'{"a":1,}', "Missing a name for object member. at 7"),
        (b'{"a":[1,]}', "Invalid value. at 8"),
        (b'{"a":[1', "Missing a comma or ']' after an array element. at 7"),
        (b"{", "Missing a name for object member. at 1"),
        (b"  \n", "The document is empty. at 3"),
        (b'{"a":"\\x"}', "Invalid escape character in string. at 6"),
    ],
)
def test_error_offsets_follow_rapidjson(null_cluster: Cluster, body: bytes, message: str) -> None:
    assert _parse_error(null_cluster, body) == (400, VALIDATION, f"Parsing JSON failed: {message}")


def test_a_nul_byte_after_the_document_ends_it(null_cluster: Cluster) -> None:
    """rjson's stream reads a NUL as the end of input, so what follows is never looked at."""
    assert _parse_error(null_cluster, b"{}\x00 not json")[0] == 200


def test_nesting_still_wins_in_stream_order(null_cluster: Cluster) -> None:
    deep = b'{"a":' + b"[" * 80 + b"1e400" + b"]" * 80 + b"}"
    assert _parse_error(null_cluster, deep) == (400, VALIDATION, "Max nested level reached: 78")
    early = b'{"a":1e400,"b":' + b"[" * 80 + b"]" * 80 + b"}"
    message = "Parsing JSON failed: Number too big to be stored in double. at 5"
    assert _parse_error(null_cluster, early) == (400, VALIDATION, message)


# ---------------------------------------------------------------- 3. number values


@contextlib.contextmanager
def _tables(cluster: Cluster, prefix: str) -> Iterator[tuple[str, str]]:
    """Two tables for the block: ``<prefix>_s`` (S hash key p), ``<prefix>_n`` (N hash key p)."""
    c = client(cluster, cluster.nodes[0])
    names = (f"{prefix}_s", f"{prefix}_n")
    for name, kind in zip(names, "SN", strict=True):
        c.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": kind}],
            BillingMode="PAY_PER_REQUEST",
        )
    try:
        yield names
    finally:
        for name in names:
            c.delete_table(TableName=name)


def _not_a_number(text: str) -> tuple[int, str, str]:
    return 400, VALIDATION, f"The parameter cannot be converted to a numeric value: {text}"


def test_a_bad_number_string_is_alternators_validation_error(shared: Cluster) -> None:
    """Before: moto answered 500s leaking Python's int()/decimal errors, or accepted them."""
    with _tables(shared, "badnum") as (ts, tn):
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("GetItem", {"TableName": tn, "Key": {"p": {"N": "dog"}}}, "dog"),
            ("PutItem", {"TableName": tn, "Item": {"p": {"N": "1 "}}}, "1 "),
            ("PutItem", {"TableName": ts, "Item": {"p": {"S": "a"}, "v": {"N": " 1"}}}, " 1"),
            ("PutItem", {"TableName": ts, "Item": {"p": {"S": "a"}, "v": {"N": "NaN"}}}, "NaN"),
            (
                "UpdateItem",
                {
                    "TableName": ts,
                    "Key": {"p": {"S": "a"}},
                    "UpdateExpression": "ADD v :v",
                    "ExpressionAttributeValues": {":v": {"N": "dog"}},
                },
                "dog",
            ),
            (
                "UpdateItem",
                {
                    "TableName": ts,
                    "Key": {"p": {"S": "a"}},
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": {"N": "Infinity"}},
                },
                "Infinity",
            ),
            (
                "Query",
                {
                    "TableName": tn,
                    "KeyConditionExpression": "p = :v",
                    "ExpressionAttributeValues": {":v": {"N": "-dog"}},
                },
                "-dog",
            ),
            (
                "PutItem",
                {"TableName": ts, "Item": {"p": {"S": "a"}, "m": {"M": {"x": {"N": "1e"}}}}},
                "1e",
            ),
            (
                "BatchWriteItem",
                {"RequestItems": {tn: [{"PutRequest": {"Item": {"p": {"N": "."}}}}]}},
                ".",
            ),
        ]
        for operation, body, text in cases:
            assert _send(shared, operation, body) == _not_a_number(text), (operation, body)


def test_number_range_and_syntax_like_alternator(shared: Cluster) -> None:
    with _tables(shared, "rangenum") as (ts, _tn):
        c = client(shared, shared.nodes[0])
        for ok in ("+3", ".123", "0001.23", "1e+5", "-17.4E37", "0e1000", "9.99e125", "1e-130"):
            item = {"p": {"S": ok}, "v": {"N": ok}}
            assert _send(shared, "PutItem", {"TableName": ts, "Item": item})[0] == 200, ok
            stored = c.get_item(TableName=ts, Key={"p": {"S": ok}})["Item"]["v"]["N"]
            assert float(stored) == float(ok)
        overflow = "Number overflow: 1e126. Attempting to store a number with magnitude larger "
        underflow = "Number underflow: 1e-131. Attempting to store a number with magnitude lower "
        precise = "Number too precise: 1.234567890123456789012345678901234567891. Attempting "
        for text, start in (
            ("1e126", overflow),
            ("1e-131", underflow),
            ("1.234567890123456789012345678901234567891", precise),
        ):
            item = {"p": {"S": "x"}, "v": {"N": text}}
            status, type_, message = _send(shared, "PutItem", {"TableName": ts, "Item": item})
            assert (status, type_) == (400, VALIDATION), text
            assert message.startswith(start), message


# ---------------------------------------------------------------- 4. order of checks


def test_missing_table_wins_over_a_bad_value(shared: Cluster) -> None:
    message = "Requested resource not found: Table: nosuch not found"
    missing = (400, "ResourceNotFoundException", message)
    for value in ({"N": 5}, {"N": "dog"}):
        body = {"TableName": "nosuch", "Item": {"p": {"S": "a"}, "v": value}}
        assert _send(shared, "PutItem", body) == missing
    batch = {"RequestItems": {"nosuch": [{"PutRequest": {"Item": {"p": {"N": 5}}}}]}}
    assert _send(shared, "BatchWriteItem", batch) == missing


def test_members_alternator_does_not_read_are_not_checked(shared: Cluster) -> None:
    with _tables(shared, "unknownf") as (ts, _tn):
        body = {"TableName": ts, "Item": {"p": {"S": "a"}}, "Junk": {"N": 5}, "More": {"N": "x"}}
        assert _send(shared, "PutItem", body)[0] == 200
        # With the table there, the value error is answered (SerializationException).
        bad = {"TableName": ts, "Item": {"p": {"S": "a"}, "v": {"N": 5}}}
        assert _send(shared, "PutItem", bad) == (
            400,
            "SerializationException",
            "PutItem: number value must be encoded as string '{\"N\":5}'",
        )
