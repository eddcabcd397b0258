"""Shared pieces of the Helper integration tests (no tests here).

Kept in a ``test_helper_*`` module so the Helper tests stay self-contained; the other modules
import it by name (pytest puts this directory on ``sys.path``, and spawned children inherit
that path, so the worker functions below are importable in them too).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alternator_shm import Helper
from alternator_shm import fleet as _fleet

#: Refresh period used by the tests: short, so topology changes show up fast.
REFRESH = 0.2
#: The common name of the client certificate the ``mtls`` fixture (conftest.py) issues.
MTLS_CLIENT_CN = "alternator-shm-test-client"


def unique_namespace() -> str:
    return f"t-{uuid.uuid4().hex}"


def cluster_credentials(cluster: Any) -> tuple[str, str]:
    creds = cluster.credentials
    if isinstance(creds, dict):
        key, secret = next(iter(creds.items()))
        return (key, secret)
    if hasattr(creds, "access_key"):
        return (creds.access_key, creds.secret_key)
    key, secret = creds[0], creds[1]
    return (key, secret)


def plain_client(cluster: Any, **kwargs: Any) -> Any:
    """A plain boto3 DynamoDB client on the cluster's first node (``endpoint_url``), with its
    credentials: what a Helper client is compared with. A new session each time: boto3's
    default one caches the environment (proxies, for one)."""
    import boto3

    key, secret = cluster_credentials(cluster)
    kwargs.setdefault("endpoint_url", cluster.nodes[0].url)
    return boto3.Session().client(
        "dynamodb",
        region_name="alternator",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        **kwargs,
    )


def helper_options(cluster: Any, **overrides: Any) -> dict[str, Any]:
    """Options that reach ``cluster`` with its credentials, a fresh namespace, fast refresh."""
    options: dict[str, Any] = {
        "port": cluster.port,
        "scheme": cluster.scheme,
        "credentials": cluster_credentials(cluster),
        "refresh_interval": REFRESH,
        "namespace": unique_namespace(),
    }
    if cluster.scheme == "https":
        options["ca_file"] = cluster.ca_file
    options.update(overrides)
    return options


@contextlib.contextmanager
def make_helper(cluster: Any, **overrides: Any) -> Iterator[Helper]:
    """A Helper on ``cluster``; closed and its shared state removed afterwards."""
    options = helper_options(cluster, **overrides)
    seeds = options.pop("seeds", None) or list(cluster.seeds)
    helper = Helper(seeds, **options)
    try:
        yield helper
    finally:
        helper.close()
        cleanup(helper.namespace)


def module_cluster(name: str = "cluster", **options: Any) -> Any:
    """A module-scoped emulator cluster fixture, built with ``Cluster(**options)``.

    ``cluster = module_cluster(nodes=3, users=USERS, backend="null")`` in a test module; give
    ``name=`` for a second one (``tls_cluster = module_cluster("tls_cluster", https=True)``).
    Pair it with ``pytestmark = pytest.mark.usefixtures("clean_cluster")`` (conftest.py) for
    empty request logs before each test and no fault left injected after it.
    """
    # Imported here: spawned children import this module for the worker functions below, and
    # need neither pytest nor the emulator.
    import pytest

    @pytest.fixture(scope="module", name=name)
    def cluster() -> Iterator[Any]:
        from alternator_shm.emulator import Cluster

        with Cluster(**options) as c:
            yield c

    return cluster


def create_table(
    cluster: Any, prefix: str, *, range_key: str | None = None, items: Iterable[Any] = ()
) -> str:
    """A new on-demand table ``<prefix>_<hex>`` with string hash key ``p`` (and numeric range
    key ``range_key``), holding ``items``; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    schema = [{"AttributeName": "p", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "p", "AttributeType": "S"}]
    if range_key is not None:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": "N"})
    with make_helper(cluster) as h:
        ddb = h.new_dynamodb_client()
        ddb.create_table(TableName=name, KeySchema=schema, AttributeDefinitions=attributes,
                         BillingMode="PAY_PER_REQUEST")  # fmt: skip
        for item in items:
            ddb.put_item(TableName=name, Item=item)
    return name


def cleanup(namespace: str) -> None:
    with contextlib.suppress(Exception):
        _fleet.cleanup(namespace)


def node_urls(cluster: Any, nodes: Iterable[Any] | None = None) -> list[str]:
    return sorted(n.url.rstrip("/") for n in (cluster.nodes if nodes is None else nodes))


def api_entries(node: Any, operation: str | None = None) -> list[Any]:
    """The DynamoDB API requests (``POST /``) a node logged, optionally of one operation."""
    return [
        e
        for e in node.log
        if e.method == "POST"
        and e.operation is not None
        and (operation is None or e.operation == operation)
    ]


def _is_probe(entry: Any) -> bool:
    return "health probe" in entry.headers.get("User-Agent", "")


def localnodes_entries(node: Any) -> list[Any]:
    """Discovery's ``/localnodes`` questions (the node-health probes excluded)."""
    return [
        e
        for e in node.log
        if e.method == "GET" and e.path.startswith("/localnodes") and not _is_probe(e)
    ]


def probe_entries(node: Any) -> list[Any]:
    """The node-health probes a node received (``GET /localnodes`` from the leader)."""
    return [e for e in node.log if e.method == "GET" and _is_probe(e)]


def api_counts(cluster: Any, operation: str | None = None) -> Counter[str]:
    """Requests per node URL (nodes that saw none are present with 0)."""
    return Counter({n.url.rstrip("/"): len(api_entries(n, operation)) for n in cluster.nodes})


