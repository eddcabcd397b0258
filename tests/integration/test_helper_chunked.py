"""The sync and async clients against big answers: Alternator streams Query, Scan and
BatchGetItem answers over ~100 KB with ``Transfer-Encoding: chunked``, compressed when asked
(issue 12, item 4).

The emulator's request log records how each answer went out, so these tests prove the client
really met chunked (and compressed) answers, not just that the calls worked.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_helper_support import all_api_entries, create_table, make_helper, module_cluster

USERS = {"chunk-key": "chunk-secret"}
ITEMS = 40
VALUE = "v" * 4000  # 40 items x 4 KB: every full answer is well over 100 KB


cluster = module_cluster(nodes=3, users=USERS, backend="moto")


@pytest.fixture(scope="module")
def table(cluster: Any) -> str:
    items = [{"p": {"S": "k"}, "s": {"N": str(i)}, "v": {"S": VALUE}} for i in range(ITEMS)]
    return create_table(cluster, "chunk", range_key="s", items=items)


def _calls(table: str) -> list[tuple[str, dict[str, Any]]]:
    keys = [{"p": {"S": "k"}, "s": {"N": str(i)}} for i in range(ITEMS)]
    query = {
        "TableName": table,
        "KeyConditionExpression": "p = :p",
        "ExpressionAttributeValues": {":p": {"S": "k"}},
    }
    return [
        ("scan", {"TableName": table}),
        ("query", query),
        ("batch_get_item", {"RequestItems": {table: {"Keys": keys}}}),
    ]


def _check(cluster: Any, table: str, answers: list[Any], response_compression: bool) -> None:
    scan, query, batch = answers
    assert scan["Count"] == ITEMS and query["Count"] == ITEMS
    assert len(batch["Responses"][table]) == ITEMS
    for items in (scan["Items"], query["Items"], batch["Responses"][table]):
        assert all(item["v"]["S"] == VALUE for item in items)
    for operation in ("Scan", "Query", "BatchGetItem"):
        entries = [e for _, e in all_api_entries(cluster, operation)]
        assert len(entries) == 1, operation
        assert entries[0].response_chunked, operation
        if response_compression:
            assert entries[0].response_encoding in ("gzip", "deflate"), operation
        else:
            assert entries[0].response_encoding is None, operation


@pytest.mark.parametrize("response_compression", [False, True])
def test_sync_client_reads_chunked_big_answers(
    cluster: Any, table: str, response_compression: bool
) -> None:
    cluster.clear_logs()
    with make_helper(cluster, response_compression=response_compression) as h:
        ddb = h.new_dynamodb_client()
        answers = [getattr(ddb, name)(**kwargs) for name, kwargs in _calls(table)]
    _check(cluster, table, answers, response_compression)


@pytest.mark.parametrize("response_compression", [False, True])
def test_async_client_reads_chunked_big_answers(
    cluster: Any, table: str, response_compression: bool
) -> None:
    pytest.importorskip("aiobotocore")
    cluster.clear_logs()
    with make_helper(cluster, response_compression=response_compression) as h:

        async def main() -> list[Any]:
            async with h.new_async_dynamodb_client() as ddb:
                return [await getattr(ddb, name)(**kwargs) for name, kwargs in _calls(table)]

        answers = asyncio.run(main())
    _check(cluster, table, answers, response_compression)
