"""Proxies for the async client, as plain aiobotocore uses them (it refused every proxy before).

Each test sends the same calls through plain aiobotocore (``endpoint_url`` = one node) and the
Helper's async client, and compares what a forward proxy on loopback was asked and what the
nodes logged. An https proxy (and ``proxies_config``, which only concerns one) is refused with
``ConfigurationError``: aiohttp would speak TLS to it with the nodes' settings, not botocore's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from botocore.config import Config
from test_helper_support import (
    ForwardProxy,
    all_api_entries,
    api_counts,
    api_seen,
    cluster_credentials,
    make_helper,
    module_cluster,
)

from alternator_shm import ConfigurationError

pytest.importorskip("aiobotocore")

USERS = {"aioproxy-key": "aioproxy-secret"}
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY",
                   "no_proxy")

cluster = module_cluster(nodes=3, users=USERS, backend="null")
tls_cluster = module_cluster("tls_cluster", nodes=3, users=USERS, backend="null", https=True)
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on (bound, never listening, so it stays ours)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _plain_calls(target: Any, calls: int, **kwargs: Any) -> None:
    """``calls`` ListTables through plain aiobotocore on the target's first node."""
    from aiobotocore.session import get_session

    key, secret = cluster_credentials(target)

    async def main() -> None:
        async with get_session().create_client(
            "dynamodb", endpoint_url=target.nodes[0].url, region_name="alternator",
            aws_access_key_id=key, aws_secret_access_key=secret, **kwargs,
        ) as ddb:
            for _ in range(calls):
                await ddb.list_tables()

    asyncio.run(main())


def _helper_calls(h: Any, calls: int, **kwargs: Any) -> None:
    async def main() -> None:
        async with h.new_async_dynamodb_client(**kwargs) as ddb:
            for _ in range(calls):
                await ddb.list_tables()

    asyncio.run(main())


def _shape(seen: list[tuple[str, str, dict[str, str]]]) -> list[tuple[str, bool, Any]]:
    """(method, absolute-form target, Proxy-Authorization) of each request the proxy saw."""
    return [(m, t.startswith("http://"), h.get("Proxy-Authorization")) for m, t, h in seen]


def test_config_proxies_forward_http_with_credentials(cluster: Any, proxy: ForwardProxy) -> None:
    config = Config(proxies={"http": proxy.url.replace("http://", "http://user:pa%20ss@")})
    _plain_calls(cluster, 3, config=config)
    expected = _shape(proxy.seen)
    assert [(m, absolute) for m, absolute, _ in expected] == [("POST", True)] * 3
    assert expected[0][2] and expected[0][2].startswith("Basic ")
    proxy.clear()
    with make_helper(cluster) as h:
        h.live_nodes()
        cluster.clear_logs()
        _helper_calls(h, 6, config=config)
        assert _shape(api_seen(proxy)) == expected * 2  # botocore's credential header
        assert proxy.credentials == [1] * 6  # once
        # every node got its share through the proxy, each signature valid for that node
        assert set(api_counts(cluster).values()) == {2}
        assert all(e.auth_ok for _, e in all_api_entries(cluster))
        # a client without the option goes direct, as in aiobotocore
        proxy.clear()
        _helper_calls(h, 3)
        assert api_seen(proxy) == []


def test_config_proxies_tunnel_https_with_connect(tls_cluster: Any, proxy: ForwardProxy) -> None:
    config = Config(proxies={"https": proxy.url.replace("http://", "http://user:pa%20ss@")})
    _plain_calls(tls_cluster, 1, config=config, verify=tls_cluster.ca_file)
    expected = _shape(proxy.seen)
    assert [(m, auth is not None) for m, _, auth in expected] == [("CONNECT", True)]
    proxy.clear()
    with make_helper(tls_cluster) as h:
        h.live_nodes()
        tls_cluster.clear_logs()
        _helper_calls(h, 6, config=config)
        tunnels = [t for m, t, _ in api_seen(proxy)]
        assert _shape(api_seen(proxy)) == expected * 3  # botocore's credential header
        assert proxy.credentials == [1] * 3  # once
        # one tunnel per node, kept alive for the second round
        assert sorted(tunnels) == sorted(f"{n.ip}:{tls_cluster.port}" for n in tls_cluster.nodes)
        assert set(api_counts(tls_cluster).values()) == {2}


def test_environment_proxy_applies_per_node_and_after_a_change(
    cluster: Any, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = cluster.seeds[0]
    with make_helper(cluster, seeds=[seed]) as h:
        assert len(h.live_nodes()) == 3

        async def main() -> tuple[int, int]:
            async with h.new_async_dynamodb_client() as ddb:
                for _ in range(3):
                    await ddb.list_tables()
                direct = len(api_seen(proxy))
                # set after the client was made: applies from the next attempt, per node
                monkeypatch.setenv("HTTP_PROXY", proxy.url)
                monkeypatch.setenv("NO_PROXY", seed)
                cluster.clear_logs()
                for _ in range(6):
                    await ddb.list_tables()
                return direct, len(api_seen(proxy))

        direct, proxied = asyncio.run(main())
    assert direct == 0
    assert proxied == 4  # the two nodes NO_PROXY does not name, two calls each
    assert set(api_counts(cluster).values()) == {2}
    targets = {t.split("/")[2].split(":")[0] for _, t, _ in api_seen(proxy)}
    assert seed not in targets and len(targets) == 2


def test_https_proxy_and_proxies_config_are_refused_when_the_client_is_made(
    cluster: Any, closed_port: int, tmp_path: Any
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    refused = [
        Config(proxies={"http": f"https://127.0.0.1:{closed_port}"}),
        Config(proxies={"http": f"http://127.0.0.1:{closed_port}"},
               proxies_config={"proxy_ca_bundle": str(bundle)}),
        Config(proxies={"http": f"http://127.0.0.1:{closed_port}"},
               proxies_config={"proxy_use_forwarding_for_https": True}),
    ]
    with make_helper(cluster) as h:
        h.live_nodes()
        cluster.clear_logs()
        for config in refused:
            with pytest.raises(ConfigurationError, match="prox"):
                _helper_calls(h, 1, config=config)
    assert sum(api_counts(cluster).values()) == 0


def test_an_https_environment_proxy_for_a_node_found_later_is_never_bypassed(
    cluster: Any, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NO_PROXY names the seed only: the client is made, and the nodes discovered later would
    # go through an https proxy the async client cannot use; that call fails, nothing direct.
    seed = cluster.seeds[0]
    others = [n.url.rstrip("/") for n in cluster.nodes if seed not in n.url]
    with make_helper(cluster, seeds=[seed]) as h:
        assert len(h.live_nodes()) == 3
        cluster.clear_logs()
        monkeypatch.setenv("HTTP_PROXY", f"https://127.0.0.1:{closed_port}")
        monkeypatch.setenv("NO_PROXY", seed)
        with pytest.raises(ConfigurationError, match="http:// proxies only"):
            _helper_calls(h, 4)
        counts = api_counts(cluster)
        assert all(counts[url] == 0 for url in others), counts


def test_an_unreachable_proxy_is_a_proxy_connection_error(
    cluster: Any, closed_port: int
) -> None:
    config = Config(proxies={"http": f"http://user:secret@127.0.0.1:{closed_port}"},
                    retries={"total_max_attempts": 1})
    with make_helper(cluster) as h:
        h.live_nodes()
        with pytest.raises(botocore.exceptions.ProxyConnectionError) as raised:
            _helper_calls(h, 1, config=config)
    assert "secret" not in str(raised.value)  # masked, as aiobotocore does
