"""Number range checks on expression values, and number sets, as Alternator does them.

Where each expectation comes from (scylladb/scylladb, alternator/serialization.cc):
``parse_and_validate_number`` holds the range checks (``Number overflow: <n>. …``); it runs
when a top-level ``N`` value is stored (``serialize_item``) and in ``unwrap_number``, which
``number_add``/``number_subtract`` call for ``+``, ``-`` and ``ADD``. So an UpdateExpression's
``:value`` is range-checked when the update stores it as an attribute, adds or subtracts it,
not when it is only compared for equality or stored inside a map (the map is kept as JSON).
Number sets: executor.cc ``validate_value`` only checks that ``NS`` is a non-empty array, and
``serialize_item`` stores every type other than S, B, BOOL and N as its JSON text, so Alternator
never parses the elements of a number set: ``{"NS": ["dog"]}`` is stored. Before this file the
emulator range-checked no expression value (moto stored ``1e126``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _emulator_helpers import error_of, fresh_table, post, signed_headers

from alternator_shm.emulator import Cluster

VALIDATION = "ValidationException"


def _send(cluster: Cluster, operation: str, body: dict[str, Any]) -> tuple[int, str, str]:
    raw = json.dumps(body).encode()
    node = cluster.nodes[0]
    resp = post(node, raw, signed_headers(node, operation, raw), timeout=30)
    if resp.status == 200:
        return 200, "", resp.data.decode()
    return error_of(resp)


def _update(table: str, expression: str, values: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": {"p": {"S": "a"}},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": values,
        **more,
    }


OVERFLOW = (
    "Number overflow: 1e126. Attempting to store a number with magnitude larger than "
    "supported range."
)
UNDERFLOW = (
    "Number underflow: -1e-131. Attempting to store a number with magnitude lower than "
    "supported range."
)
PRECISE = (
    "Number too precise: 1.234567890123456789012345678901234567891. Attempting to store a "
    "number with more significant digits than supported."
)
TOO_PRECISE = "1.234567890123456789012345678901234567891"


def test_update_values_alternator_evaluates_are_range_checked(shared: Cluster) -> None:
    t = "exprrange"
    with fresh_table(shared, t):
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("SET v = :v", {":v": {"N": "1e126"}}, OVERFLOW),
            ("set v = :v, w = :w", {":v": {"N": "1"}, ":w": {"N": "-1e-131"}}, UNDERFLOW),
            ("SET v = :a + :b", {":a": {"N": "1"}, ":b": {"N": "1e126"}}, OVERFLOW),
            ("SET v = :a - :b", {":a": {"N": TOO_PRECISE}, ":b": {"N": "1"}}, PRECISE),
            ("ADD n :v", {":v": {"N": "-1e-131"}}, UNDERFLOW),
            ("SET #v = :v", {":v": {"N": "1e126"}}, OVERFLOW),
        ]
        for expression, values, message in cases:
            more: dict[str, Any] = {}
            if "#v" in expression:
                more["ExpressionAttributeNames"] = {"#v": "v"}
            body = _update(t, expression, values, **more)
            assert _send(shared, "UpdateItem", body) == (400, VALIDATION, message), expression
        # In range, the same updates work.
        for expression, values in (
            ("SET v = :v", {":v": {"N": "9.99e125"}}),
            ("SET v = :a + :b ADD n :a", {":a": {"N": "1"}, ":b": {"N": "2.5"}}),
        ):
            assert _send(shared, "UpdateItem", _update(t, expression, values))[0] == 200


def test_values_alternator_does_not_evaluate_are_not_range_checked(
    shared: Cluster, storage_backend: str
) -> None:
    if storage_backend != "moto":
        pytest.skip("DynamoDB Local range-checks every number itself (DynamoDB's rules)")
    t = "exprnorange"
    with fresh_table(shared, t):
        assert (
            _send(shared, "PutItem", {"TableName": t, "Item": {"p": {"S": "a"}, "m": {"M": {}}}})[0]
            == 200
        )
        fine: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            # Only compared as JSON (check_EQ), never parsed.
            (
                "SET v = :v",
                {":v": {"N": "1"}, ":w": {"N": "1e126"}},
                {"ConditionExpression": ":w = :w"},
            ),
            # Stored inside a map, which Alternator keeps as JSON text.
            ("SET m.x = :v", {":v": {"N": "1e126"}}, {}),
            ("SET v = :v", {":v": {"M": {"x": {"N": "1e126"}}}}, {}),
        ]
        for expression, values, more in fine:
            body = _update(t, expression, values, **more)
            assert _send(shared, "UpdateItem", body)[0] == 200, (expression, values)
        # Numbers nested in an item's map or list: stored as JSON, never range-checked.
        nested = {"m": {"M": {"x": {"N": "1e126"}}}, "l": {"L": [{"N": TOO_PRECISE}]}}
        item = {"p": {"S": "b"}, **nested}
        assert _send(shared, "PutItem", {"TableName": t, "Item": item})[0] == 200
        batch = {"RequestItems": {t: [{"PutRequest": {"Item": {**item, "p": {"S": "c"}}}}]}}
        assert _send(shared, "BatchWriteItem", batch)[0] == 200
        # ... while the same numbers as top-level attributes are.
        item = {"p": {"S": "b"}, "m": {"N": "1e126"}}
        assert _send(shared, "PutItem", {"TableName": t, "Item": item}) == (
            400,
            VALIDATION,
            OVERFLOW,
        )


def _number_sets_are_stored(cluster: Cluster, table: str) -> None:
    t = table
    with fresh_table(cluster, t):
        for elements in (["dog"], ["1e126", "1"], [TOO_PRECISE], [" 1"]):
            item = {"p": {"S": "a"}, "s": {"NS": elements}}
            assert _send(cluster, "PutItem", {"TableName": t, "Item": item})[0] == 200, elements
            body = _update(t, "SET s = :s", {":s": {"NS": elements}})
            assert _send(cluster, "UpdateItem", body)[0] == 200, elements


def test_number_set_elements_are_not_parsed(shared: Cluster, storage_backend: str) -> None:
    """Alternator stores a number set as JSON without parsing its elements; the emulator's
    front must not refuse what Alternator stores (moto stores it too)."""
    if storage_backend != "moto":
        pytest.skip("DynamoDB Local parses number-set elements itself (DynamoDB's rules)")
    _number_sets_are_stored(shared, "nsraw")


def test_number_set_elements_are_not_parsed_null_backend(null_cluster: Cluster) -> None:
    _number_sets_are_stored(null_cluster, "nsrawnull")


@pytest.mark.parametrize(
    ("expression", "evaluated"),
    [
        ("SET a = :v", {":v"}),
        ("set a=:v, b = :w + :x", {":v", ":w", ":x"}),
        ("SET a.b = :v", set()),  # stored inside a map: kept as JSON
        ("SET a[1] = :v", set()),
        ("SET a = if_not_exists(b, :v)", set()),  # depends on the item
        ("SET a = if_not_exists(b, :v) + :w", {":w"}),
        ("SET a.b = b - :v", {":v"}),  # arithmetic, wherever it is stored
        ("ADD a :v SET b = :w", {":v", ":w"}),
        ("SET a = list_append(a, :l) REMOVE c", set()),
        ("DELETE s :v", set()),
        ("SET a = :v $", set()),  # not followed: nothing is claimed
    ],
)
def test_which_update_values_are_evaluated(expression: str, evaluated: set[str]) -> None:
    from alternator_shm.emulator._updates import evaluated_numbers

    assert evaluated_numbers(expression) == evaluated
