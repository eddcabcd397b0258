"""Discovery against hostile answers: one total deadline per request, a hard body cap.

Raw-socket servers on loopback play the bad node: one that trickles its answer (headers or
body) one byte at a time, one whose answer never ends, one that announces a huge body. Each
server is bounded in time and bytes and stops with the test. Timing bounds here are loose
(several times the deadline): they separate "bounded" from "held for the whole trickle".
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alternator_shm import Helper, NoLiveNodesError
from alternator_shm import fleet as _fleet
from alternator_shm.discovery import Discovery
from alternator_shm.errors import DiscoveryError
from alternator_shm.transport import Transport, TransportOptions

_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


class _RawServer:
    """One listening socket on 127.0.0.1; ``behave(conn, server)`` plays each connection."""

    def __init__(self, behave: Callable[[socket.socket, _RawServer], None]) -> None:
        self.stop = threading.Event()
        self.sent = 0  # body bytes written, all connections
        self.connections = 0
        self._behave = behave
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(65536)  # the request (small, one segment on loopback)
            self._behave(conn, self)

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, _RawServer], None]], _RawServer]]:
    made: list[_RawServer] = []

    def make(behave: Callable[[socket.socket, _RawServer], None]) -> _RawServer:
        server = _RawServer(behave)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def trickle_body(conn: socket.socket, server: _RawServer) -> None:
    """A valid answer, announced complete, sent one byte every 0.1 s (for up to 60 s)."""
    body = b'["127.0.0.1"]' + b" " * 600
    conn.sendall(_OK_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode())
    for byte in body:
        if server.stop.wait(0.1):
            return
        conn.sendall(bytes([byte]))
        server.sent += 1


def trickle_headers(conn: socket.socket, server: _RawServer) -> None:
    """The status line, then one header byte every 0.1 s (for up to 60 s)."""
    conn.sendall(_OK_HEAD + b"X-Slow: ")
    for _ in range(600):
        if server.stop.wait(0.1):
            return
        conn.sendall(b"a")


def endless(conn: socket.socket, server: _RawServer) -> None:
    """An answer without length that never ends (stops at 256 MiB or when dropped)."""
    conn.sendall(_OK_HEAD + b"Connection: close\r\n\r\n[")
    chunk = b'"127.0.0.1", ' * 5000
    while server.sent < 256 * 1024 * 1024 and not server.stop.is_set():
        conn.sendall(chunk)
        server.sent += len(chunk)


def huge_length(conn: socket.socket, server: _RawServer) -> None:
    """Announces 1 GB, sends a little, then waits."""
    conn.sendall(_OK_HEAD + b"Content-Length: 1000000000\r\n\r\n[")
    server.stop.wait(30)


def _discovery(server: _RawServer, **kwargs: Any) -> Discovery:
    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    kwargs.setdefault("request_timeout", 1.0)
    kwargs.setdefault("fetch_timeout", 2.0)
    return Discovery(["127.0.0.1"], scheme="http", port=server.port, transport=transport,
                     **kwargs)


def _bounded(call: Callable[[], Any], limit: float) -> tuple[float, BaseException | None]:
    """Run ``call`` in a daemon thread; (seconds it took, its exception). Fails the test if it
    is still running after ``limit`` seconds (the old code stayed blocked for the whole
    trickle)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            outcome.append(e)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still blocked after {elapsed:.1f}s"
    return elapsed, outcome[0]


@pytest.mark.parametrize("behave", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_trickling_answer_is_cut_at_the_total_deadline(raw_server: Any, behave: Any) -> None:
    server = raw_server(behave)
    d = _discovery(server)
    elapsed, error = _bounded(d.fetch, limit=10.0)
    assert isinstance(error, DiscoveryError) and "deadline" in str(error), error
    assert elapsed < 10.0


def test_trickling_probe_is_cut_at_the_total_deadline(raw_server: Any) -> None:
    server = raw_server(trickle_body)
    d = _discovery(server)
    result: list[bool] = []
    _bounded(lambda: result.append(d.probe(f"http://127.0.0.1:{server.port}")), limit=10.0)
    assert result == [False]


def test_endless_answer_is_dropped_past_the_cap(raw_server: Any) -> None:
    server = raw_server(endless)
    d = _discovery(server, request_timeout=5.0, fetch_timeout=5.0)
    _, error = _bounded(d.fetch, limit=20.0)
    assert isinstance(error, DiscoveryError) and "too large" in str(error), error
    server.stop.wait(0.5)
    # The connection was dropped soon after the 2 MiB cap (plus socket buffers), not read on.
    assert server.sent < 24 * 1024 * 1024, server.sent


def test_announced_huge_answer_is_refused_without_reading(raw_server: Any) -> None:
    server = raw_server(huge_length)
    _, error = _bounded(_discovery(server).fetch, limit=10.0)
    assert isinstance(error, DiscoveryError) and "too large" in str(error), error


def test_update_live_nodes_in_the_leader_returns_within_its_timeout(raw_server: Any) -> None:
    """Issue 8 #2: the leader's update_live_nodes(timeout=5) stayed blocked for 25 s+."""
    server = raw_server(trickle_body)
    namespace = f"t-{uuid.uuid4().hex}"
    helper = Helper(["127.0.0.1"], port=server.port, namespace=namespace, refresh_interval=0.2)
    try:
        elapsed, error = _bounded(lambda: helper.update_live_nodes(timeout=5.0), limit=15.0)
        assert isinstance(error, (DiscoveryError, NoLiveNodesError)), error
        assert elapsed < 15.0
    finally:
        helper.close()
        with contextlib.suppress(Exception):
            _fleet.cleanup(namespace)
