"""Client-visible details where the emulator must answer exactly like Alternator (issue 12).

Every test talks to the emulator alone, over plain HTTP (http.client / raw sockets) or boto3.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import ssl
import zlib
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from _emulator_helpers import SECRET, USER, client, error_of, fresh_table, post, signed_headers

from alternator_shm.emulator import Cluster, Node

EXPOSE = "x-amzn-RequestId,x-amzn-ErrorType,x-amzn-ErrorMessage,Date"


def _raw(
    node: Node,
    operation: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    *,
    sign: bool = True,
) -> tuple[http.client.HTTPResponse, bytes]:
    """POST / with http.client, allowing repeated header lines; returns (response, raw body)."""
    base = signed_headers(node, operation, body) if sign else {}
    base.setdefault("X-Amz-Target", f"DynamoDB_20120810.{operation}")
    conn = http.client.HTTPConnection(node.ip, node.port, timeout=30)
    conn.putrequest("POST", "/", skip_accept_encoding=True)
    for name, value in base.items():
        if name.lower() != "host":
            conn.putheader(name, value)
    for name, value in headers or []:
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()  # http.client undoes the chunking, not the compression
    conn.close()
    return resp, data


def _nested(depth: int) -> bytes:
    """An object whose innermost array sits ``depth`` containers deep (the object counts)."""
    return b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


# ---------------------------------------------------------------- 1. JSON nesting


@pytest.mark.parametrize("depth", [79, 1000, 200_000])
def test_json_nested_deeper_than_78_is_a_validation_error(
    null_cluster: Cluster, depth: int
) -> None:
    node = null_cluster.nodes[0]
    body = _nested(depth)
    resp, data = _raw(node, "ListTables", body)
    assert resp.status == 400
    assert json.loads(data) == {
        "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
        "message": "Max nested level reached: 78",
    }


def test_json_nested_78_levels_is_accepted(null_cluster: Cluster) -> None:
    resp, data = _raw(null_cluster.nodes[0], "ListTables", _nested(78))
    assert resp.status == 200, data


def test_depth_error_comes_in_stream_order(null_cluster: Cluster) -> None:
    node = null_cluster.nodes[0]
    # A syntax error before the depth is reached wins; one after it does not.
    early = b'{"a" 1, "x":' + b"[" * 100
    late = b'{"x":' + b"[" * 100 + b" nonsense"
    assert json.loads(_raw(node, "ListTables", early)[1])["message"].startswith(
        "Parsing JSON failed: Missing a colon"
    )
    assert json.loads(_raw(node, "ListTables", late)[1])["message"] == (
        "Max nested level reached: 78"
    )


# ---------------------------------------------------------------- 2. deflate


def test_deflate_body_of_two_concatenated_zlib_streams(null_cluster: Cluster) -> None:
    node = null_cluster.nodes[0]
    body = zlib.compress(b'{"Limit"') + zlib.compress(b": 5}")
    headers = signed_headers(node, "ListTables", body, extra={"Content-Encoding": "deflate"})
    resp = post(node, body, headers)
    assert resp.status == 200, resp.data
    assert "TableNames" in json.loads(resp.data)


def test_deflate_trailing_garbage_is_500(null_cluster: Cluster) -> None:
    node = null_cluster.nodes[0]
    body = zlib.compress(b"{}") + b"junk"
    headers = signed_headers(node, "ListTables", body, extra={"Content-Encoding": "deflate"})
    assert error_of(post(node, body, headers))[:2] == (500, "InternalServerError")


# ---------------------------------------------------------------- 3. Accept-Encoding


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["deflate, gzip"], "deflate"),  # equal q: the first listed wins
        (["gzip;q=1, deflate;q=7"], "gzip"),  # q clamped to 1: a tie, first wins
        (["deflate;q=0.5;q=0.1, gzip;q=0.3"], "deflate"),  # the first q= of an entry counts
        (["deflate;q=abc, gzip;q=0.5"], "deflate"),  # a malformed q is ignored (q stays 1)
        (["deflate;q=1_0, gzip;q=0.5"], "deflate"),  # from_chars syntax, not Python's float
        (["identity", "gzip"], "gzip"),  # several header lines are one list
        (["*;q=0.5, gzip;q=0.5"], "gzip"),  # an explicit encoding beats * on a tie
        (["gzip;q=0, *"], "deflate"),  # * picks an encoding not mentioned
        (["gzip;q=0, deflate;q=0"], None),
        (["gzip;q=-1"], None),  # clamped to 0
        (["br, zstd"], None),
    ],
)
def test_accept_encoding_negotiation(
    null_cluster: Cluster, lines: list[str], expected: str | None
) -> None:
    node = null_cluster.nodes[0]
    body = json.dumps({"TableName": "t" * 5000}).encode()  # DescribeTable echoes it: > 4 KB
    resp, data = _raw(node, "DescribeTable", body, [("Accept-Encoding", v) for v in lines])
    assert resp.status == 200
    assert resp.getheader("Content-Encoding") == expected
    if expected == "gzip":
        data = gzip.decompress(data)
    elif expected == "deflate":
        data = zlib.decompress(data)
    assert json.loads(data)["Table"]["TableName"] == "t" * 5000


# ---------------------------------------------------------------- 4. chunked answers


@pytest.fixture(scope="module")
def big_table(shared: Cluster) -> Iterator[str]:
    """About 180 KB of items in one partition (so Query, Scan and BatchGetItem are big)."""
    c = client(shared, shared.nodes[0], read_timeout=60)
    name = "bigtbl"
    c.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "p", "KeyType": "HASH"},
            {"AttributeName": "c", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "p", "AttributeType": "S"},
            {"AttributeName": "c", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    c.get_waiter("table_exists").wait(TableName=name)
    for i in range(45):
        c.put_item(
            TableName=name, Item={"p": {"S": "k"}, "c": {"N": str(i)}, "v": {"S": "x" * 4000}}
        )
    yield name
    c.delete_table(TableName=name)


def _big_requests(table: str) -> list[tuple[str, dict[str, Any]]]:
    keys = [{"p": {"S": "k"}, "c": {"N": str(i)}} for i in range(45)]
    return [
        ("Scan", {"TableName": table}),
        (
            "Query",
            {
                "TableName": table,
                "KeyConditionExpression": "p = :p",
                "ExpressionAttributeValues": {":p": {"S": "k"}},
            },
        ),
        ("BatchGetItem", {"RequestItems": {table: {"Keys": keys}}}),
    ]


@pytest.mark.parametrize("accept", [None, "gzip", "deflate"])
def test_big_answers_are_chunked(shared: Cluster, big_table: str, accept: str | None) -> None:
    node = shared.nodes[1]
    for operation, request in _big_requests(big_table):
        body = json.dumps(request).encode()
        extra = [("Accept-Encoding", accept)] if accept else []
        resp, data = _raw(node, operation, body, extra)
        assert resp.status == 200, data
        assert resp.getheader("Transfer-Encoding") == "chunked", operation
        assert resp.getheader("Content-Length") is None
        assert resp.getheader("Content-Encoding") == accept
        if accept == "gzip":
            data = gzip.decompress(data)
        elif accept == "deflate":
            data = zlib.decompress(data)
        assert len(data) > 100_000
        answer = json.loads(data)
        items = answer["Items"] if "Items" in answer else answer["Responses"][big_table]
        assert len(items) == 45
    # A small answer keeps Content-Length.
    small = json.dumps({"TableName": big_table, "Limit": 1}).encode()
    resp, _ = _raw(node, "Scan", small)
    assert resp.getheader("Transfer-Encoding") is None
    assert resp.getheader("Content-Length") is not None


def test_boto3_reads_chunked_answers(shared: Cluster, big_table: str) -> None:
    c = client(shared, shared.nodes[2], read_timeout=60)
    assert c.scan(TableName=big_table)["Count"] == 45


# ---------------------------------------------------------------- 5. CORS


def test_cors_expose_headers_on_api_health_and_options(null_cluster: Cluster) -> None:
    node = null_cluster.nodes[0]
    resp, _ = _raw(node, "ListTables", b"{}", [("Origin", "http://app.example")])
    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    assert resp.getheader("Access-Control-Expose-Headers") == EXPOSE
    resp, _ = _raw(node, "Bogus", b"{}", [("Origin", "http://app.example")])  # errors too
    assert resp.status == 400 and resp.getheader("Access-Control-Expose-Headers") == EXPOSE
    for method in ("GET", "OPTIONS"):
        conn = http.client.HTTPConnection(node.ip, node.port, timeout=10)
        conn.request(method, "/", headers={"Origin": "http://app.example"})
        got = conn.getresponse()
        got.read()
        conn.close()
        assert got.getheader("Access-Control-Expose-Headers") == EXPOSE, method
    conn = http.client.HTTPConnection(node.ip, node.port, timeout=10)
    conn.request("GET", "/localnodes", headers={"Origin": "http://app.example"})
    got = conn.getresponse()
    got.read()
    conn.close()
    assert got.getheader("Access-Control-Expose-Headers") is None  # no CORS on /localnodes


# ---------------------------------------------------------------- 6. TLS port


def test_plain_http_to_tls_port_gets_a_tls_alert() -> None:
    with Cluster(nodes=1, backend="null", https=True) as cluster:
        node = cluster.nodes[0]
        for request in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"POST / HTTP/1.1\r\n\r\n{}"):
            with socket.create_connection((node.ip, node.port), timeout=10) as sock:
                sock.sendall(request)
                data = b""
                while True:
                    chunk = sock.recv(4096)  # a reset would raise ConnectionResetError
                    if not chunk:
                        break
                    data += chunk
            assert data[:1] == b"\x15"  # TLS record type 21: alert
            assert data[1] == 3 and data[5] == 2  # TLS version 3.x, level fatal
        # TLS itself still works.
        ctx = ssl.create_default_context(cafile=cluster.ca_file)
        conn = http.client.HTTPSConnection(node.ip, node.port, context=ctx, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200


# ---------------------------------------------------------------- 7. error types


def test_number_as_json_number_is_serialization_exception(shared: Cluster) -> None:
    with fresh_table(shared, "numtbl"):
        body = b'{"TableName":"numtbl","Item":{"p":{"S":"a"},"n":{"N":5}}}'
        resp, data = _raw(shared.nodes[0], "PutItem", body)
        assert resp.status == 400
        assert json.loads(data) == {
            "__type": "com.amazonaws.dynamodb.v20120810#SerializationException",
            "message": "PutItem: number value must be encoded as string '{\"N\":5}'",
        }
        # An attribute *named* N is no number.
        named = b'{"TableName":"numtbl","Item":{"p":{"S":"b"},"N":{"M":{"N":{"S":"x"}}}}}'
        assert _raw(shared.nodes[0], "PutItem", named)[0].status == 200


def test_a_repeated_member_name_keeps_its_first_value(shared: Cluster) -> None:
    """rapidjson's FindMember (what Alternator looks members up with) returns the first of
    repeated names; Python's json keeps the last."""
    with fresh_table(shared, "duptbl") as c:
        body = b'{"TableName":"duptbl","Item":{"p":{"S":"k"},"v":{"S":"first"},"v":{"S":"last"}}}'
        assert _raw(shared.nodes[0], "PutItem", body)[0].status == 200
        item = c.get_item(TableName="duptbl", Key={"p": {"S": "k"}})["Item"]
        assert item["v"] == {"S": "first"}


