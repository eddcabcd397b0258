"""Client CPU (issue 16): our clients do not run botocore's per-attempt User-Agent rebuild
(``request-created`` handler), whose value our ``before-send`` always replaces. The wire must
stay byte for byte what it was: our User-Agent (or none), every other header as botocore sets
it, the signature valid; a plain boto3 client keeps botocore's handler."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.awsrequest
import pytest
from botocore.config import Config
from test_helper_support import all_api_entries, cluster_credentials, header, make_helper

from alternator_shm import __version__
from alternator_shm.emulator import Cluster
from alternator_shm.hooks import skip_sdk_user_agent_rebuild

USERS = {"ua-key": "ua-secret"}
TABLE = "ua_table"
KEY = {"p": {"S": "k"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with Cluster(nodes=3, users=USERS, backend="null") as c:
        yield c


def _plain(cluster: Any) -> Any:
    key, secret = cluster_credentials(cluster)
    return boto3.Session().client(
        "dynamodb", endpoint_url=cluster.nodes[0].url, region_name="alternator",
        aws_access_key_id=key, aws_secret_access_key=secret,
    )


def _rebuilds(client: Any) -> bool:
    """True if botocore's request-created User-Agent rebuild is still registered on ``client``:
    emitting the event replaces a marker User-Agent with botocore's string."""
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=client.meta.endpoint_url + "/", data=b"{}",
        headers={"User-Agent": "marker/0", "X-Amz-Target": "DynamoDB_20120810.GetItem"},
    )
    client.meta.events.emit(
        "request-created.dynamodb.GetItem", request=request, operation_name="GetItem"
    )
    return request.headers["User-Agent"] != "marker/0"


def test_plain_client_keeps_the_rebuild_and_ours_skip_it(cluster: Any) -> None:
    assert _rebuilds(_plain(cluster))
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client()
        assert not _rebuilds(client)
        assert not _rebuilds(h.new_dynamodb_resource().meta.client)
        assert skip_sdk_user_agent_rebuild(client)  # again: a no-op, never an error


def test_wire_user_agent_and_signature_unchanged(cluster: Any) -> None:
    cluster.clear_logs()
    config = Config(user_agent_extra="extra/7", user_agent_appid="app1")
    with make_helper(cluster) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
        h.new_dynamodb_client(config=config).get_item(TableName=TABLE, Key=KEY)
    with make_helper(cluster, optimize_headers=True) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
    entries = [e for _, e in all_api_entries(cluster)]
    assert [header(e, "User-Agent") for e in entries] == [
        f"alternator-shm/{__version__}", f"alternator-shm/{__version__} app/app1 extra/7", None,
    ]
    assert all(e.auth_ok for e in entries)
    # every botocore header but the User-Agent is still there (amz-sdk-* retry headers too)
    names = {k.lower() for k in entries[0].headers}
    assert {"amz-sdk-invocation-id", "amz-sdk-request", "x-amz-date", "authorization"} <= names


def test_async_client_skips_it_too(cluster: Any) -> None:
    pytest.importorskip("aiobotocore")

    async def run(h: Any) -> bool:
        async with h.new_async_dynamodb_client() as client:
            await client.get_item(TableName=TABLE, Key=KEY)
            request = botocore.awsrequest.AWSRequest(
                method="POST", url=client.meta.endpoint_url + "/", data=b"{}",
                headers={"User-Agent": "marker/0"},
            )
            await client.meta.events.emit(
                "request-created.dynamodb.GetItem", request=request, operation_name="GetItem"
            )
            return bool(request.headers["User-Agent"] == "marker/0")

    cluster.clear_logs()
    with make_helper(cluster) as h:
        assert asyncio.run(run(h))
    ((_, entry),) = all_api_entries(cluster)
    assert header(entry, "User-Agent") == f"alternator-shm/{__version__}" and entry.auth_ok
