"""Proxies for the async client, as plain aiobotocore uses them (it refused every proxy before).

Each test sends the same calls through plain aiobotocore (``endpoint_url`` = one node) and the
Helper's async client, and compares what a forward proxy on loopback was asked and what the
nodes logged. An https proxy (and ``proxies_config``, which only concerns one) is refused with
``ConfigurationError``: aiohttp would speak TLS to it with the nodes' settings, not botocore's.

Review findings (compared with plain aiobotocore 3.10), each failing before its fix:

1. Credentials: aiobotocore passes no Proxy-Authorization of its own; aiohttp builds the header
   from the proxy URL's user:pass (latin-1). Asking botocore for the proxy URL's headers
   instead (ASCII only) made a proxy password plain aiobotocore uses raise
   ``UnicodeEncodeError`` on every call.
2. Health: a proxy that cannot be reached (refused, timed out, unresolvable), or that answers
   407, says nothing of the node; counting it against every node the proxy serves quarantined
   the whole cluster host-wide (the health is shared), for processes without that proxy too.
3. ``Config(proxies={'http': None})`` goes direct, as in botocore (it became a host "None").
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def _calls(h: Any, kind: str, calls: int, **kwargs: Any) -> None:
    """``calls`` ListTables through the Helper's ``kind`` ("sync" or "async") client."""
    if kind == "async":
        _helper_calls(h, calls, **kwargs)
        return
    ddb = h.new_dynamodb_client(**kwargs)
    for _ in range(calls):
        ddb.list_tables()


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


@pytest.mark.parametrize("userinfo", ["us%C3%A9r:p%C3%A4ss", "user:", "user", "u:p%40w%23%3A%2F"])
def test_proxy_credentials_as_plain_aiobotocore_sends_them(
    cluster: Any, proxy: ForwardProxy, userinfo: str
) -> None:
    config = Config(proxies={"http": proxy.url.replace("http://", f"http://{userinfo}@")})
    _plain_calls(cluster, 1, config=config)
    expected = [h.get("Proxy-Authorization") for _, _, h in api_seen(proxy)]
    assert len(expected) == 1
    proxy.clear()
    with make_helper(cluster) as h:
        h.live_nodes()
        _helper_calls(h, 3, config=config)
        assert [h.get("Proxy-Authorization") for _, _, h in api_seen(proxy)] == expected * 3
        assert proxy.credentials == [1 if expected[0] else 0] * 3


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unreachable_proxy_does_not_mark_the_nodes_down(
    cluster: Any, closed_port: int, kind: str
) -> None:
    config = Config(proxies={"http": f"http://127.0.0.1:{closed_port}"},
                    retries={"total_max_attempts": 3})
    with make_helper(cluster) as h:
        nodes = h.live_nodes()
        for _ in range(3):
            with pytest.raises(botocore.exceptions.ProxyConnectionError):
                _calls(h, kind, 1, config=config)
        per_node = h.stats().per_node
        # the nodes were never reached: their shared health must not change
        assert {n: (s.state, s.failures) for n, s in per_node.items()} == {
            n: ("active", 0) for n in nodes
        }


class _Answers407(BaseHTTPRequestHandler):
    """A proxy that wants credentials: 407 to every request, absolute-form or CONNECT."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="review"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET = do_CONNECT = _refuse


@pytest.fixture
def proxy_407() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers407)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_proxy_407_is_no_proof_that_the_node_serves(
    cluster: Any, proxy_407: str, kind: str
) -> None:
    # One node resets every connection: its failure streak grows host-wide. A process whose
    # proxy wants credentials gets 407 answers *from the proxy*: they say nothing of the node,
    # and must not wipe the streak (a dead node would never be taken out of rotation).
    failing = cluster.nodes[1]
    url = failing.url.rstrip("/")
    with make_helper(cluster) as h:
        h.live_nodes()
        failing.inject_fault("reset")
        direct = h.new_dynamodb_client()
        for _ in range(6):
            direct.list_tables()
        before = h.stats().per_node[url].consecutive_failures
        assert before >= 2
        config = Config(proxies={"http": proxy_407}, retries={"total_max_attempts": 1})
        for _ in range(3):  # one attempt on each node
            with pytest.raises(botocore.exceptions.ClientError):
                _calls(h, kind, 1, config=config)
        assert h.stats().per_node[url].consecutive_failures >= before


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_none_proxy_goes_direct_as_in_botocore(
    cluster: Any, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # requests' idiom to bypass the environment's proxy: botocore reads {'http': None} as "no
    # proxy for http" (and, the option being given, ignores HTTP_PROXY); plain boto3 goes direct.
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    config = Config(proxies={"http": None}, retries={"total_max_attempts": 1})
    with make_helper(cluster) as h:
        h.live_nodes()
        cluster.clear_logs()
        proxy.seen.clear()
        _calls(h, kind, 3, config=config)
        assert api_seen(proxy) == []


@pytest.fixture
def blackholed_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect to it times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    yield port
    for c in fillers:
        c.close()
    sock.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_proxy_that_times_out_does_not_mark_the_nodes_down(
    cluster: Any, blackholed_port: int, kind: str
) -> None:
    config = Config(proxies={"http": f"http://127.0.0.1:{blackholed_port}"},
                    retries={"total_max_attempts": 3}, connect_timeout=0.5)
    with make_helper(cluster) as h:
        nodes = h.live_nodes()
        with pytest.raises(botocore.exceptions.ConnectionError):
            _calls(h, kind, 1, config=config)
        per_node = h.stats().per_node
        assert {n: s.failures for n, s in per_node.items()} == {n: 0 for n in nodes}


@pytest.mark.parametrize("proxied", [True, False])
def test_a_proxy_name_that_does_not_resolve_is_the_proxy_hop(proxied: bool) -> None:
    # Through a proxy, the client looks up and connects to the proxy only: aiohttp's DNS error
    # (aiobotocore's EndpointConnectionError) is about the proxy and must not count against
    # the node. No loopback name fails to resolve, so the session answers the error itself.
    import aiohttp
    import botocore.awsrequest

    from alternator_shm.aio.transport import AsyncTransport
    from alternator_shm.transport import PROXY_HOP_FAILURE, TransportOptions

    options = TransportOptions(proxies=(("http", "http://proxy.invalid:3128"),) if proxied
                               else ())
    transport = AsyncTransport(options)

    class _Session:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise aiohttp.ClientConnectorDNSError(None, OSError(-2, "Name or service not known"))

    transport._session = lambda: _Session()  # type: ignore[method-assign]
    request = botocore.awsrequest.AWSRequest(method="POST", url="http://127.0.0.1:9/",
                                             data=b"{}").prepare()
    with pytest.raises(botocore.exceptions.EndpointConnectionError) as raised:
        asyncio.run(transport.send(request, timeout=(1.0, 1.0)))
    assert getattr(raised.value, PROXY_HOP_FAILURE, False) is proxied
