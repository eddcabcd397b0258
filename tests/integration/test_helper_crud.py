"""CRUD, retries and compression through a 5-node emulated cluster with real storage (moto).

Authorization is enforced, so every request also proves that the node was chosen before
signing (a signature over another node's Host would be rejected).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from boto3.dynamodb.conditions import Key
from botocore.config import Config
from botocore.exceptions import ClientError
from test_helper_support import (
    all_api_entries,
    api_counts,
    cluster_credentials,
    create_table,
    header,
    make_helper,
    module_cluster,
)

USERS = {"crud-key": "crud-secret"}


cluster = module_cluster(nodes=5, users=USERS, backend="moto")
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture(scope="module")
def table(cluster: Any) -> str:
    """A hash+range table shared by the read-mostly tests of this module."""
    return create_table(cluster, "crud", range_key="s")


def _assert_all_authenticated_and_spread(cluster: Any) -> None:
    pairs = all_api_entries(cluster)
    assert pairs, "no API request reached the cluster"
    for node, entry in pairs:
        assert entry.auth_ok is True, (node.url, entry)
        # Routed before signing: the signature covers the node actually contacted.
        assert entry.signed_host == node.url.split("://", 1)[1].rstrip("/")
    counts = api_counts(cluster)
    assert all(count > 0 for count in counts.values()), counts


def test_client_crud(cluster: Any) -> None:
    name = f"cli_{uuid.uuid4().hex[:8]}"
    with make_helper(cluster) as h:
        ddb = h.new_dynamodb_client()
        ddb.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "p", "KeyType": "HASH"},
                {"AttributeName": "s", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "p", "AttributeType": "S"},
                {"AttributeName": "s", "AttributeType": "N"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        assert name in ddb.list_tables()["TableNames"]
        for i in range(6):
            ddb.put_item(
                TableName=name, Item={"p": {"S": "a"}, "s": {"N": str(i)}, "v": {"S": f"value-{i}"}}
            )
        got = ddb.get_item(TableName=name, Key={"p": {"S": "a"}, "s": {"N": "3"}})
        assert got["Item"]["v"] == {"S": "value-3"}
        ddb.update_item(
            TableName=name,
            Key={"p": {"S": "a"}, "s": {"N": "3"}},
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"S": "changed"}},
        )
        got = ddb.get_item(
            TableName=name, Key={"p": {"S": "a"}, "s": {"N": "3"}}, ConsistentRead=True
        )
        assert got["Item"]["v"] == {"S": "changed"}
        query = ddb.query(
            TableName=name,
            KeyConditionExpression="p = :p AND s >= :s",
            ExpressionAttributeValues={":p": {"S": "a"}, ":s": {"N": "2"}},
        )
        assert [int(item["s"]["N"]) for item in query["Items"]] == [2, 3, 4, 5]
        ddb.delete_item(TableName=name, Key={"p": {"S": "a"}, "s": {"N": "0"}})
        assert ddb.scan(TableName=name)["Count"] == 5
        ddb.delete_table(TableName=name)
        assert name not in ddb.list_tables()["TableNames"]
    _assert_all_authenticated_and_spread(cluster)


def test_resource_crud(cluster: Any, table: str) -> None:
    with make_helper(cluster) as h:
        tbl = h.new_dynamodb_resource().Table(table)
        with tbl.batch_writer() as batch:
            for i in range(8):
                batch.put_item(Item={"p": "res", "s": i, "v": f"v{i}"})
        assert tbl.get_item(Key={"p": "res", "s": 5})["Item"]["v"] == "v5"
        tbl.update_item(
            Key={"p": "res", "s": 5},
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": "new"},
        )
        items = tbl.query(KeyConditionExpression=Key("p").eq("res"))["Items"]
        assert len(items) == 8
        assert {item["v"] for item in items if item["s"] == 5} == {"new"}
        tbl.delete_item(Key={"p": "res", "s": 0})
        assert "Item" not in tbl.get_item(Key={"p": "res", "s": 0})
        for _ in range(5):  # make sure every node saw at least one request
            tbl.get_item(Key={"p": "res", "s": 1})
    _assert_all_authenticated_and_spread(cluster)


def test_each_attempt_goes_to_a_different_node(cluster: Any, table: str) -> None:
    """Two nodes answer 500: the call still succeeds, on the third node it tried."""
    by_url = {n.url.rstrip("/"): n for n in cluster.nodes}
    config = Config(retries={"mode": "standard", "max_attempts": 5})
    with make_helper(cluster, botocore_config=config) as h:
        ddb = h.new_dynamodb_client()
        nodes = h.live_nodes()
        assert sorted(nodes) == sorted(by_url)
        # The next first attempt goes to the node after this one in the shared table.
        i = nodes.index(h.next_node())
        failing = [nodes[(i + 1) % 5], nodes[(i + 2) % 5]]
        for url in failing:
            by_url[url].inject_fault("internal_error")
        cluster.clear_logs()
        got = ddb.get_item(TableName=table, Key={"p": {"S": "none"}, "s": {"N": "0"}})
        assert got["ResponseMetadata"]["RetryAttempts"] == 2
        pairs = all_api_entries(cluster, "GetItem")
        assert [n.url.rstrip("/") for n, _ in pairs] == [*failing, nodes[(i + 3) % 5]]
        assert [e.status for _, e in pairs] == [500, 500, 200]
        # (Injected faults answer before the signature check, like Alternator's shedding.)
        assert pairs[-1][1].auth_ok is True
        # A 5xx is the node answering: not a health failure, nobody quarantines it.
        per_node = h.stats().per_node
        assert not any(per_node[url].quarantined for url in failing)


@pytest.mark.parametrize(
    ("retries", "attempts"),
    [
        (None, 3),  # the Helper's default: three attempts, three nodes
        ({"total_max_attempts": 2}, 2),
        ({"max_attempts": 1}, 2),  # botocore: max_attempts counts retries
        ({"total_max_attempts": 4, "mode": "legacy"}, 4),
    ],
    ids=["default", "total-2", "retries-1", "legacy-total-4"],
)
def test_botocore_config_retries_are_honoured(
    cluster: Any, table: str, retries: dict[str, Any] | None, attempts: int
) -> None:
    for node in cluster.nodes:
        node.inject_fault("internal_error")
    config = Config(retries=retries, connect_timeout=3) if retries else None
    with make_helper(cluster, botocore_config=config) as h:
        ddb = h.new_dynamodb_client()
        with pytest.raises(ClientError) as info:
            ddb.get_item(TableName=table, Key={"p": {"S": "x"}, "s": {"N": "1"}})
        assert info.value.response["Error"]["Code"] == "InternalServerError"
    pairs = all_api_entries(cluster, "GetItem")
    assert len(pairs) == attempts
    assert len({n.url for n, _ in pairs}) == attempts  # each on its own node


def test_client_kwargs_config_is_merged(cluster: Any, table: str) -> None:
    """A Config passed to new_dynamodb_client itself also reaches botocore."""
    for node in cluster.nodes:
        node.inject_fault("internal_error")
    with make_helper(cluster) as h:
        ddb = h.new_dynamodb_client(config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(ClientError):
            ddb.get_item(TableName=table, Key={"p": {"S": "x"}, "s": {"N": "1"}})
        assert ddb.meta.config.retries["mode"] == "standard"  # ours, kept under the user's
    assert len(all_api_entries(cluster, "GetItem")) == 1


def test_request_compression(cluster: Any, table: str) -> None:
    """Bodies at or above the threshold are gzipped before signing; smaller ones are not."""
    big = "alternator " * 2000  # ~22 kB, compresses very well
    with make_helper(cluster, request_compression=1024) as h:
        ddb = h.new_dynamodb_client()
        ddb.put_item(TableName=table, Item={"p": {"S": "gz"}, "s": {"N": "1"}, "v": {"S": big}})
        ddb.get_item(TableName=table, Key={"p": {"S": "gz"}, "s": {"N": "1"}})  # small body
        got = ddb.get_item(
            TableName=table, Key={"p": {"S": "gz"}, "s": {"N": "1"}}, ConsistentRead=True
        )
        assert got["Item"]["v"]["S"] == big
    (put,) = [e for _, e in all_api_entries(cluster, "PutItem")]
    assert header(put, "Content-Encoding") == "gzip"
    assert put.body_bytes < 2000
    assert put.auth_ok is True
    for _, get in all_api_entries(cluster, "GetItem"):
        assert header(get, "Content-Encoding") is None
        assert get.auth_ok is True

    cluster.clear_logs()
    with make_helper(cluster) as h:  # default: no request compression
        h.new_dynamodb_client().put_item(
            TableName=table, Item={"p": {"S": "gz"}, "s": {"N": "2"}, "v": {"S": big}}
        )
    (put,) = [e for _, e in all_api_entries(cluster, "PutItem")]
    assert header(put, "Content-Encoding") is None
    assert put.body_bytes > len(big)


def test_response_compression(cluster: Any, table: str) -> None:
    """Large answers come back compressed on request and are decoded transparently."""
    big = "".join(f"{i:05d}-alternator-" for i in range(2000))  # ~32 kB
    key = {"p": {"S": "resp"}, "s": {"N": "1"}}
    with make_helper(cluster, response_compression=True) as h:
        ddb = h.new_dynamodb_client()
        ddb.put_item(TableName=table, Item={**key, "v": {"S": big}})
        got = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)
        assert got["Item"]["v"]["S"] == big
    for _, entry in all_api_entries(cluster):
        accept = (header(entry, "Accept-Encoding") or "").lower()
        assert "gzip" in accept, entry.headers

    cluster.clear_logs()
    with make_helper(cluster) as h:
        got = h.new_dynamodb_client().get_item(TableName=table, Key=key, ConsistentRead=True)
        assert got["Item"]["v"]["S"] == big
    for _, entry in all_api_entries(cluster):
        assert "gzip" not in (header(entry, "Accept-Encoding") or "").lower()


def test_wrong_secret_is_rejected(cluster: Any, table: str) -> None:
    """Authorization really is enforced by this cluster (so the tests above mean something)."""
    key, _ = cluster_credentials(cluster)
    with (
        make_helper(cluster, credentials=(key, "not-the-secret")) as h,
        pytest.raises(ClientError) as info,
    ):
        h.new_dynamodb_client().get_item(TableName=table, Key={"p": {"S": "x"}, "s": {"N": "1"}})
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert all(e.auth_ok is False for _, e in all_api_entries(cluster))
