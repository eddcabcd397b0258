"""botocore hooks: per-attempt routing, failure reporting, headers, compression.

A real botocore DynamoDB client talks to tiny fake DynamoDB servers (stdlib http.server on
random 127.x.y.z addresses) that record what arrives on the wire. SigV4 verification against
enforced auth is covered by tests/integration/test_hooks_emulator.py.
"""

from __future__ import annotations

import gzip
import json
import random
import socket
import threading
import zlib
from collections.abc import Collection, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session
import pytest

from alternator_shm._version import __version__
from alternator_shm.errors import NoLiveNodesError
from alternator_shm.hooks import TRIED_KEY, HookOptions, register_hooks
from alternator_shm.transport import Transport, TransportOptions


def _random_loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeDynamo

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = raw
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(raw)
        self.server.received.append(
            {"headers": dict(self.headers.items()), "raw": raw, "json": json.loads(body or b"{}")}
        )
        status = self.server.status
        if status == 200:
            payload = json.dumps({"TableNames": self.server.tables}).encode()
        else:
            payload = (
                b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"x"}'
            )
        encoding = None
        accept = self.headers.get("Accept-Encoding", "")
        if status == 200 and len(payload) >= 4096 and self.server.encoding in accept:
            encoding = self.server.encoding
            payload = gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)
            self.server.compressed += 1
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _FakeDynamo(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        for _ in range(20):
            try:
                super().__init__((_random_loopback(), 0), _Handler)
                break
            except OSError:
                continue
        self.host, self.port = self.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.status = 200
        self.tables: list[str] = []
        self.encoding = "gzip"  # what the fake compresses big answers with, when accepted
        self.compressed = 0
        self.received: list[dict[str, Any]] = []
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class RoundRobin:
    """The simplest Router: next node in order that this call has not tried yet."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        self.position = 0
        self.choices: list[tuple[tuple[str, ...], str]] = []
        self.failures: list[tuple[str, BaseException]] = []
        self.successes: list[str] = []

    def choose(self, tried: Collection[str]) -> str:
        for _ in range(len(self.nodes)):
            node = self.nodes[self.position % len(self.nodes)]
            self.position += 1
            if node not in tried:
                self.choices.append((tuple(tried), node))
                return node
        raise NoLiveNodesError("every node tried")

    def report_failure(self, node: str, error: BaseException) -> None:
        self.failures.append((node, error))

    def report_success(self, node: str) -> None:
        self.successes.append(node)


@pytest.fixture
def fakes() -> Iterator[list[_FakeDynamo]]:
    servers = [_FakeDynamo() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


def _dead_url() -> str:
    host = _random_loopback()
    with socket.socket() as sock:
        sock.bind((host, 0))
        return f"http://{host}:{sock.getsockname()[1]}"


def _client(
    router: RoundRobin,
    options: HookOptions | None = None,
    *,
    attempts: int = 3,
    mode: str = "legacy",
    timeout: tuple[float, float] = (1.0, 2.0),
) -> Any:
    session = botocore.session.get_session()
    client = session.create_client(
        "dynamodb",
        # Deliberately not one of the nodes: the hooks must replace it on every attempt.
        endpoint_url="http://placeholder.invalid:1",
        region_name="alternator",
        aws_access_key_id="key",
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"total_max_attempts": attempts, "mode": mode}),
    )
    register_hooks(
        client.meta.events,
        router=router,
        transport=Transport(TransportOptions()),
        options=options or HookOptions(),
        timeout=timeout,
    )
    return client


def _signed(headers: dict[str, str]) -> list[str]:
    auth = headers["Authorization"]
    return auth.split("SignedHeaders=")[1].split(",")[0].split(";")


@pytest.mark.parametrize("mode", ["legacy", "standard"])
def test_every_attempt_goes_to_another_node(fakes: list[_FakeDynamo], mode: str) -> None:
    fakes[0].status = fakes[1].status = 500
    fakes[2].tables = ["t"]
    router = RoundRobin([f.url for f in fakes])
    response = _client(router, mode=mode).list_tables()
    assert response["TableNames"] == ["t"]
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert [len(f.received) for f in fakes] == [1, 1, 1]
    urls = [f.url for f in fakes]
    # The tried list lives in the call's context and grows across attempts.
    assert router.choices == [((), urls[0]), ((urls[0],), urls[1]), ((urls[0], urls[1]), urls[2])]
    # HTTP 500 is health-neutral: neither a failure nor a success (node-health spec).
    assert router.successes == urls[2:] and router.failures == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_health_neutral_5xx_are_not_reported(fakes: list[_FakeDynamo], status: int) -> None:
    fakes[0].status = status
    router = RoundRobin([fakes[0].url])
    with pytest.raises(Exception):  # noqa: B017 - whatever botocore makes of it
        _client(router, mode="standard", attempts=1).list_tables()
    assert router.successes == [] and router.failures == []


def test_separate_calls_have_separate_tried_lists(fakes: list[_FakeDynamo]) -> None:
    router = RoundRobin([f.url for f in fakes])
    client = _client(router)
    for _ in range(4):
        client.list_tables()
    assert [tried for tried, _ in router.choices] == [()] * 4
    assert [len(f.received) for f in fakes] == [2, 1, 1]


@pytest.mark.parametrize("mode", ["legacy", "standard"])
def test_connection_failure_is_reported_and_retried(fakes: list[_FakeDynamo], mode: str) -> None:
    dead = _dead_url()
    router = RoundRobin([dead, fakes[0].url])
    assert _client(router, mode=mode).list_tables()["TableNames"] == []
    assert [node for node, _ in router.failures] == [dead]
    assert isinstance(router.failures[0][1], botocore.exceptions.EndpointConnectionError)
    assert router.successes == [fakes[0].url]


def test_read_timeout_is_reported_and_raised_as_botocore_error() -> None:
    # A listener that accepts but never answers.
    with socket.socket() as listener:
        listener.bind((f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.9", 0))
        listener.listen(8)
        url = f"http://{listener.getsockname()[0]}:{listener.getsockname()[1]}"
        router = RoundRobin([url])
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            _client(router, attempts=1, timeout=(1.0, 0.2)).list_tables()
    assert [node for node, _ in router.failures] == [url]


def test_all_nodes_down_raises_botocore_error_after_distinct_attempts() -> None:
    dead = [_dead_url(), _dead_url()]
    router = RoundRobin(dead)
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        _client(router, attempts=2).list_tables()
    assert [node for node, _ in router.failures] == dead


def test_router_refusal_propagates(fakes: list[_FakeDynamo]) -> None:
    router = RoundRobin([])
    with pytest.raises(NoLiveNodesError):
        _client(router).list_tables()


@pytest.mark.parametrize(
    "user_agent, expected",
    [(None, f"alternator-shm/{__version__}"), ("app/1", "app/1"), ("", None)],
)
def test_user_agent(fakes: list[_FakeDynamo], user_agent: str | None, expected: str | None) -> None:
    router = RoundRobin([fakes[0].url])
    _client(router, HookOptions(user_agent=user_agent)).list_tables()
    headers = fakes[0].received[0]["headers"]
    assert headers.get("User-Agent") == expected  # "" sends none (not even urllib3's default)


def _header_bytes(headers: dict[str, str]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.items())


@pytest.mark.parametrize("compress", [False, True])
def test_optimize_headers_keeps_signed_and_needed_only(
    fakes: list[_FakeDynamo], compress: bool
) -> None:
    item = {"p": {"S": "x" * 600}}
    router = RoundRobin([fakes[0].url, fakes[1].url])
    plain = _client(router, HookOptions(user_agent=None))
    plain.put_item(TableName="t", Item=item)
    options = HookOptions(optimize_headers=True, request_compression=100 if compress else None)
    optimized = _client(router, options)
    optimized.put_item(TableName="t", Item=item)
    before = fakes[0].received[0]["headers"]
    after = fakes[1].received[0]["headers"]
    names = {name.lower() for name in after}
    assert set(_signed(after)) <= names  # every signed header is still there
    allowed = {
        "host",
        "x-amz-target",
        "content-length",
        "authorization",
        "x-amz-date",
        "user-agent",
    }
    allowed |= set(_signed(after))
    assert names <= allowed
    # Content-Type is dropped before signing (Alternator never reads it): neither signed nor
    # sent. Dropping it after signing would break enforced auth (the Go client's bug).
    assert "content-type" not in names and "content-type" not in _signed(after)
    assert "content-type" in _signed(before)
    assert not any(name.startswith("amz-sdk-") for name in names)
    assert "accept-encoding" not in names
    assert "user-agent" not in names  # not configured: optimisation drops it
    assert ("content-encoding" in names) is compress
    assert _header_bytes(after) < _header_bytes(before)
    assert fakes[1].received[0]["json"]["Item"] == item


def test_request_compression_before_signing(fakes: list[_FakeDynamo]) -> None:
    router = RoundRobin([fakes[0].url])
    client = _client(router, HookOptions(request_compression=1000))
    big = {"p": {"S": "y" * 5000}}
    client.put_item(TableName="t", Item=big)
    client.put_item(TableName="t", Item={"p": {"S": "small"}})
    large, small = fakes[0].received
    assert large["headers"]["Content-Encoding"] == "gzip"
    assert "content-encoding" in _signed(large["headers"])
    assert len(large["raw"]) < 1000 and int(large["headers"]["Content-Length"]) == len(large["raw"])
    assert large["json"]["Item"] == big
    assert "Content-Encoding" not in small["headers"]


def test_request_compression_is_redone_on_every_attempt(fakes: list[_FakeDynamo]) -> None:
    fakes[0].status = 500
    router = RoundRobin([fakes[0].url, fakes[1].url])
    big = {"p": {"S": "z" * 5000}}
    _client(router, HookOptions(request_compression=1000)).put_item(TableName="t", Item=big)
    for fake in fakes[:2]:
        (request,) = fake.received
        assert request["headers"]["Content-Encoding"] == "gzip"
        assert request["json"]["Item"] == big


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_response_compression(fakes: list[_FakeDynamo], encoding: str) -> None:
    tables = [f"table-{i:04d}-{'x' * 40}" for i in range(200)]
    fakes[0].tables = tables
    fakes[0].encoding = encoding
    router = RoundRobin([fakes[0].url])
    client = _client(router, HookOptions(response_compression=True))
    assert client.list_tables()["TableNames"] == tables
    assert fakes[0].received[0]["headers"]["Accept-Encoding"] == "gzip, deflate"
    assert fakes[0].compressed == 1


def test_no_response_compression_by_default(fakes: list[_FakeDynamo]) -> None:
    fakes[0].tables = [f"table-{i:04d}-{'x' * 40}" for i in range(200)]
    router = RoundRobin([fakes[0].url])
    assert len(_client(router).list_tables()["TableNames"]) == 200
    assert fakes[0].received[0]["headers"].get("Accept-Encoding", "identity") == "identity"


def test_tried_key_is_in_the_shared_context(fakes: list[_FakeDynamo]) -> None:
    seen: list[list[str]] = []
    router = RoundRobin([fakes[0].url])
    client = _client(router)
    client.meta.events.register(
        "before-sign.dynamodb", lambda request, **kw: seen.append(list(request.context[TRIED_KEY]))
    )
    client.list_tables()
    assert seen == [[fakes[0].url]]
