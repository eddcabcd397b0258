"""Key columns are checked like Alternator does, before the values (raw signed HTTP).

Where each expectation comes from (scylladb/scylladb, alternator/): serialization.cc
``get_key_column_value`` ("Key column <name> not found"), ``get_typed_value`` ("Malformed value
object for key column <name>: <value>", "Type mismatch: expected type <T> for key column <name>,
got type <U>"), ``get_key_from_typed_value`` (the empty-string text, then a number key through
``parse_and_validate_number``), ``pk_from_json`` before ``ck_from_json``; executor.cc
``check_key`` ("Given key attribute not in schema"), ``put_or_delete_item`` (the key before each
attribute's ``validate_value``), and ``batch_get_item`` / ``batch_write_item`` (table by table,
then key by key or request by request). Before this file, the emulator answered the backend's
texts (moto's differ), a SerializationException for ``{"N": 5}`` in a key column, or, on the
null backend, 200.
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


def _send(
    cluster: Cluster, operation: str, body: dict[str, Any], node: int = 0
) -> tuple[int, str, str]:
    """(status, error type or "", message or raw body) of one signed POST."""
    raw = json.dumps(body).encode()
    target = cluster.nodes[node]
    resp = post(target, raw, signed_headers(target, operation, raw), timeout=30)
    if resp.status == 200:
        return 200, "", resp.data.decode()
    return error_of(resp)


def _invalid(message: str) -> tuple[int, str, str]:
    return 400, VALIDATION, message


@contextlib.contextmanager
def _tables(cluster: Cluster, prefix: str) -> Iterator[tuple[str, str, str]]:
    """``<prefix>_s`` (S hash key p), ``<prefix>_n`` (N hash key p), ``<prefix>_sn`` (S hash
    key p, N range key c)."""
    c = client(cluster, cluster.nodes[0])
    specs: list[tuple[str, list[tuple[str, str, str]]]] = [
        (f"{prefix}_s", [("p", "HASH", "S")]),
        (f"{prefix}_n", [("p", "HASH", "N")]),
        (f"{prefix}_sn", [("p", "HASH", "S"), ("c", "RANGE", "N")]),
    ]
    for name, keys in specs:
        c.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": a, "KeyType": k} for a, k, _ in keys],
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, _, t in keys],
            BillingMode="PAY_PER_REQUEST",
        )
    try:
        yield specs[0][0], specs[1][0], specs[2][0]
    finally:
        for name, _ in specs:
            c.delete_table(TableName=name)


NOT_FOUND_P = _invalid("Key column p not found")


def test_key_checks_in_single_item_operations(shared: Cluster) -> None:
    with _tables(shared, "keychk") as (ts, tn, tsn):
        cases: list[tuple[str, dict[str, Any], tuple[int, str, str]]] = [
            # A missing key column (hash key before range key).
            ("GetItem", {"TableName": ts, "Key": {}}, NOT_FOUND_P),
            ("GetItem", {"TableName": ts, "Key": {"q": {"S": "a"}}}, NOT_FOUND_P),
            ("GetItem", {"TableName": tsn, "Key": {"c": {"N": 5}}}, NOT_FOUND_P),
            (
                "GetItem",
                {"TableName": tsn, "Key": {"p": {"S": "a"}}},
                _invalid("Key column c not found"),
            ),
            # Malformed value objects: a JSON number, not an object, two members, no string.
            (
                "GetItem",
                {"TableName": tn, "Key": {"p": {"N": 5}}},
                _invalid('Malformed value object for key column p: {"N":5}'),
            ),
            (
                "GetItem",
                {"TableName": ts, "Key": {"p": "x"}},
                _invalid('Malformed value object for key column p: "x"'),
            ),
            (
                "DeleteItem",
                {"TableName": ts, "Key": {"p": {"S": "a", "N": "1"}}},
                _invalid('Malformed value object for key column p: {"S":"a","N":"1"}'),
            ),
            (
                "UpdateItem",
                {
                    "TableName": tsn,
                    "Key": {"p": {"S": "a"}, "c": {"N": ["1"]}},
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": {"S": "x"}},
                },
                _invalid('Malformed value object for key column c: {"N":["1"]}'),
            ),
            # The wrong type.
            (
                "GetItem",
                {"TableName": ts, "Key": {"p": {"N": "1"}}},
                _invalid("Type mismatch: expected type S for key column p, got type N"),
            ),
            (
                "DeleteItem",
                {"TableName": tn, "Key": {"p": {"B": "AAE="}}},
                _invalid("Type mismatch: expected type N for key column p, got type B"),
            ),
            # An empty string, and a number key out of range (parse_and_validate_number).
            (
                "UpdateItem",
                {"TableName": ts, "Key": {"p": {"S": ""}}, "UpdateExpression": "REMOVE v"},
                _invalid(
                    "The AttributeValue for a key attribute cannot contain an empty string "
                    "value. Key: p"
                ),
            ),
            (
                "GetItem",
                {"TableName": tn, "Key": {"p": {"N": "1e126"}}},
                _invalid(
                    "Number overflow: 1e126. Attempting to store a number with magnitude "
                    "larger than supported range."
                ),
            ),
            # A Key with a member that is no key column (check_key, after the key columns).
            (
                "GetItem",
                {"TableName": ts, "Key": {"p": {"S": "a"}, "x": {"S": "b"}}},
                _invalid("Given key attribute not in schema"),
            ),
            (
                "DeleteItem",
                {"TableName": ts, "Key": {"x": {"N": 5}, "p": {"S": "a"}}},
                _invalid("Given key attribute not in schema"),
            ),
            # PutItem: the key columns of the item come before every attribute's value check.
            (
                "PutItem",
                {"TableName": ts, "Item": {"v": {"N": 5}}},
                NOT_FOUND_P,
            ),
            (
                "PutItem",
                {"TableName": tn, "Item": {"v": {"N": "dog"}, "p": {"N": 5}}},
                _invalid('Malformed value object for key column p: {"N":5}'),
            ),
            (
                "PutItem",
                {"TableName": tsn, "Item": {"p": {"S": "a"}, "c": {"S": "1"}}},
                _invalid("Type mismatch: expected type N for key column c, got type S"),
            ),
        ]
        for operation, body, expected in cases:
            assert _send(shared, operation, body) == expected, (operation, body)
        # Once the key is right, the values are judged as before.
        bad_value = {"TableName": ts, "Item": {"p": {"S": "a"}, "v": {"N": 5}}}
        status, type_, _ = _send(shared, "PutItem", bad_value)
        assert (status, type_) == (400, "SerializationException")
        # An item may hold attributes besides its key (check_key is for Key only).
        fine = {"TableName": tsn, "Item": {"p": {"S": "a"}, "c": {"N": "1"}, "x": {"S": "b"}}}
        assert _send(shared, "PutItem", fine)[0] == 200
        key = {"TableName": tsn, "Key": {"p": {"S": "a"}, "c": {"N": "1"}}}
        assert json.loads(_send(shared, "GetItem", key)[2])["Item"]["x"] == {"S": "b"}


def test_key_checks_in_batches_table_by_table_request_by_request(shared: Cluster) -> None:
    missing = (
        400,
        "ResourceNotFoundException",
        "Requested resource not found: Table: nosuch not found",
    )
    with _tables(shared, "keybatch") as (ts, tn, _tsn):
        get_cases: list[tuple[dict[str, Any], tuple[int, str, str]]] = [
            (
                {ts: {"Keys": [{"p": {"S": "a"}}, {"p": {"N": "1"}}]}},
                _invalid("Type mismatch: expected type S for key column p, got type N"),
            ),
            ({ts: {"Keys": [{"p": {"S": "a"}}, {}]}}, NOT_FOUND_P),
            (
                {ts: {"Keys": [{"p": {"S": "a"}, "q": {"S": "b"}}]}},
                _invalid("Given key attribute not in schema"),
            ),
            # Table by table: a bad key in the first table wins over a missing second table,
            # and a missing first table wins over a bad key in the second.
            ({ts: {"Keys": [{}]}, "nosuch": {"Keys": [{"p": {"S": "a"}}]}}, NOT_FOUND_P),
            ({"nosuch": {"Keys": [{"p": {"S": "a"}}]}, ts: {"Keys": [{}]}}, missing),
            (
                {ts: {"Keys": [{"p": {"S": "a"}}]}, tn: {"Keys": [{"p": {"N": 5}}]}},
                _invalid('Malformed value object for key column p: {"N":5}'),
            ),
        ]
        for items, expected in get_cases:
            assert _send(shared, "BatchGetItem", {"RequestItems": items}) == expected, items
        put_bad_value = {"PutRequest": {"Item": {"p": {"S": "a"}, "v": {"N": 5}}}}
        put_no_key = {"PutRequest": {"Item": {"v": {"S": "x"}}}}
        write_cases: list[tuple[dict[str, Any], tuple[int, str, str]]] = [
            ({ts: [put_no_key]}, NOT_FOUND_P),
            # Request by request: the key check of a request, then its values.
            ({ts: [put_no_key, put_bad_value]}, NOT_FOUND_P),
            (
                {ts: [{"DeleteRequest": {"Key": {"p": {"S": ""}}}}]},
                _invalid(
                    "The AttributeValue for a key attribute cannot contain an empty string "
                    "value. Key: p"
                ),
            ),
            (
                {tn: [{"PutRequest": {"Item": {"p": {"S": "1"}}}}]},
                _invalid("Type mismatch: expected type N for key column p, got type S"),
            ),
            ({ts: [{"PutRequest": {"Item": {"p": {"S": "a"}}}}], "nosuch": [put_no_key]}, missing),
        ]
        for items, expected in write_cases:
            assert _send(shared, "BatchWriteItem", {"RequestItems": items}) == expected, items
        status, type_, _ = _send(
            shared, "BatchWriteItem", {"RequestItems": {ts: [put_bad_value, put_no_key]}}
        )
        assert (status, type_) == (400, "SerializationException")


def test_missing_table_wins_over_a_bad_key(shared: Cluster) -> None:
    message = "Requested resource not found: Table: nosuch not found"
    for operation, body in (
        ("GetItem", {"TableName": "nosuch", "Key": {}}),
        ("PutItem", {"TableName": "nosuch", "Item": {"p": {"N": 5}}}),
        ("DeleteItem", {"TableName": "nosuch", "Key": {"p": {"S": ""}}}),
    ):
        assert _send(shared, operation, body) == (400, "ResourceNotFoundException", message)


def test_a_recreated_table_is_judged_by_its_new_key(shared: Cluster) -> None:
    """The key schema is cached; a table re-created with another key must not be judged by
    the old one, whichever node saw the change."""
    c = client(shared, shared.nodes[1])
    name = "keyrecreate"
    for key, kind in (("p", "S"), ("k", "N")):
        c.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": kind}],
            BillingMode="PAY_PER_REQUEST",
        )
        try:
            good = {"TableName": name, "Key": {key: {kind: "1"}}}
            assert _send(shared, "GetItem", good, node=0)[0] == 200
            assert _send(shared, "GetItem", good, node=2)[0] == 200
        finally:
            if key == "p":
                c.delete_table(TableName=name)
    try:
        old = {"TableName": name, "Key": {"p": {"S": "1"}}}
        assert _send(shared, "GetItem", old, node=0) == _invalid("Key column k not found")
    finally:
        c.delete_table(TableName=name)


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("GetItem", {"TableName": "nullkeys", "Key": {}}, NOT_FOUND_P),
        (
            "PutItem",
            {"TableName": "nullkeys", "Item": {"p": {"N": "1"}}},
            _invalid("Type mismatch: expected type S for key column p, got type N"),
        ),
        (
            "BatchWriteItem",
            {"RequestItems": {"nullkeys": [{"DeleteRequest": {"Key": {"p": {"S": 5}}}}]}},
            _invalid('Malformed value object for key column p: {"S":5}'),
        ),
    ],
)
def test_the_null_backend_checks_keys_too(
    null_cluster: Cluster, operation: str, body: dict[str, Any], expected: tuple[int, str, str]
) -> None:
    """The null backend accepts anything; the front checks keys against its DescribeTable."""
    c = client(null_cluster, null_cluster.nodes[0])
    with contextlib.suppress(Exception):
        c.create_table(
            TableName="nullkeys",
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    assert _send(null_cluster, operation, body) == expected
    good = {"TableName": "nullkeys", "Key": {"p": {"S": "a"}}}
    assert _send(null_cluster, "GetItem", good)[0] == 200


def test_a_stale_cached_key_schema_is_never_answered(shared: Cluster) -> None:
    """The table is re-created behind the emulator's back (straight on the backend, as another
    process would): a key checked against the cached schema is judged again with a fresh one."""
    name = "keystale"

    def backend(operation: str, body: dict[str, Any]) -> None:
        target = f"DynamoDB_20120810.{operation}"
        status, data = shared.backend.call(operation, target, json.dumps(body).encode())
        assert status == 200, data

    def create(key: str, kind: str) -> None:
        backend(
            "CreateTable",
            {
                "TableName": name,
                "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": key, "AttributeType": kind}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

    create("p", "S")
    try:
        old_key = {"TableName": name, "Key": {"p": {"S": "1"}}}
        new_key = {"TableName": name, "Key": {"k": {"N": "1"}}}
        assert _send(shared, "GetItem", old_key)[0] == 200  # caches p:S
        backend("DeleteTable", {"TableName": name})
        create("k", "N")
        # The cached schema says "Key column p not found"; the fresh one accepts the key.
        assert _send(shared, "GetItem", new_key)[0] == 200
        backend("DeleteTable", {"TableName": name})
        create("p", "S")
        # The cached schema (k:N) refuses the old key; judged again with p:S, it is right.
        assert _send(shared, "GetItem", old_key)[0] == 200
        backend("DeleteTable", {"TableName": name})
        create("k", "N")
        # The cached schema (p:S) accepts this key; the backend refuses it; the fresh schema
        # gives Alternator's answer.
        assert _send(shared, "GetItem", old_key) == _invalid("Key column k not found")
    finally:
        backend("DeleteTable", {"TableName": name})
