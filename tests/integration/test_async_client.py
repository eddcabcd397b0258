"""The async client (aiobotocore) through the same host-wide fleet, on the emulator, SigV4 on.

Every test goes through ``Helper.new_async_dynamodb_client`` on real HTTP; the evidence is what
the emulated nodes logged (which node got each attempt, the headers on the wire, whether the
signature matched the node), never what the client says about itself.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from test_helper_support import (
    all_api_entries,
    api_counts,
    cluster_credentials,
    create_table,
    header,
    make_helper,
    module_cluster,
)

from alternator_shm import ConfigurationError, Helper
from alternator_shm.emulator import Cluster

pytest.importorskip("aiobotocore")

USERS = {f"user{secrets.token_hex(4)}": secrets.token_hex(16)}


cluster = module_cluster(nodes=3, users=USERS, backend="moto")
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture(scope="module")
def table(cluster: Any) -> str:
    return create_table(cluster, "aio")


def _spread(counts: Any) -> int:
    values = list(counts.values())
    return max(values) - min(values)


def test_200_concurrent_tasks_split_exactly(cluster: Any, table: str) -> None:
    # Generous timeouts: on a loaded 2-core machine the emulator may accept 30 new
    # connections slowly, and a timeout would turn into a (correct, but here unwanted) retry.
    slow_ok = Config(connect_timeout=30, read_timeout=60)
    with make_helper(cluster, botocore_config=slow_ok) as h:
        h.live_nodes()  # the table first, so every call is routed by the shared counter

        async def main() -> list[Any]:
            async with h.new_async_dynamodb_client() as ddb:
                return await asyncio.gather(
                    *[
                        ddb.put_item(TableName=table, Item={"p": {"S": f"c{i}"}})
                        for i in range(200)
                    ]
                )

        cluster.clear_logs()
        answers = asyncio.run(main())
        assert len(answers) == 200
        assert all(a["ResponseMetadata"]["RetryAttempts"] == 0 for a in answers)
        counts = api_counts(cluster, "PutItem")
        assert sum(counts.values()) == 200
        assert _spread(counts) <= 1, counts
        assert h.stats().picks >= 200
        entries = all_api_entries(cluster, "PutItem")
        # Each node verified a signature made for its own Host: chosen before signing.
        assert all(e.auth_ok and e.signed_host == f"{n.ip}:{cluster.port}" for n, e in entries)


def test_each_retry_goes_to_a_node_not_yet_tried(cluster: Any, table: str) -> None:
    nodes = cluster.nodes
    nodes[0].inject_fault("internal_error")
    nodes[1].inject_fault("internal_error")
    with make_helper(cluster) as h:
        h.live_nodes()

        async def main() -> list[Any]:
            async with h.new_async_dynamodb_client() as ddb:
                return [
                    await ddb.get_item(TableName=table, Key={"p": {"S": f"r{i}"}})
                    for i in range(6)
                ]

        cluster.clear_logs()
        answers = asyncio.run(main())
    entries = all_api_entries(cluster, "GetItem")
    assert len(entries) == sum(1 + a["ResponseMetadata"]["RetryAttempts"] for a in answers)
    # Group attempts into calls: each call ends with the one healthy node's 200.
    calls: list[list[str]] = [[]]
    for node, entry in entries:
        calls[-1].append(node.ip)
        if entry.status == 200:
            assert node is nodes[2]
            calls.append([])
    calls.pop()
    assert len(calls) == 6
    for attempts in calls:
        assert len(attempts) == len(set(attempts)), attempts  # never the same node twice
    assert any(len(a) > 1 for a in calls)  # retries really happened


def test_killed_node_under_async_load_fails_no_call(table: str) -> None:
    with Cluster(nodes=3, users=USERS, backend="moto") as small, make_helper(small) as h:
        h.new_dynamodb_client().create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        h.live_nodes()
        victim = small.nodes[1]
        failures: list[str] = []
        done = 0

        async def main() -> None:
            nonlocal done
            async with h.new_async_dynamodb_client() as ddb:

                async def worker(w: int) -> None:
                    nonlocal done
                    for i in range(30):
                        try:
                            await ddb.put_item(TableName=table, Item={"p": {"S": f"{w}-{i}"}})
                            done += 1
                        except Exception as exc:  # counted; the test asserts none
                            failures.append(repr(exc))
                        if w == 0 and i == 5:
                            victim.kill()

                await asyncio.gather(*[worker(w) for w in range(20)])

        asyncio.run(main())
        assert failures == []
        assert done == 600
        # Discovery dropped the dead node from the shared table.
        assert victim.url.rstrip("/") not in h.live_nodes()


def test_sync_and_async_clients_share_one_counter(cluster: Any, table: str) -> None:
    with make_helper(cluster) as h:
        h.live_nodes()
        sync_client = h.new_dynamodb_client()
        cluster.clear_logs()
        picks_before = h.stats().picks
        sync_errors: list[str] = []

        def sync_calls() -> None:
            for i in range(100):
                try:
                    sync_client.get_item(TableName=table, Key={"p": {"S": f"s{i}"}})
                except Exception as exc:
                    sync_errors.append(repr(exc))

        async def main() -> None:
            async with h.new_async_dynamodb_client() as ddb:
                thread = threading.Thread(target=sync_calls)
                thread.start()
                for start in range(0, 100, 10):
                    await asyncio.gather(
                        *[
                            ddb.get_item(TableName=table, Key={"p": {"S": f"a{i}"}})
                            for i in range(start, start + 10)
                        ]
                    )
                await asyncio.to_thread(thread.join, 60)

        asyncio.run(main())
        assert sync_errors == []
        counts = api_counts(cluster, "GetItem")
        assert sum(counts.values()) == 200
        assert _spread(counts) <= 1, counts
        assert h.stats().picks - picks_before == 200


def _last(cluster: Any, operation: str) -> Any:
    return all_api_entries(cluster, operation)[-1][1]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"optimize_headers": True},
        {"optimize_headers": True, "request_compression": 256},
        {"response_compression": True},
        {"user_agent": "my-app/1.0"},
        {"user_agent": ""},
    ],
    ids=["plain", "optimized", "optimized+gzip", "response-gzip", "user-agent", "no-user-agent"],
)
def test_wire_headers_match_the_sync_client(
    cluster: Any, table: str, options: dict[str, Any]
) -> None:
    item = {"p": {"S": "hdr"}, "data": {"S": "compressible " * 600}}
    with make_helper(cluster, **options) as h:
        h.new_dynamodb_client().put_item(TableName=table, Item=item)
        sync_put = _last(cluster, "PutItem")
        assert h.new_dynamodb_client().get_item(TableName=table, Key={"p": {"S": "hdr"}})
        sync_get = _last(cluster, "GetItem")

        async def main() -> Any:
            async with h.new_async_dynamodb_client() as ddb:
                await ddb.put_item(TableName=table, Item=item)
                return await ddb.get_item(TableName=table, Key={"p": {"S": "hdr"}})

        got = asyncio.run(main())
        async_put = _last(cluster, "PutItem")
        async_get = _last(cluster, "GetItem")
    assert got["Item"] == item
    for sync_entry, async_entry in ((sync_put, async_put), (sync_get, async_get)):
        assert async_entry.auth_ok is True and async_entry.status == 200
        assert {k.lower() for k in async_entry.headers} == {k.lower() for k in sync_entry.headers}
        for name in ("User-Agent", "Accept-Encoding", "Content-Encoding"):
            assert header(async_entry, name) == header(sync_entry, name), name
        assert abs(async_entry.header_bytes - sync_entry.header_bytes) <= 8
        assert async_entry.body_bytes == sync_entry.body_bytes


def test_event_loop_is_not_blocked_while_waiting_for_the_first_table(
    cluster: Any, table: str
) -> None:
    for node in cluster.nodes:
        node.inject_fault("localnodes_hang")
    with make_helper(cluster) as h:
        ticks = 0
        release = threading.Timer(1.0, lambda: [n.clear_faults() for n in cluster.nodes])

        async def main() -> Any:
            nonlocal ticks
            async with h.new_async_dynamodb_client() as ddb:
                call = asyncio.create_task(
                    ddb.get_item(TableName=table, Key={"p": {"S": "first"}})
                )
                release.start()
                while not call.done():
                    await asyncio.sleep(0.01)
                    ticks += 1
                return await call

        try:
            answer = asyncio.run(main())
        finally:
            release.cancel()
            for node in cluster.nodes:
                node.clear_faults()
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    # The call waited at least the 1 s hang; a blocked loop would have ticked ~0 times.
    assert ticks >= 20, ticks


tls_cluster = module_cluster("tls_cluster", nodes=2, users=USERS, https=True, backend="null")


def test_https_ca_file_and_key_log(tls_cluster: Any, tmp_path: Path) -> None:
    key_log = tmp_path / "keys.log"
    with make_helper(tls_cluster, key_log_file=str(key_log)) as h:
        h.live_nodes()

        async def main() -> None:
            async with h.new_async_dynamodb_client() as ddb:
                for _ in range(4):
                    await ddb.list_tables()

        asyncio.run(main())
    lines = [line for line in key_log.read_text().splitlines() if line.strip()]
    assert {line.split()[0] for line in lines} & {"CLIENT_RANDOM", "CLIENT_TRAFFIC_SECRET_0"}
    assert len({line.split()[1] for line in lines}) >= 2  # a TLS connection to each node


def test_https_verification_on_by_default_and_ignorable(tls_cluster: Any) -> None:
    # No ca_file: the emulator's private CA is not trusted, every attempt fails TLS.
    with make_helper(tls_cluster, ca_file=None) as h:
        h.live_nodes()

        async def main() -> Any:
            async with h.new_async_dynamodb_client() as ddb:
                return await ddb.list_tables()

        with pytest.raises(botocore.exceptions.SSLError):
            asyncio.run(main())
    with make_helper(tls_cluster, ca_file=None, ignore_server_certificate_error=True) as h:
        h.live_nodes()

        async def ok() -> Any:
            async with h.new_async_dynamodb_client() as ddb:
                return await ddb.list_tables()

        assert isinstance(asyncio.run(ok())["TableNames"], list)


def test_options_the_async_client_cannot_honour_are_refused(cluster: Any) -> None:
    import boto3

    key, secret = cluster_credentials(cluster)

    async def open_client(h: Helper, **kwargs: Any) -> None:
        async with h.new_async_dynamodb_client(**kwargs):
            pass

    with make_helper(cluster, session=boto3.Session()) as h, pytest.raises(
        ConfigurationError, match="session"
    ):
        asyncio.run(open_client(h))
    refreshable = RefreshableCredentials(
        key, secret, None, "2999-01-01T00:00:00Z", lambda: {}, "test"
    )
    with make_helper(cluster, credentials=refreshable) as h, pytest.raises(
        ConfigurationError, match="RefreshableCredentials"
    ):
        asyncio.run(open_client(h))
    with make_helper(cluster) as h, pytest.raises(ConfigurationError, match="endpoint_url"):
        asyncio.run(open_client(h, endpoint_url="http://127.0.0.1:1"))
    # botocore's "no timeout" (None): refused with a typed error, as for the sync client.
    for name in ("read_timeout", "connect_timeout"):
        with make_helper(cluster) as h, pytest.raises(ConfigurationError, match=name):
            asyncio.run(open_client(h, config=Config(**{name: None})))
        with pytest.raises(ConfigurationError, match=name):
            Helper(["127.0.0.1"], botocore_config=Config(**{name: None}))


@pytest.mark.parametrize("bad", ["key_log_symlink", "ca_file_garbage", "client_cert_garbage"])
def test_bad_tls_material_is_refused_at_client_creation(
    tls_cluster: Any, tmp_path: Path, bad: str
) -> None:
    # As for the sync client: a ConfigurationError when the client is created, not an
    # HTTPClientError (retried by botocore) on the first call.
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    link = tmp_path / "keys.log"
    link.symlink_to(tmp_path / "elsewhere.log")
    helper_kwargs: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    if bad == "key_log_symlink":
        helper_kwargs["key_log_file"] = str(link)
    elif bad == "ca_file_garbage":
        client_kwargs["verify"] = str(garbage)
    else:
        client_kwargs["config"] = Config(client_cert=str(garbage))
    entered: list[bool] = []

    async def main() -> None:
        async with h.new_async_dynamodb_client(**client_kwargs) as ddb:
            entered.append(True)
            await ddb.list_tables()

    with make_helper(tls_cluster, **helper_kwargs) as h, pytest.raises(ConfigurationError):
        asyncio.run(main())
    assert entered == []
    assert not (tmp_path / "elsewhere.log").exists()


def test_the_environment_proxy_look_up_runs_once_per_node_not_per_attempt(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The full look-up reads every environment variable (about a fifth of an attempt's CPU
    # when it ran per attempt); it must run once per node, and again after a change. Only the
    # event loop's thread is counted: the refresher's discovery fetches (another thread, its
    # own sync transport) look up too, and a change of NO_PROXY lands in its next poll.
    import botocore.utils

    loop_thread = threading.get_ident()
    looked_up: list[str] = []
    original = botocore.utils.get_environ_proxies

    def counting(url: str) -> Any:
        if threading.get_ident() == loop_thread:
            looked_up.append(url)
        return original(url)

    monkeypatch.setattr(botocore.utils, "get_environ_proxies", counting)
    with make_helper(cluster) as h:
        nodes = len(h.live_nodes())
        phases: list[list[str]] = []

        async def main() -> None:
            async with h.new_async_dynamodb_client() as ddb:
                for _ in range(3 * nodes):
                    await ddb.list_tables()
                phases.append(looked_up[:])
                looked_up.clear()
                no_proxy = os.environ.get("NO_PROXY")
                monkeypatch.setenv("NO_PROXY", f"{no_proxy},example.invalid" if no_proxy
                                   else "example.invalid")
                for _ in range(3 * nodes):
                    await ddb.list_tables()
                phases.append(looked_up[:])

        looked_up.clear()
        asyncio.run(main())
    before, after = phases
    # once per node, the check at client creation included (it fills the same cache)
    assert len(set(before)) == len(before) == nodes
    assert len(set(after)) == len(after) == nodes  # after the change: once per node again


def test_a_no_proxy_variable_alone_is_not_a_proxy(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NO_PROXY without any HTTP(S)_PROXY names no proxy: the async client must work (it was
    # refused at creation and on every attempt), as the sync client and plain aiobotocore do.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    with make_helper(cluster) as h:
        nodes = len(h.live_nodes())

        async def main() -> None:
            async with h.new_async_dynamodb_client() as ddb:
                for _ in range(nodes):
                    await ddb.list_tables()

        asyncio.run(main())
