"""Client CPU (issue 16): our clients build no botocore User-Agent per attempt (neither at
serialization nor in the ``request-created`` rebuild handler): our ``before-send`` always
replaces that value, and handlers that read it earlier see what is sent. The wire must
stay byte for byte what it was: our User-Agent (or none), every other header as botocore sets
it, the signature valid; a plain boto3 client keeps botocore's handler."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import botocore.awsrequest
import botocore.useragent
import pytest
from botocore.config import Config
from test_helper_support import (
    all_api_entries,
    header,
    make_helper,
    plain_client,
)

from alternator_shm import __version__
from alternator_shm.emulator import Cluster
from alternator_shm.hooks import skip_sdk_user_agent_builds

USERS = {"ua-key": "ua-secret"}
TABLE = "ua_table"
KEY = {"p": {"S": "k"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with Cluster(nodes=3, users=USERS, backend="null") as c:
        yield c


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
    assert _rebuilds(plain_client(cluster))
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client()
        assert not _rebuilds(client)
        assert not _rebuilds(h.new_dynamodb_resource().meta.client)
        assert skip_sdk_user_agent_builds(client, "x")  # again: a no-op, never an error


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


@pytest.fixture
def ua_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts botocore's User-Agent builds (``UserAgentString.to_string``) while a test runs."""
    count = [0]
    original = botocore.useragent.UserAgentString.to_string

    def counting(self: Any) -> str:
        count[0] += 1
        return str(original(self))

    monkeypatch.setattr(botocore.useragent.UserAgentString, "to_string", counting)
    return count


@pytest.mark.parametrize("optimize", [False, True])
def test_no_user_agent_is_built_per_call(
    cluster: Any, ua_builds: list[int], optimize: bool
) -> None:
    plain = plain_client(cluster)
    plain.get_item(TableName=TABLE, Key=KEY)
    before = ua_builds[0]
    plain.get_item(TableName=TABLE, Key=KEY)
    assert ua_builds[0] - before == 2  # botocore's own: serialization and request-created
    seen: list[str] = []
    with make_helper(cluster, optimize_headers=optimize) as h:
        client = h.new_dynamodb_client(config=Config(user_agent_appid="app2"))

        def capture(request: Any, **kwargs: Any) -> None:
            seen.append(request.headers.get("User-Agent"))

        client.meta.events.register("before-sign.dynamodb", capture)
        before = ua_builds[0]
        for _ in range(3):
            client.get_item(TableName=TABLE, Key=KEY)
        assert ua_builds[0] == before
    # what a handler reads before sending is what goes on the wire
    wire = "app/app2" if optimize else f"alternator-shm/{__version__} app/app2"
    assert seen == [wire] * 3


def test_async_client_builds_no_user_agent_per_call(cluster: Any, ua_builds: list[int]) -> None:
    pytest.importorskip("aiobotocore")

    async def run(h: Any) -> int:
        async with h.new_async_dynamodb_client() as client:
            await client.get_item(TableName=TABLE, Key=KEY)
            before = ua_builds[0]
            for _ in range(3):
                await client.get_item(TableName=TABLE, Key=KEY)
            return ua_builds[0] - before

    with make_helper(cluster) as h:
        assert asyncio.run(run(h)) == 0


@pytest.mark.parametrize("optimize", [False, True])
def test_retry_headers_are_not_made_only_to_be_dropped(cluster: Any, optimize: bool) -> None:
    # botocore adds amz-sdk-invocation-id / amz-sdk-request after signing; optimize_headers
    # drops them before sending, so with it they are not made at all. Without it they are
    # made and sent as by plain boto3. Either way the wire keeps its promise.
    seen: list[set[str]] = []

    def capture(request: Any, **kwargs: Any) -> None:
        seen.append({k.lower() for k in request.headers})

    cluster.clear_logs()
    with make_helper(cluster, optimize_headers=optimize) as h:
        client = h.new_dynamodb_client()
        client.meta.events.register_first("before-send.dynamodb", capture)
        client.get_item(TableName=TABLE, Key=KEY)
    retry_headers = {"amz-sdk-invocation-id", "amz-sdk-request"}
    assert bool(seen[0] & retry_headers) is not optimize
    ((_, entry),) = all_api_entries(cluster)
    assert entry.auth_ok
    assert bool({k.lower() for k in entry.headers} & retry_headers) is not optimize