def test_invalid_utf8_in_a_string_fails_at_parse_time(null_cluster: Cluster) -> None:
    body = b'{"TableName":"a\xffb"}'
    resp, data = _raw(null_cluster.nodes[0], "DescribeTable", body)
    assert (resp.status, json.loads(data)) == (
        400,
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
            "message": "Parsing JSON failed: Invalid encoding in string. at 15",
        },
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": "x', "Missing a closing quotation mark in string. at 8"),  # where input ends
        (b"", "The document is empty. at 0"),
        (b"{not json", "Missing a name for object member. at 1"),
        (b'{"a" 1}', "Missing a colon after a name of object member. at 5"),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member. at 8"),
        (b'{"a": [1 2]}', "Missing a comma or ']' after an array element. at 9"),
        (b'{"a": NaN}', "Invalid value. at 6"),
        (b"{} {}", "The document root must not be followed by other values. at 3"),
    ],
)
def test_parse_error_messages_are_rapidjson_like(
    null_cluster: Cluster, body: bytes, message: str
) -> None:
    resp, data = _raw(null_cluster.nodes[0], "ListTables", body)
    error = json.loads(data)
    assert resp.status == 400
    assert error["__type"].endswith("#ValidationException")
    assert error["message"] == f"Parsing JSON failed: {message}"
    assert " at at " not in error["message"]


