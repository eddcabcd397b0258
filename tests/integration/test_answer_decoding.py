"""Compressed answers through the sync and the async client alike, on the emulator.

``response_compression=True`` asks for gzip/deflate; both transports hand the answer to one
decoder (``alternator_shm._decode``). The emulator injects what no Alternator sends: gzip in
several members, a coding nobody asked for, DynamoDB's ``x-amz-crc32`` right or wrong. The
evidence is the item the call returns and the attempts the nodes logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.exceptions
import pytest
from test_helper_support import all_api_entries, create_table, make_helper, module_cluster

from alternator_shm import Helper
from alternator_shm.errors import UndecodableAnswerError

USERS = {"decode-key": "decode-secret"}
ITEM = {"p": {"S": "k"}, "v": {"S": "x" * 6000}}  # over the 4096-byte compression threshold
KEY = {"p": {"S": "k"}}
MODES = ["sync", "async"]


# Two nodes: a fault injected once on each is met by two attempts, the third succeeds
# within the default 3 attempts.
cluster = module_cluster(nodes=2, users=USERS, backend="moto")
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture(scope="module")
def table(cluster: Any) -> str:
    return create_table(cluster, "decode", items=[ITEM])


def _get_item(h: Helper, mode: str, table: str) -> Any:
    if mode == "sync":
        return h.new_dynamodb_client().get_item(TableName=table, Key=KEY)

    async def main() -> Any:
        async with h.new_async_dynamodb_client() as ddb:
            return await ddb.get_item(TableName=table, Key=KEY)

    return asyncio.run(main())


def _attempts(cluster: Any) -> list[Any]:
    return [e for _, e in all_api_entries(cluster, "GetItem")]


def _attempt_nodes(cluster: Any) -> list[str]:
    return [n.url for n, _ in all_api_entries(cluster, "GetItem")]


def _inject(cluster: Any, kind: str, count: int | None = None) -> None:
    for node in cluster.nodes:
        node.inject_fault(kind, count=count)


@pytest.mark.parametrize("mode", MODES)
def test_multi_member_gzip_answer_is_decoded_whole(cluster: Any, table: str, mode: str) -> None:
    # The sync client used to decode the first member only: a third of the JSON, which
    # botocore's parser turns into {"message": ...}, a GetItem answer without its Item.
    _inject(cluster, "answer_gzip_members")
    with make_helper(cluster, response_compression=True) as h:
        answer = _get_item(h, mode, table)
    assert answer["Item"] == ITEM
    attempts = _attempts(cluster)
    assert [e.response_encoding for e in attempts] == ["gzip"]


@pytest.mark.parametrize("mode", MODES)
def test_unknown_encoding_is_retried_then_refused(cluster: Any, table: str, mode: str) -> None:
    # A coding we did not ask for cannot be parsed: the attempt fails (retried, on the other
    # node), never handed to botocore as JSON (the sync client used to pass it through).
    _inject(cluster, "answer_unknown_encoding", count=1)
    with make_helper(cluster, response_compression=True) as h:
        assert _get_item(h, mode, table)["Item"] == ITEM
        attempts = _attempts(cluster)
        assert [e.response_encoding for e in attempts] == ["bzip2", "bzip2", "gzip"]
        cluster.clear_logs()
        _inject(cluster, "answer_unknown_encoding")  # every attempt, every node
        with pytest.raises(UndecodableAnswerError, match="bzip2") as caught:
            _get_item(h, mode, table)
    assert isinstance(caught.value, botocore.exceptions.ConnectionClosedError)
    assert len(_attempts(cluster)) == 3  # the default total_max_attempts


@pytest.mark.parametrize("mode", MODES)
def test_crc32_of_a_compressed_answer(cluster: Any, table: str, mode: str) -> None:
    # DynamoDB's checksum covers the compressed bytes: a right one is one attempt (checked and
    # dropped), a wrong one is retried as botocore retries any checksum mismatch.
    _inject(cluster, "answer_crc32")
    with make_helper(cluster, response_compression=True) as h:
        assert _get_item(h, mode, table)["Item"] == ITEM
        assert [e.response_encoding for e in _attempts(cluster)] == ["gzip"]
        for node in cluster.nodes:
            node.clear_faults()
        cluster.clear_logs()
        _inject(cluster, "answer_bad_crc32", count=1)
        assert _get_item(h, mode, table)["Item"] == ITEM
    nodes = _attempt_nodes(cluster)
    assert len(nodes) == 3 and len(set(nodes[:2])) == 2  # one bad answer per node
