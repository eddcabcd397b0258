"""POST / in Alternator's order: limits, allow-list, JSON checks, compression (§3-4)."""

from __future__ import annotations

import gzip
import json
import zlib

import botocore.exceptions
import pytest
from _emulator_helpers import SECRET, USER, client, create_table, error_of, post, signed_headers

from alternator_shm.emulator import Cluster


def test_transactions_are_unknown_operations(shared: Cluster) -> None:
    c = client(shared, shared.nodes[0])
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.transact_write_items(
            TransactItems=[{"Put": {"TableName": "tbl", "Item": {"p": {"S": "x"}}}}]
        )
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert info.value.response["Error"]["Message"] == "Unsupported operation TransactWriteItems"


def test_forward_transactions_opt_in() -> None:
    with Cluster(nodes=1, backend="null", forward_transactions=True) as cluster:
        headers = {"X-Amz-Target": "DynamoDB_20120810.TransactWriteItems"}
        assert post(cluster.nodes[0], b'{"TransactItems":[]}', headers).status == 200


def test_json_checks(shared: Cluster) -> None:
    node = shared.nodes[0]
    for body, message in ((b"{not json", "Parsing JSON failed"), (b"[]", "Request content must")):
        status, type_, text = error_of(post(node, body, signed_headers(node, "ListTables", body)))
        assert (status, type_) == (400, "ValidationException")
        assert text.startswith(message)


def test_describe_endpoints_from_host(shared: Cluster) -> None:
    node = shared.nodes[2]
    body = b"{}"
    headers = signed_headers(node, "DescribeEndpoints", body, extra={"Host": "lb.example:8000"})
    resp = post(node, body, headers)
    assert json.loads(resp.data) == {
        "Endpoints": [{"Address": "lb.example:8000", "CachePeriodInMinutes": 1440}]
    }


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_signed_over_compressed_bytes(shared: Cluster, encoding: str) -> None:
    node = shared.nodes[0]
    raw = b'{"Limit": 5}'
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    headers = signed_headers(node, "ListTables", body, extra={"Content-Encoding": encoding})
    node.clear_log()
    resp = post(node, body, headers)
    assert resp.status == 200, resp.data
    assert "TableNames" in json.loads(resp.data)
    assert node.log[-1].body_bytes == len(body)


def test_boto3_request_compression(shared: Cluster) -> None:
    from botocore.config import Config

    node = shared.nodes[0]
    import boto3

    c = boto3.client(
        "dynamodb",
        endpoint_url=node.url,
        region_name="us-east-1",
        aws_access_key_id=USER,
        aws_secret_access_key=SECRET,
        config=Config(request_min_compression_size_bytes=1, retries={"max_attempts": 1}),
    )
    assert "TableNames" in c.list_tables()


@pytest.mark.parametrize(
    ("encoding", "body"), [("gzip", b"not gzip"), ("gzip", b""), ("zstd", b"{}")]
)
def test_bad_or_unsupported_encoding_is_500(shared: Cluster, encoding: str, body: bytes) -> None:
    node = shared.nodes[0]
    headers = signed_headers(node, "ListTables", body, extra={"Content-Encoding": encoding})
    assert error_of(post(node, body, headers))[:2] == (500, "InternalServerError")


def test_truncated_gzip_is_500(shared: Cluster) -> None:
    node = shared.nodes[0]
    body = gzip.compress(b'{"Limit": 5}')[:-6]
    headers = signed_headers(node, "ListTables", body, extra={"Content-Encoding": "gzip"})
    assert error_of(post(node, body, headers)) == (
        500,
        "InternalServerError",
        "Internal server error: Truncated gzip in request body",
    )


def test_response_compression_threshold(null_cluster: Cluster) -> None:
    node = null_cluster.nodes[0]
    big = {"TableName": "t" * 5000}  # DescribeTable echoes the name: > 4096 bytes
    body = json.dumps(big).encode()
    headers = signed_headers(node, "DescribeTable", body, extra={"Accept-Encoding": "gzip"})
    resp = post(node, body, headers, decode_content=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(resp.data))["Table"]["TableName"] == "t" * 5000
    small = b'{"TableName": "tbl"}'
    headers = signed_headers(node, "DescribeTable", small, extra={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in post(node, small, headers).headers
    headers = signed_headers(node, "DescribeTable", body, extra={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in post(node, body, headers).headers


def test_oversized_body_is_413(null_cluster: Cluster) -> None:
    node = null_cluster.nodes[0]
    body = b" " * (16 * 1024 * 1024 + 1)
    resp = post(node, body, {"X-Amz-Target": "DynamoDB_20120810.ListTables"})
    assert error_of(resp)[:2] == (413, "PayloadTooLarge")


def test_null_backend_minimal_answers(null_cluster: Cluster) -> None:
    c = client(null_cluster, null_cluster.nodes[1])
    create_table(c, "nulltbl")
    assert c.describe_table(TableName="nulltbl")["Table"]["TableStatus"] == "ACTIVE"
    c.get_waiter("table_exists").wait(TableName="nulltbl")
    assert c.put_item(TableName="nulltbl", Item={"p": {"S": "a"}})["ResponseMetadata"]
    assert "Item" not in c.get_item(TableName="nulltbl", Key={"p": {"S": "a"}})
    assert c.scan(TableName="nulltbl")["Items"] == []
    assert (
        c.batch_write_item(RequestItems={"nulltbl": [{"PutRequest": {"Item": {"p": {"S": "b"}}}}]})[
            "UnprocessedItems"
        ]
        == {}
    )