# ---------------------------------------------------------------- 8. tags


def test_tag_and_untag_answer_an_empty_body(shared: Cluster) -> None:
    if shared.backend_name == "dynamodb-local":
        pytest.skip("DynamoDB Local: 'Tagging is not currently supported in DynamoDB Local.'")
    c = client(shared, shared.nodes[0])
    c.create_table(
        TableName="tagtbl",
        KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        arn = c.describe_table(TableName="tagtbl")["Table"]["TableArn"]
        tag = json.dumps({"ResourceArn": arn, "Tags": [{"Key": "k", "Value": "v"}]}).encode()
        resp, data = _raw(shared.nodes[1], "TagResource", tag)
        assert (resp.status, data) == (200, b"")
        assert resp.getheader("Content-Length") == "0"
        untag = json.dumps({"ResourceArn": arn, "TagKeys": ["k"]}).encode()
        resp, data = _raw(shared.nodes[1], "UntagResource", untag)
        assert (resp.status, data) == (200, b"")
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "b"}])  # boto3 copes
        assert c.list_tags_of_resource(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "b"}]
    finally:
        c.delete_table(TableName="tagtbl")


# ---------------------------------------------------------------- 9. newer servers


def _headers_of(node: Node) -> tuple[dict[str, str], dict[str, str]]:
    ok, _ = _raw(node, "ListTables", b"{}", sign=False)
    err, _ = _raw(node, "DescribeTable", b'{"TableName": "missing"}', sign=False)
    return dict(ok.getheaders()), dict(err.getheaders())


