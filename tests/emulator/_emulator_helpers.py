"""Shared helpers for the emulator's own tests: plain boto3 / urllib3 clients, manual signing."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from alternator_shm.emulator import Cluster, Node

TOPOLOGY = [("dc1", "rack1"), ("dc1", "rack2"), ("dc2", "rack1")]
USER, SECRET = "alice", "s3cret"


def client(cluster: Cluster, node: Node, **kw: Any) -> Any:
    key, secret = kw.pop("credentials", cluster.credentials)
    return boto3.client(
        "dynamodb",
        endpoint_url=node.url,
        region_name=kw.pop("region", "eu-west-1"),
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=cluster.ca_file or True,
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=kw.pop("connect_timeout", 5),
            read_timeout=kw.pop("read_timeout", 10),
            client_cert=kw.pop("config_client_cert", None),
        ),
        **kw,
    )


def signed_headers(
    node: Node,
    operation: str,
    body: bytes,
    key: str = USER,
    secret: str = SECRET,
    extra: dict[str, str] | None = None,
    when: dt.datetime | None = None,
) -> dict[str, str]:
    """SigV4-sign a raw POST / with botocore, the way boto3 would."""
    headers = {
        "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        "Content-Type": "application/x-amz-json-1.0",
        **(extra or {}),
    }
    request = AWSRequest(method="POST", url=node.url + "/", data=body, headers=headers)
    signer = SigV4Auth(Credentials(key, secret), "dynamodb", "us-west-2")
    if when is None:
        signer.add_auth(request)
    else:
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        canonical = signer.canonical_request(request)
        sig = signer.signature(signer.string_to_sign(request, canonical), request)
        scope = f"{key}/{signer.credential_scope(request)}"
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={scope}, "
            f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, "
            f"Signature={sig}"
        )
    return dict(request.headers.items())


def post(node: Node, body: bytes, headers: dict[str, str], **kw: Any) -> urllib3.BaseHTTPResponse:
    http = urllib3.PoolManager(retries=False, ca_certs=kw.pop("ca_certs", None))
    return http.request("POST", node.url + "/", body=body, headers=headers, **kw)


def error_of(resp: urllib3.BaseHTTPResponse) -> tuple[int, str, str]:
    data = json.loads(resp.data)
    return resp.status, data["__type"].rsplit("#", 1)[1], data["message"]


def get(url: str, **kw: Any) -> urllib3.BaseHTTPResponse:
    kw.setdefault("timeout", 10)  # urllib3.request's default is 3 s: too tight on a busy host
    return urllib3.request("GET", url, retries=False, **kw)


def create_table(c: Any, name: str) -> None:
    c.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


@contextlib.contextmanager
def fresh_table(cluster: Cluster, name: str) -> Iterator[Any]:
    """A client on the first node with table ``name`` (string hash key ``p``) for the block;
    the table is dropped after."""
    c = client(cluster, cluster.nodes[0])
    create_table(c, name)
    try:
        yield c
    finally:
        c.delete_table(TableName=name)