def all_api_entries(cluster: Any, operation: str | None = None) -> list[tuple[Any, Any]]:
    """(node, entry) for every API request of the cluster, in time order."""
    pairs = [(n, e) for n in cluster.nodes for e in api_entries(n, operation)]
    pairs.sort(key=lambda pair: pair[1].time)
    return pairs


def header(entry: Any, name: str) -> str | None:
    lowered = name.lower()
    for key, value in entry.headers.items():
        if key.lower() == lowered:
            return str(value)
    return None


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` passes (returns last)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- worker functions for spawned processes ---------------------------------------------------


def spawn_context() -> Any:
    return multiprocessing.get_context("spawn")


def worker_get_items(
    helper: Helper,
    table: str,
    calls: int,
    start_event: Any,
    results: Any,
    ident: int,
) -> None:
    """Child process: wait for the go, make ``calls`` GetItem calls, report what it saw."""
    client = helper.new_dynamodb_client()
    helper.live_nodes()  # attach and wait for the shared table before the race starts
    start_event.wait(30)
    failures = 0
    for i in range(calls):
        try:
            client.get_item(TableName=table, Key={"p": {"S": f"k{ident}-{i}"}})
        except Exception:  # count, never raise: the parent asserts zero
            failures += 1
    stats = helper.stats()
    results.put(
        {
            "ident": ident,
            "failures": failures,
            "nodes": list(helper.live_nodes()),
            "generation": stats.generation,
            "segment": stats.segment_name,
        }
    )
    helper.close()


def worker_load_until(
    helper: Helper,
    table: str,
    threads: int,
    stop_event: Any,
    ready: Any,
    results: Any,
    ident: int,
) -> None:
    """Child process: ``threads`` threads make GetItem calls until ``stop_event`` is set."""
    client = helper.new_dynamodb_client()
    helper.live_nodes()
    calls = [0] * threads
    failures: list[str] = []

    def run(slot: int) -> None:
        deadline = time.monotonic() + 50  # bounded even if the parent dies
        while not stop_event.is_set() and time.monotonic() < deadline:
            try:
                client.get_item(TableName=table, Key={"p": {"S": f"w{ident}-{slot}"}})
                calls[slot] += 1
            except Exception as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    ready.put(ident)
    for w in workers:
        w.join(60)
    results.put({"ident": ident, "calls": sum(calls), "failures": failures})
    helper.close()


#: A uid no test user has: files chowned to it look like another local user's.
NOBODY = 65534


@contextlib.contextmanager
def squatted(path: str) -> Iterator[None]:
    """Another local user (uid 65534) owns ``path``, as after ``touch`` by that user (root)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    os.chown(path, NOBODY, NOBODY)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def run_child(body: Callable[[], int], fork: Callable[[], int] = os.fork) -> int:
    """Fork; the child runs ``body`` and exits with its code (98 on an exception)."""
    pid = fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        signal.alarm(40)  # a hung child ends itself: nothing outlives the test
        try:
            code = body()
        except BaseException:
            code = 98
        finally:
            os._exit(code)
    return pid


def wait_children(pids: list[int], timeout: float) -> dict[int, int | None]:
    """Exit code per child; None for a child still alive at the deadline (then SIGKILLed)."""
    deadline = time.monotonic() + timeout
    codes: dict[int, int | None] = {}
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                pending.discard(pid)
        time.sleep(0.02)
    for pid in pending:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes[pid] = None
    return codes


# -- a forward proxy on loopback ----------------------------------------------------------------


class _ForwardProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy (absolute-form requests) and CONNECT tunnel on loopback."""

    protocol_version = "HTTP/1.1"
    server: ForwardProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.record("CONNECT", self.path, self.headers)
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True

    def _forward(self) -> None:
        self.server.record(self.command, self.path, self.headers)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        from urllib.parse import urlsplit

        parts = urlsplit(self.path)
        upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=10)
        try:
            lines = [f"{self.command} {parts.path or '/'} HTTP/1.1"]
            for k, v in self.headers.items():
                if k.lower() not in ("proxy-authorization", "proxy-connection", "connection"):
                    lines.append(f"{k}: {v}")
            lines.append("Connection: close")
            upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            answer = b""
            while chunk := upstream.recv(65536):
                answer += chunk
        finally:
            upstream.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.send_response_only(int(status_line.split()[1]))
        for line in header_lines:
            k, _, v = line.partition(":")
            if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                self.send_header(k, v.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward


class ForwardProxy(ThreadingHTTPServer):
    """A forward proxy on 127.0.0.1 (a port of its own) that records what it was asked:
    ``seen`` holds (method, request target, headers); the ``proxy`` fixture (conftest.py)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ForwardProxyHandler)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        #: how many Proxy-Authorization headers each request of ``seen`` carried
        self.credentials: list[int] = []
        self.connections = 0
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def get_request(self) -> Any:
        request = super().get_request()
        with self.lock:
            self.connections += 1
        return request

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()
            self.credentials.clear()

    def record(self, method: str, target: str, headers: Any) -> None:
        with self.lock:
            self.seen.append((method, target, dict(headers)))
            self.credentials.append(len(headers.get_all("Proxy-Authorization") or []))

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def api_seen(proxy: ForwardProxy) -> list[tuple[str, str, dict[str, str]]]:
    """What ``proxy`` was asked, discovery's ``/localnodes`` left out."""
    return [s for s in proxy.seen if not s[1].split("?")[0].endswith("/localnodes")]