def test_default_profile_sends_no_server_header_but_date_and_content_type() -> None:
    with Cluster(nodes=1, backend="null") as cluster:
        for headers in _headers_of(cluster.nodes[0]):
            assert "Server" not in headers
            assert "Date" in headers
            assert headers["Content-Type"] == "application/x-amz-json-1.0"


def test_date_and_content_type_headers_can_be_switched_off() -> None:
    with Cluster(
        nodes=1, backend="null", disable_date_header=True, disable_content_type_header=True
    ) as cluster:
        for headers in _headers_of(cluster.nodes[0]):
            assert "Date" not in headers and "Content-Type" not in headers
        assert "TableNames" in client(cluster, cluster.nodes[0]).list_tables()


def test_server_header_option_is_sanitized() -> None:
    with Cluster(nodes=1, backend="null", server_header="My\x01Server/1.0") as cluster:
        for headers in _headers_of(cluster.nodes[0]):
            assert headers["Server"] == "MyServer/1.0"
    with Cluster(nodes=1, backend="null", server_header=" ") as cluster:
        assert "Server" not in _headers_of(cluster.nodes[0])[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"profile": "2026.2", "disable_date_header": True},
        {"profile": "2026.1", "server_header": "x"},
        {"profile": "2026.3", "mtls": True, "https": True},
        {"profile": "dev", "mtls": True},  # mTLS is on the HTTPS port only
    ],
)
def test_options_a_version_lacks_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Cluster(nodes=1, backend="null", **kwargs)


@pytest.mark.parametrize("process_per_node", [False, True])
def test_mtls_certificate_replaces_sigv4(process_per_node: bool) -> None:
    with Cluster(
        nodes=1,
        backend="null",
        https=True,
        profile="dev",
        mtls=True,
        users={USER: SECRET},
        process_per_node=process_per_node,
    ) as cluster:
        node = cluster.nodes[0]
        cert = cluster.client_cert(USER)
        # Signed with a wrong secret: ignored on an mTLS connection.
        c = client(cluster, node, credentials=(USER, "wrong"), config_client_cert=cert)
        assert "TableNames" in c.list_tables()
        assert node.log[-1].mtls_user == USER and node.log[-1].auth_ok is True
        # Without a certificate SigV4 is checked as usual.
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client(cluster, node, credentials=(USER, "wrong")).list_tables()
        assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
        # A certificate for a role that does not exist.
        stranger = cluster.client_cert("mallory")
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client(cluster, node, config_client_cert=stranger).list_tables()
        assert info.value.response["Error"]["Message"] == "User not found: mallory"


# ---------------------------------------------------------------- BatchWriteItem limit


def test_batch_write_takes_up_to_100_items_on_every_backend(shared: Cluster) -> None:
    c = client(shared, shared.nodes[0], read_timeout=60)
    c.create_table(
        TableName="bwtbl",
        KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        puts = [{"PutRequest": {"Item": {"p": {"S": f"i{i}"}}}} for i in range(100)]
        assert c.batch_write_item(RequestItems={"bwtbl": puts})["UnprocessedItems"] == {}
        assert c.scan(TableName="bwtbl", Select="COUNT")["Count"] == 100
        too_many = [*puts, {"PutRequest": {"Item": {"p": {"S": "x"}}}}]
        with pytest.raises(botocore.exceptions.ClientError) as info:
            c.batch_write_item(RequestItems={"bwtbl": too_many})
        assert info.value.response["Error"] == {
            "Code": "ValidationException",
            "Message": "Too many items requested for the BatchWriteItem call",
        }
    finally:
        c.delete_table(TableName="bwtbl")
