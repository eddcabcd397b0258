"""Review of issue 16 (client-CPU changes keep the wire as plain boto3's): cases where a
Helper client's wire differs from a plain boto3 client's in a way the README does not state.

Each test does the same thing with a plain boto3 client (``endpoint_url`` = one node) and a
Helper client, and compares what a proxy or the node saw. Each failed on the code as
reviewed (they were strict xfails until fixed).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from test_helper_support import (
    all_api_entries,
    header,
    make_helper,
    module_cluster,
    plain_client,
)

from alternator_shm import __version__

USERS = {"r16-key": "r16-secret"}
TABLE = "r16_table"
KEY = {"p": {"S": "k"}}
ONE_ATTEMPT = Config(retries={"total_max_attempts": 1})

cluster = module_cluster(nodes=1, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


class _RefusingProxy:
    """An HTTP proxy that records each request line and answers 502 (never forwards)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(50)
        self.lock = threading.Lock()
        self.seen: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                with self.lock:
                    self.seen.append(data.split(b"\r\n", 1)[0])
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

    def api_calls(self) -> int:
        with self.lock:
            return sum(1 for line in self.seen if b"/localnodes" not in line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RefusingProxy]:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "HTTPS_PROXY",
                 "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    p = _RefusingProxy()
    yield p
    p.close()


def _call(client: Any) -> str:
    try:
        client.get_item(TableName=TABLE, Key=KEY)
    except Exception as e:  # the proxy answers 502
        return type(e).__name__
    return "ok"


def test_http_proxy_set_later_applies_to_a_client_created_after_it(
    cluster: Any, proxy: _RefusingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_helper(cluster) as h:
        before = h.new_dynamodb_client(config=ONE_ATTEMPT)
        assert _call(before) == "ok"  # direct: no proxy yet
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        # plain boto3: a client made now goes through the proxy
        _call(plain_client(cluster, config=ONE_ATTEMPT))
        assert proxy.api_calls() == 1
        # ours: a client made now (same transport options) must too; it goes direct
        _call(h.new_dynamodb_client(config=ONE_ATTEMPT))
        assert proxy.api_calls() == 2


def test_http_proxy_unset_later_is_not_used_by_a_client_created_after_it(
    cluster: Any, proxy: _RefusingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", ",".join(cluster.seeds))  # discovery goes direct
    with make_helper(cluster) as h:
        h.live_nodes()
        monkeypatch.delenv("NO_PROXY")
        _call(h.new_dynamodb_client(config=ONE_ATTEMPT))  # through the proxy: 502
        assert proxy.api_calls() == 1
        monkeypatch.delenv("HTTP_PROXY")
        assert _call(plain_client(cluster, config=ONE_ATTEMPT)) == "ok"  # plain: direct now
        assert _call(h.new_dynamodb_client(config=ONE_ATTEMPT)) == "ok"
        assert proxy.api_calls() == 1


def test_session_user_agent_extra_is_appended_without_boto3s_own_token(cluster: Any) -> None:
    session = boto3.Session()
    session._session.user_agent_extra += " sessx/3"
    cluster.clear_logs()
    with make_helper(cluster, session=session) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
    ((_, entry),) = all_api_entries(cluster)
    # Without the session extra the wire is exactly "alternator-shm/<v>": botocore's own
    # identification (Botocore/<v>) is replaced by our token; the user's extra is appended.
    assert header(entry, "User-Agent") == f"alternator-shm/{__version__} sessx/3"


def test_optimize_headers_resource_sends_no_user_agent(cluster: Any) -> None:
    cluster.clear_logs()
    with make_helper(cluster, optimize_headers=True) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
        h.new_dynamodb_resource().meta.client.get_item(TableName=TABLE, Key={"p": "k"})
    client_entry, resource_entry = (e for _, e in all_api_entries(cluster))
    assert header(client_entry, "User-Agent") is None
    assert header(resource_entry, "User-Agent") is None
