"""SigV4 enforcement with Alternator's error types and messages (§3.2)."""

from __future__ import annotations

import datetime as dt
import json

import botocore.exceptions
import pytest
from _emulator_helpers import SECRET, USER, client, error_of, post, signed_headers

from alternator_shm.emulator import Cluster

BODY = b"{}"


def _code(err: botocore.exceptions.ClientError) -> tuple[str, str]:
    return err.response["Error"]["Code"], err.response["Error"]["Message"]


def test_boto3_signed_request_succeeds_and_logs_signed_host(shared: Cluster) -> None:
    node = shared.nodes[0]
    node.clear_log()
    assert "TableNames" in client(shared, node).list_tables()
    entry = node.log[-1]
    assert entry.auth_ok is True
    assert entry.signed_host == f"{node.ip}:{shared.port}"
    assert entry.operation == "ListTables"


def test_wrong_secret(shared: Cluster) -> None:
    c = client(shared, shared.nodes[0], credentials=(USER, "wrong"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.list_tables()
    assert _code(info.value) == ("UnrecognizedClientException", "wrong signature")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert shared.nodes[0].log[-1].auth_ok is False


def test_unknown_user(shared: Cluster) -> None:
    c = client(shared, shared.nodes[0], credentials=("mallory", SECRET))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.list_tables()
    assert _code(info.value) == ("UnrecognizedClientException", "User not found: mallory")


def test_missing_authorization_comes_before_unknown_operation(shared: Cluster) -> None:
    resp = post(shared.nodes[0], BODY, {"X-Amz-Target": "DynamoDB_20120810.Bogus"})
    assert error_of(resp) == (
        400,
        "MissingAuthenticationTokenException",
        "Authorization header is mandatory for signature verification",
    )
    assert resp.headers["Content-Type"] == "application/x-amz-json-1.0"


def test_bad_algorithm_and_credential_format(shared: Cluster) -> None:
    node = shared.nodes[0]
    resp = post(node, BODY, {"Authorization": "AWS4-HMAC-SHA1 Credential=x"})
    assert error_of(resp)[:2] == (400, "InvalidSignatureException")
    resp = post(node, BODY, {"Authorization": "AWS4-HMAC-SHA256 Credential=a/b, Signature=x"})
    assert error_of(resp) == (
        400,
        "ValidationException",
        "Incorrect credential information format: a/b",
    )


def test_clock_window(shared: Cluster) -> None:
    node = shared.nodes[0]
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=16)
    resp = post(node, BODY, signed_headers(node, "ListTables", BODY, when=old))
    status, type_, message = error_of(resp)
    assert (status, type_) == (400, "InvalidSignatureException")
    assert "Signature expired" in message
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=16)
    resp = post(node, BODY, signed_headers(node, "ListTables", BODY, when=future))
    assert "Signature not yet current" in error_of(resp)[2]
    recent = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=14)
    assert post(node, BODY, signed_headers(node, "ListTables", BODY, when=recent)).status == 200


def test_signature_covers_body_and_any_host(shared: Cluster) -> None:
    node = shared.nodes[1]
    headers = signed_headers(node, "ListTables", BODY, extra={"Host": "dog.scylladb.com"})
    node.clear_log()
    assert post(node, BODY, headers).status == 200  # the Host that was signed is what counts
    assert node.log[-1].signed_host == "dog.scylladb.com"
    resp = post(node, b'{"Limit":1}', headers)  # body changed after signing
    assert error_of(resp) == (400, "UnrecognizedClientException", "wrong signature")


def test_comma_or_space_separated_authorization(shared: Cluster) -> None:
    node = shared.nodes[0]
    headers = signed_headers(node, "ListTables", BODY)
    headers["Authorization"] = headers["Authorization"].replace(", ", " ")
    assert post(node, BODY, headers).status == 200


def test_auth_off_accepts_anything(null_cluster: Cluster) -> None:
    off = Cluster(nodes=1, backend="null")
    try:
        resp = post(off.nodes[0], BODY, {"X-Amz-Target": "DynamoDB_20120810.ListTables"})
        assert resp.status == 200
        assert json.loads(resp.data) == {"TableNames": []}
        assert off.nodes[0].log[-1].auth_ok is None
    finally:
        off.stop()
