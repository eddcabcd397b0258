"""Transport: keep-alive pools that never evict a node, TLS options, fork safety, botocore errors.

Real sockets only: small stdlib HTTP(S) servers on random 127.x.y.z loopback addresses.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.awsrequest
import botocore.exceptions
import pytest
import trustme
import urllib3

from alternator_shm.errors import ConfigurationError
from alternator_shm.transport import Transport, TransportOptions

Reply = tuple[int, dict[str, str], bytes]
Route = Callable[["_Handler"], Reply]


def _random_loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, dict(self.headers), self.body))
        status, headers, body = self.server.route(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _serve


class _Server(ThreadingHTTPServer):
    """A loopback HTTP(S) server that counts the TCP connections it accepts."""

    daemon_threads = True

    def __init__(self, route: Route, tls: ssl.SSLContext | None = None) -> None:
        self.route = route
        self.tls = tls
        self.connections = 0
        self.peer_certs: list[Any] = []
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        for _ in range(20):  # a random address can (rarely) be taken by a parallel test
            try:
                super().__init__((_random_loopback(), 0), _Handler)
                break
            except OSError:
                continue
        self.host, self.port = self.server_address[:2]
        self.url = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        self.connections += 1
        if self.tls is not None:
            # The handshake happens in the handler thread, on first read.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-request are part of these tests

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _ok(handler: _Handler) -> Reply:
    return 200, {"Content-Type": "text/plain"}, b"healthy: " + handler.headers["Host"].encode()


@pytest.fixture
def servers() -> Iterator[Callable[..., _Server]]:
    started: list[_Server] = []

    def start(route: Route = _ok, tls: ssl.SSLContext | None = None) -> _Server:
        server = _Server(route, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA, host: str, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def _tls_server(servers: Callable[..., _Server], ca: trustme.CA, **kwargs: Any) -> _Server:
    # The certificate must name the address the server binds, which is chosen at bind time:
    # bind first with a placeholder context, then install the real one.
    server = servers(_ok, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    server.tls = _server_tls(ca, server.host, **kwargs)
    return server


def _write_ca(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _prepared(url: str, body: bytes = b"{}") -> botocore.awsrequest.AWSPreparedRequest:
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=url, data=body, headers={"X-Amz-Target": "DynamoDB_20120810.ListTables"}
    )
    return request.prepare()


# -- plain HTTP, pools ------------------------------------------------------------------------


def test_rejects_unknown_scheme() -> None:
    with pytest.raises(ConfigurationError):
        Transport(TransportOptions(scheme="ftp"))


def test_keep_alive_reuses_one_connection(servers: Callable[..., _Server]) -> None:
    server = servers()
    transport = Transport(TransportOptions())
    for _ in range(5):
        response = transport.request("GET", server.url + "/")
        assert response.status == 200
        assert response.data == f"healthy: {server.host}:{server.port}".encode()
    assert server.connections == 1
    transport.close()


@pytest.mark.parametrize("num_pools, expect_reuse", [(None, True), (10, False)])
def test_pool_per_node_is_never_evicted(
    servers: Callable[..., _Server], num_pools: int | None, expect_reuse: bool
) -> None:
    """12 nodes visited round-robin: each keeps its one connection.

    The control row uses urllib3's default of 10 pools and must see evictions, proving the
    test can tell the difference.
    """
    nodes = [servers() for _ in range(12)]
    kwargs = {} if num_pools is None else {"num_pools": num_pools}
    transport = Transport(TransportOptions(), **kwargs)
    for _ in range(3):
        for node in nodes:
            assert transport.request("GET", node.url + "/").status == 200
    counts = [node.connections for node in nodes]
    if expect_reuse:
        assert counts == [1] * 12
    else:
        assert sum(counts) > 12
    transport.close()


def test_socket_options_keepalive_and_nodelay(servers: Callable[..., _Server]) -> None:
    server = servers()
    transport = Transport(TransportOptions(tcp_keepalive=True))
    transport.request("GET", server.url + "/")
    pool = transport._pool_manager().connection_from_url(server.url)
    conn = pool.pool.get_nowait()  # type: ignore[union-attr]
    sock = conn.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
    pool.pool.put(conn)  # type: ignore[union-attr]
    plain = Transport(TransportOptions(tcp_keepalive=False))
    plain.request("GET", server.url + "/")
    conn = plain._pool_manager().connection_from_url(server.url).pool.get_nowait()  # type: ignore[union-attr]
    assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_fork_child_gets_fresh_pool(servers: Callable[..., _Server]) -> None:
    server = servers()
    transport = Transport(TransportOptions())
    assert transport.request("GET", server.url + "/").status == 200
    parent_manager = transport._pool_manager()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report (status, fresh manager?) and leave without cleanup
        code = 1
        try:
            status = transport.request("GET", server.url + "/").status
            fresh = transport._pool_manager() is not parent_manager
            os.write(write_fd, f"{status} {fresh}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _, wait_status = os.waitpid(pid, 0)
    answer = os.read(read_fd, 100).decode()
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert answer == "200 True"
    # The child opened its own connection; the parent's one is intact and still reused.
    assert server.connections == 2
    assert transport.request("GET", server.url + "/").status == 200
    assert server.connections == 2
    assert transport._pool_manager() is parent_manager


# -- TLS ----------------------------------------------------------------------------------------


def test_https_verification_is_on_by_default(
    servers: Callable[..., _Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = _tls_server(servers, ca)
    with pytest.raises(urllib3.exceptions.SSLError):
        Transport(TransportOptions(scheme="https")).request("GET", server.url + "/")
    trusted = Transport(TransportOptions(scheme="https", ca_file=_write_ca(ca, tmp_path)))
    assert trusted.request("GET", server.url + "/").status == 200


def test_https_verification_checks_the_address(
    servers: Callable[..., _Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = servers(_ok, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    server.tls = _server_tls(ca, "other.example")  # trusted CA, wrong name
    transport = Transport(TransportOptions(scheme="https", ca_file=_write_ca(ca, tmp_path)))
    with pytest.raises(urllib3.exceptions.SSLError):
        transport.request("GET", server.url + "/")


def test_ignore_server_certificate_error(servers: Callable[..., _Server], ca: trustme.CA) -> None:
    server = _tls_server(servers, ca)
    transport = Transport(TransportOptions(scheme="https", ignore_server_certificate_error=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no InsecureRequestWarning per request
        assert transport.request("GET", server.url + "/").status == 200


def test_key_log_file_gets_tls_secrets(
    servers: Callable[..., _Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = _tls_server(servers, ca)
    key_log = tmp_path / "keys.log"
    transport = Transport(
        TransportOptions(scheme="https", ca_file=_write_ca(ca, tmp_path), key_log_file=str(key_log))
    )
    assert transport.request("GET", server.url + "/").status == 200
    labels = {line.split()[0] for line in key_log.read_text().splitlines() if line.strip()}
    assert labels & {"CLIENT_RANDOM", "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    # A second connection (another node) appends to the same file.
    before = len(key_log.read_text().splitlines())
    other = _tls_server(servers, ca)
    assert transport.request("GET", other.url + "/").status == 200
    assert len(key_log.read_text().splitlines()) > before


def test_client_certificate_for_mtls(
    servers: Callable[..., _Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = _tls_server(servers, ca, require_client_cert=True)
    ca_file = _write_ca(ca, tmp_path)
    without = Transport(TransportOptions(scheme="https", ca_file=ca_file))
    with pytest.raises(urllib3.exceptions.HTTPError):
        without.request("GET", server.url + "/")
    client = ca.issue_cert("client.example")
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_path))
    client.private_key_pem.write_to_path(str(key_path))
    transport = Transport(
        TransportOptions(
            scheme="https", ca_file=ca_file, client_cert=(str(cert_path), str(key_path))
        )
    )
    assert transport.request("GET", server.url + "/").status == 200


# -- botocore send --------------------------------------------------------------------------------


def test_send_returns_botocore_response(servers: Callable[..., _Server]) -> None:
    server = servers(lambda h: (200, {"Content-Type": "application/x-amz-json-1.0"}, b'{"a":1}'))
    response = Transport(TransportOptions()).send(_prepared(server.url + "/"), timeout=(1, 2))
    assert isinstance(response, botocore.awsrequest.AWSResponse)
    assert response.status_code == 200
    assert response.content == b'{"a":1}'
    assert response.headers["Content-Type"] == "application/x-amz-json-1.0"
    method, path, headers, body = server.requests[0]
    assert (method, path, body) == ("POST", "/", b"{}")
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.ListTables"


def test_send_decodes_gzip_only_when_asked(servers: Callable[..., _Server]) -> None:
    payload = b'{"Items": "' + b"x" * 5000 + b'"}'
    server = servers(lambda h: (200, {"Content-Encoding": "gzip"}, gzip.compress(payload)))
    transport = Transport(TransportOptions())
    decoded = transport.send(_prepared(server.url + "/"), decode_content=True)
    assert decoded.content == payload
    assert "Content-Encoding" not in decoded.headers
    assert decoded.headers["Content-Length"] == str(len(payload))
    raw = transport.send(_prepared(server.url + "/"))
    assert gzip.decompress(raw.content) == payload


def _closed_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def test_send_connection_refused_is_endpoint_connection_error() -> None:
    host = _random_loopback()
    url = f"http://{host}:{_closed_port(host)}/"
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        Transport(TransportOptions()).send(_prepared(url))


def test_send_read_timeout(servers: Callable[..., _Server]) -> None:
    def slow(handler: _Handler) -> Reply:
        time.sleep(1.0)
        return 200, {}, b"{}"

    server = servers(slow)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        Transport(TransportOptions()).send(_prepared(server.url + "/"), timeout=(1.0, 0.2))


def test_send_connection_closed(servers: Callable[..., _Server]) -> None:
    def hang_up(handler: _Handler) -> Reply:
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True
        return 200, {}, b""

    server = servers(hang_up)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        Transport(TransportOptions()).send(_prepared(server.url + "/"))


def test_send_tls_failure_is_botocore_ssl_error(
    servers: Callable[..., _Server], ca: trustme.CA
) -> None:
    server = _tls_server(servers, ca)
    with pytest.raises(botocore.exceptions.SSLError):
        Transport(TransportOptions(scheme="https")).send(_prepared(server.url + "/"))


# -- checksums of compressed answers -------------------------------------------------------------


def _ddb_route(bad_crc: bool) -> Route:
    import zlib

    def route(handler: _Handler) -> Reply:
        if handler.command == "GET":
            return 200, {"Content-Type": "application/json"}, f'["{handler.server.host}"]'.encode()
        body = b'{"Item": {"p": {"S": "k"}}}'
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        if "gzip" in (handler.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        crc = zlib.crc32(body) & 0xFFFFFFFF  # over the bytes sent, as DynamoDB does
        headers["x-amz-crc32"] = str(crc + 1 if bad_crc else crc)
        return 200, headers, body

    return route


def _posts(server: _Server) -> int:
    return sum(1 for r in server.requests if r[0] == "POST")


@pytest.mark.parametrize("bad_crc", [False, True], ids=["good-crc", "bad-crc"])
def test_crc32_is_checked_over_the_compressed_bytes(
    servers: Callable[..., _Server], bad_crc: bool
) -> None:
    import uuid

    import boto3
    from botocore.config import Config

    from alternator_shm import Helper, fleet

    server = servers(_ddb_route(bad_crc))
    config = Config(retries={"mode": "standard", "total_max_attempts": 3})
    plain = boto3.client(
        "dynamodb", endpoint_url=server.url, region_name="x", aws_access_key_id="k",
        aws_secret_access_key="s", config=config,
    )  # fmt: skip
    plain_outcome: Any
    try:
        plain_outcome = plain.get_item(TableName="t", Key={"p": {"S": "k"}})["Item"]
    except botocore.exceptions.BotoCoreError as e:
        plain_outcome = type(e)
    plain_posts = _posts(server)
    server.requests.clear()
    ns = f"t-{uuid.uuid4().hex}"
    h = Helper([server.host], port=server.port, credentials=("k", "s"), namespace=ns,
               response_compression=True, botocore_config=config)  # fmt: skip
    try:
        ours: Any
        try:
            ours = h.new_dynamodb_client().get_item(TableName="t", Key={"p": {"S": "k"}})["Item"]
        except botocore.exceptions.BotoCoreError as e:
            ours = type(e)
    finally:
        h.close()
        fleet.cleanup(ns)
    posts = [r for r in server.requests if r[0] == "POST"]
    assert all("gzip" in r[2].get("Accept-Encoding", "") for r in posts)
    assert (ours, len(posts)) == (plain_outcome, plain_posts)
    assert len(posts) == (3 if bad_crc else 1)


# -- TLS key log file ------------------------------------------------------------------------------


def _key_log_server(servers: Callable[..., _Server], ca: trustme.CA) -> _Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server = servers(tls=context)
    ca.issue_cert(server.host).configure_cert(context)
    return server


def test_key_log_created_0600_and_appended(
    servers: Callable[..., _Server], ca: trustme.CA, tmp_path: Path
) -> None:
    server = _key_log_server(servers, ca)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    path = tmp_path / "keys.log"
    old = os.umask(0o022)
    try:
        for _ in range(2):
            t = Transport(TransportOptions(scheme="https", ca_file=str(ca_file),
                                           key_log_file=str(path)))  # fmt: skip
            assert t.request("GET", server.url + "/").status == 200
            t.close()
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o600
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert len({line.split()[1] for line in lines}) == 2  # two connections, both kept
    path.chmod(0o644)
    Transport(TransportOptions(scheme="https", ca_file=str(ca_file),
                               key_log_file=str(path))).prepare()  # fmt: skip
    assert os.stat(path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("via", ["option", "SSLKEYLOGFILE"])
def test_key_log_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "keys.log"
    link.symlink_to(target)
    options = TransportOptions(scheme="https")
    if via == "option":
        options = TransportOptions(scheme="https", key_log_file=str(link))
    else:
        monkeypatch.setenv("SSLKEYLOGFILE", str(link))
    with pytest.raises(ConfigurationError, match="symbolic link"):
        Transport(options).prepare()
    assert not target.exists()


def test_sslkeylogfile_gets_the_same_rules(
    servers: Callable[..., _Server], ca: trustme.CA, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    server = _key_log_server(servers, ca)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    path = tmp_path / "env-keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    t = Transport(TransportOptions(scheme="https", ca_file=str(ca_file)))
    assert t.request("GET", server.url + "/").status == 200
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "CLIENT" in path.read_text() or "SECRET" in path.read_text()


@pytest.mark.parametrize("bad_crc", [False, True], ids=["good-crc", "bad-crc"])
def test_async_crc32_is_checked_over_the_compressed_bytes(
    servers: Callable[..., _Server], bad_crc: bool
) -> None:
    """The async client (aiohttp) treats a compressed answer's checksum as the sync one does:
    a good checksum is one request; a bad one behaves as plain aiobotocore on the same server."""
    import asyncio
    import uuid

    from aiobotocore.session import get_session
    from botocore.config import Config

    from alternator_shm import Helper, fleet

    server = servers(_ddb_route(bad_crc))
    config = Config(retries={"mode": "standard", "total_max_attempts": 3})

    async def plain() -> Any:
        async with get_session().create_client(
            "dynamodb", endpoint_url=server.url, region_name="x", aws_access_key_id="k",
            aws_secret_access_key="s", config=config,
        ) as ddb:  # fmt: skip
            try:
                return (await ddb.get_item(TableName="t", Key={"p": {"S": "k"}}))["Item"]
            except botocore.exceptions.BotoCoreError as e:
                return type(e)

    plain_outcome = asyncio.run(plain())
    plain_posts = _posts(server)
    server.requests.clear()
    ns = f"t-{uuid.uuid4().hex}"
    h = Helper([server.host], port=server.port, credentials=("k", "s"), namespace=ns,
               response_compression=True, botocore_config=config)  # fmt: skip

    async def ours() -> Any:
        async with h.new_async_dynamodb_client() as ddb:
            try:
                return (await ddb.get_item(TableName="t", Key={"p": {"S": "k"}}))["Item"]
            except botocore.exceptions.BotoCoreError as e:
                return type(e)

    try:
        h.live_nodes()
        outcome = asyncio.run(ours())
    finally:
        h.close()
        fleet.cleanup(ns)
    posts = [r for r in server.requests if r[0] == "POST"]
    assert all("gzip" in r[2].get("Accept-Encoding", "") for r in posts)
    assert (outcome, len(posts)) == (plain_outcome, plain_posts)
    if not bad_crc:
        assert (outcome, len(posts)) == ({"p": {"S": "k"}}, 1)


@pytest.mark.parametrize("via", ["option", "SSLKEYLOGFILE"])
def test_key_log_fifo_is_refused_without_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    # A FIFO with no reader: a blocking open() for writing would wait forever, so the client
    # creation would hang; it must be refused at once like any other non-regular file.
    import threading

    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    options = TransportOptions(scheme="https")
    if via == "option":
        options = TransportOptions(scheme="https", key_log_file=str(fifo))
    else:
        monkeypatch.setenv("SSLKEYLOGFILE", str(fifo))
    outcome: list[BaseException | None] = []

    def prepare() -> None:
        try:
            Transport(options).prepare()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=prepare, daemon=True)
    thread.start()
    thread.join(10)  # a non-blocking refusal takes microseconds
    if thread.is_alive():
        # Unblock the stuck open() (a reader appears) so the thread ends, then fail.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        thread.join(30)
        os.close(reader)
        pytest.fail("opening a FIFO key log blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigurationError), outcome


def test_both_raw_bodies_read_alike() -> None:
    """botocore's ``raw`` (read / stream) and aiobotocore's (``await read``) share one buffer."""
    import asyncio

    from alternator_shm.aio.transport import _ReadBody
    from alternator_shm.transport import _BufferedBody

    sync = _BufferedBody(b"abcdef")
    assert list(sync.stream()) == [b"abcdef"]  # botocore's .content; the body stays
    assert (sync.read(2), sync.read(10), sync.read()) == (b"ab", b"cdef", b"")
    assert list(sync.stream()) == []

    async def reads() -> tuple[bytes, ...]:
        body = _ReadBody(b"abcdef")
        return (await body.read(2), await body.read(), await body.read())

    assert asyncio.run(reads()) == (b"ab", b"cdef", b"")
    closed = _BufferedBody(b"abc")
    closed.close()
    assert closed.read() == b""


def test_a_fork_child_closes_its_copy_of_an_unpooled_connection_in_flight() -> None:
    """A discovery fetch or a probe (unpooled connections) in flight in another thread when the
    process forks: the child must close its copy, or it keeps the parent's connection open (no
    FIN while it lives). A CI run saw a child still holding one after its first use."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        conn = Transport(TransportOptions()).connection(f"http://127.0.0.1:{port}/localnodes",
                                                        timeout=5)
        conn.connect()  # in flight: connected, no answer yet
        assert conn.sock is not None
        inode = os.fstat(conn.sock.fileno()).st_ino
        pid = os.fork()
        if pid == 0:  # the child: the at-fork hook ran
            held = False
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    held = held or os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{inode}]"
            os._exit(1 if held else 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child kept the parent's connection"
        assert conn.sock is not None and conn.sock.fileno() >= 0  # the parent's is untouched
        conn.close()
    finally:
        listener.close()
