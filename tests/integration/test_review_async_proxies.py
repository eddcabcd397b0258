"""Review findings on the async client's proxies (compared with plain aiobotocore 3.10).

1. Credentials: aiobotocore passes no Proxy-Authorization of its own (it asks botocore for the
   headers of the *request* URL); aiohttp builds the header from the proxy URL's user:pass
   (latin-1). Asking botocore for the proxy URL's headers instead encodes them as ASCII, so a
   proxy password that plain aiobotocore uses fine made every call raise a raw
   ``UnicodeEncodeError``.
2. Health: a proxy that cannot be reached is not the node's fault; counting it against every
   node the proxy serves quarantines the whole cluster host-wide (the health is shared), for
   the processes that do not use that proxy too.
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
    api_seen,
    cluster_credentials,
    make_helper,
    module_cluster,
)

pytest.importorskip("aiobotocore")

USERS = {"review-key": "review-secret"}
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY",
                   "no_proxy")

cluster = module_cluster(nodes=3, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _plain_calls(target: Any, calls: int, **kwargs: Any) -> None:
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


@pytest.mark.parametrize("userinfo", ["us%C3%A9r:p%C3%A4ss", "user:", "user", "u:p%40w%23%3A%2F"])
def test_proxy_credentials_as_plain_aiobotocore_sends_them(
    cluster: Any, proxy: ForwardProxy, userinfo: str
) -> None:
    config = Config(proxies={"http": proxy.url.replace("http://", f"http://{userinfo}@")})
    _plain_calls(cluster, 1, config=config)
    expected = [h.get("Proxy-Authorization") for _, _, h in api_seen(proxy)]
    assert len(expected) == 1
    proxy.seen.clear()
    proxy.credentials.clear()
    with make_helper(cluster) as h:
        h.live_nodes()
        _helper_calls(h, 3, config=config)
        assert [h.get("Proxy-Authorization") for _, _, h in api_seen(proxy)] == expected * 3
        assert proxy.credentials == [1 if expected[0] else 0] * 3


def test_an_unreachable_proxy_does_not_mark_the_nodes_down(
    cluster: Any, closed_port: int
) -> None:
    config = Config(proxies={"http": f"http://127.0.0.1:{closed_port}"},
                    retries={"total_max_attempts": 3})
    with make_helper(cluster) as h:
        nodes = h.live_nodes()
        for _ in range(3):
            with pytest.raises(botocore.exceptions.ProxyConnectionError):
                _helper_calls(h, 1, config=config)
        per_node = h.stats().per_node
        # the nodes were never reached: their shared health must not change
        assert {n: (s.state, s.failures) for n, s in per_node.items()} == {
            n: ("active", 0) for n in nodes
        }


def test_an_unreachable_proxy_does_not_mark_the_nodes_down_sync(
    cluster: Any, closed_port: int
) -> None:
    config = Config(proxies={"http": f"http://127.0.0.1:{closed_port}"},
                    retries={"total_max_attempts": 3})
    with make_helper(cluster) as h:
        nodes = h.live_nodes()
        ddb = h.new_dynamodb_client(config=config)
        for _ in range(3):
            with pytest.raises(botocore.exceptions.ProxyConnectionError):
                ddb.list_tables()
        per_node = h.stats().per_node
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
                if kind == "sync":
                    h.new_dynamodb_client(config=config).list_tables()
                else:
                    _helper_calls(h, 1, config=config)
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
        if kind == "sync":
            ddb = h.new_dynamodb_client(config=config)
            for _ in range(3):
                ddb.list_tables()
        else:
            _helper_calls(h, 3, config=config)
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
            if kind == "sync":
                h.new_dynamodb_client(config=config).list_tables()
            else:
                _helper_calls(h, 1, config=config)
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
