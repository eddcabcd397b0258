"""Discovery: strict /localnodes parsing, scopes, candidate order, fallback, checks, probe.

The network tests run a tiny fake cluster of stdlib HTTP servers on random 127.x.y.z addresses;
each answers ``/localnodes`` with Alternator's dc/rack semantics from one shared topology.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from alternator_shm.discovery import (
    MAX_NODES,
    Discovery,
    Scope,
    node_url,
    parse_localnodes,
    scope_chain,
)
from alternator_shm.errors import ConfigurationError, DiscoveryError
from alternator_shm.transport import Transport, TransportOptions

# -- parsing --------------------------------------------------------------------------------------


def test_node_url_brackets_ipv6() -> None:
    assert node_url("http", "::1", 8000) == "http://[::1]:8000"
    assert node_url("https", "10.0.0.1", 8043) == "https://10.0.0.1:8043"
    assert node_url("http", "node-1.example", 80) == "http://node-1.example:80"


def test_parse_accepts_ips_and_names_dedups_and_sorts() -> None:
    body = json.dumps(
        ["127.0.0.3", "127.0.0.1", "::1", "[fe80::0001]", "Node-2.Example.com", "127.0.0.3", "a."]
    ).encode()
    assert parse_localnodes(body) == [
        "127.0.0.1",
        "127.0.0.3",
        "::1",
        "a",
        "fe80::1",
        "node-2.example.com",
    ]
    assert parse_localnodes(b"[]") == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b'{"nodes": ["127.0.0.1"]}',
        b'"127.0.0.1"',
        b"null",
        b'["127.0.0.1", 5]',
        b'[["127.0.0.1"]]',
        b'["127.0.0.1:8000"]',
        b'["http://127.0.0.1"]',
        b'["1.2.3.999"]',
        b'["-bad.example"]',
        b'["bad_name"]',
        b'[""]',
        b'["[127.0.0.1]"]',
        b'["fe80::1%eth0"]',
        b'["a..b"]',
        json.dumps(["x" * 64 + ".example"]).encode(),
    ],
)
def test_parse_rejects_garbage(body: bytes) -> None:
    with pytest.raises(DiscoveryError, match="/localnodes"):
        parse_localnodes(body)


def test_parse_limits_entries() -> None:
    exactly = json.dumps([f"10.{i // 256}.{i % 256}.1" for i in range(MAX_NODES)]).encode()
    assert len(parse_localnodes(exactly)) == MAX_NODES
    too_many = json.dumps([f"10.{i // 256}.{i % 256}.1" for i in range(MAX_NODES + 1)]).encode()
    with pytest.raises(DiscoveryError, match="4097 entries"):
        parse_localnodes(too_many)


# -- scopes ---------------------------------------------------------------------------------------


def test_scope_chain_with_fallback() -> None:
    assert scope_chain("dc1", "r1", True) == [
        Scope("dc1", "r1"),
        Scope("dc1", None),
        Scope(None, None),
    ]
    assert [s.kind for s in scope_chain("dc1", "r1", True)] == ["rack", "datacenter", "cluster"]
    assert scope_chain("dc1", None, True) == [Scope("dc1"), Scope()]
    assert scope_chain(None, None, True) == [Scope()]
    # rack without dc: that rack in the seed's own dc, then the seed's dc, then the cluster
    chain = scope_chain(None, "r1", True)
    assert [(s.kind, s.query()) for s in chain] == [
        ("rack", "rack=r1"),
        ("datacenter", ""),
        ("cluster", ""),
    ]


def test_scope_chain_without_fallback() -> None:
    assert scope_chain("dc1", "r1", False) == [Scope("dc1", "r1")]
    assert scope_chain(None, "r1", False) == [Scope(None, "r1")]
    assert scope_chain("dc1", None, False) == [Scope("dc1")]
    assert scope_chain(None, None, False) == [Scope()]


def test_scope_query_is_url_encoded() -> None:
    assert Scope("dc 1", "r&1=x").query() == "dc=dc%201&rack=r%261%3Dx"
    assert Scope("dc1").query() == "dc=dc1"
    assert Scope().query() == ""
    assert "rack 'r1'" in Scope("dc1", "r1").describe()
    assert "'dc1'" in Scope("dc1").describe()


# -- a fake cluster -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Node

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        node = self.server
        parts = urlsplit(self.path)
        node.cluster.asked.append((node.host, self.path))
        if parts.path == "/":
            status, body = 200, f"healthy: {self.headers['Host']}".encode()
        elif parts.path == "/localnodes":
            status, body = node.localnodes(parse_qs(parts.query))
        else:
            status, body = 404, b'{"message": "Not found", "code": 404}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Node(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cluster: _Cluster, host: str, dc: str, rack: str) -> None:
        super().__init__((host, cluster.port), _Handler)
        self.cluster, self.host, self.dc, self.rack = cluster, host, dc, rack
        self.url = f"http://{host}:{cluster.port}"
        self.answer: tuple[int, bytes] | None = None  # override: garbage, 500, ...
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def localnodes(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        if self.answer is not None:
            return self.answer
        dc = query.get("dc", [self.dc])[0]
        rack = query.get("rack", [None])[0]
        if self.cluster.old:
            dc, rack = self.dc, None  # pre-2025.1 servers ignore the parameters
        hosts = [
            n.host
            for n in self.cluster.nodes
            if n.dc == dc and (rack is None or n.rack == rack) and n.alive
        ]
        return 200, json.dumps(hosts).encode()

    @property
    def alive(self) -> bool:
        return self.host not in self.cluster.down

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        self.accepted.append(sock)
        return sock, address

    def stop(self) -> None:
        """Like a killed node: stop listening and reset every open connection."""
        self.shutdown()
        self.server_close()
        for sock in self.accepted:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Cluster:
    """Nodes on random 127.x.y.z addresses sharing one port, like Alternator."""

    def __init__(self, topology: list[tuple[str, str]], old: bool = False) -> None:
        self.old = old
        self.asked: list[tuple[str, str]] = []
        self.down: set[str] = set()
        self.nodes: list[_Node] = []
        prefix = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"
        with socket.socket() as probe:
            probe.bind((f"{prefix}.1", 0))
            self.port = probe.getsockname()[1]
        for i, (dc, rack) in enumerate(topology):
            self.nodes.append(_Node(self, f"{prefix}.{i + 1}", dc, rack))
        # One address that nobody listens on: a dead seed.
        self.dead = f"{prefix}.250"

    def urls(self, *indexes: int) -> list[str]:
        return sorted(self.nodes[i].url for i in indexes)

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        self.down.add(node.host)
        node.stop()

    def close(self) -> None:
        for node in self.nodes:
            if node.host not in self.down:
                node.stop()


@pytest.fixture
def cluster_factory() -> Iterator[Any]:
    made: list[_Cluster] = []

    def make(topology: list[tuple[str, str]], **kwargs: Any) -> _Cluster:
        for _ in range(10):  # a random /24 may collide with a parallel test; retry
            try:
                cluster = _Cluster(topology, **kwargs)
            except OSError:
                continue
            made.append(cluster)
            return cluster
        raise RuntimeError("no free loopback /24")

    yield make
    for cluster in made:
        cluster.close()


TWO_DCS = [
    ("dc1", "r1"),
    ("dc1", "r1"),
    ("dc1", "r2"),
    ("dc2", "r1"),
    ("dc2", "r3"),
]


def _discovery(cluster: _Cluster, seeds: list[int] | None = None, **kwargs: Any) -> Discovery:
    hosts = [cluster.nodes[i].host for i in (seeds if seeds is not None else [0])]
    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    return Discovery(hosts, scheme="http", port=cluster.port, transport=transport, **kwargs)


def test_constructor_validates() -> None:
    transport = Transport(TransportOptions())
    with pytest.raises(ConfigurationError):
        Discovery([], scheme="http", port=8000, transport=transport)
    with pytest.raises(ConfigurationError):
        Discovery("10.0.0.1", scheme="http", port=8000, transport=transport)
    with pytest.raises(ConfigurationError):
        Discovery(["10.0.0.1:8000"], scheme="http", port=8000, transport=transport)
    with pytest.raises(ConfigurationError):
        Discovery(["10.0.0.1"], scheme="ftp", port=8000, transport=transport)
    d = Discovery(["::1", "10.0.0.1", "10.0.0.1"], scheme="https", port=8043, transport=transport)
    assert d.seeds == ("https://[::1]:8043", "https://10.0.0.1:8043")


def test_fetch_default_is_cluster_union(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    # Seeds in both dcs: the union covers every dc reachable from them.
    d = _discovery(cluster, seeds=[0, 3])
    assert d.fetch() == cluster.urls(0, 1, 2, 3, 4)
    # One request per dc: a candidate already covered by an answer is not asked again.
    assert len([a for a in cluster.asked if a[1].startswith("/localnodes")]) == 2
    # A seed in one dc only sees that dc.
    assert _discovery(cluster, seeds=[3]).fetch() == cluster.urls(3, 4)


def test_fetch_dc_and_rack_scopes(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    assert _discovery(cluster, datacenter="dc2").fetch() == cluster.urls(3, 4)
    assert _discovery(cluster, datacenter="dc1", rack="r1").fetch() == cluster.urls(0, 1)
    # rack alone: that rack in the seed's own dc (seed 3 is in dc2)
    assert _discovery(cluster, seeds=[3], rack="r1").fetch() == cluster.urls(3)
    assert _discovery(cluster, seeds=[0], rack="r1").fetch() == cluster.urls(0, 1)
    assert ("dc=dc1&rack=r1") in {urlsplit(p).query for _, p in cluster.asked}


def test_fetch_asks_known_nodes_first_then_seeds(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    d = _discovery(cluster, seeds=[0], datacenter="dc1")
    known = [cluster.nodes[2].url, cluster.nodes[1].url]
    assert d.fetch(known) == cluster.urls(0, 1, 2)
    # A known node first (in random order), not the seed.
    assert cluster.asked[0][0] in {cluster.nodes[2].host, cluster.nodes[1].host}
    # The known nodes are dead: the seed still answers.
    cluster.asked.clear()
    cluster.kill(2)
    cluster.kill(1)
    assert d.fetch(known) == cluster.urls(0)
    assert [host for host, _ in cluster.asked] == [cluster.nodes[0].host]


def test_fallback_rack_then_dc_then_cluster(cluster_factory: Any, caplog: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    caplog.set_level(logging.WARNING, logger="alternator_shm.discovery")
    assert _discovery(cluster, datacenter="dc1", rack="nope").fetch() == cluster.urls(0, 1, 2)
    assert "rack 'nope'" in caplog.text
    caplog.clear()
    assert _discovery(cluster, seeds=[0, 3], datacenter="nope", rack="r1").fetch() == (
        cluster.urls(0, 1, 2, 3, 4)
    )
    assert "datacenter 'nope'" in caplog.text
    # Without fallback an empty scope is a verdict naming it (published as an empty table).
    result = _discovery(cluster, datacenter="dc1", rack="nope", fallback=False).fetch()
    assert result == [] and result.empty and "rack 'nope'" in result.note


def test_fetch_skips_bad_answers(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    cluster.nodes[0].answer = (200, b"<html>garbage</html>")
    cluster.nodes[1].answer = (500, b"{}")
    d = _discovery(cluster, seeds=[0, 1, 2], datacenter="dc1")
    assert d.fetch() == cluster.urls(0, 1, 2)


def test_fetch_fails_with_reasons(cluster_factory: Any, caplog: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    cluster.nodes[0].answer = (200, b'["not a host!"]')
    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    d = Discovery(
        [cluster.nodes[0].host, cluster.dead], scheme="http", port=cluster.port, transport=transport
    )
    caplog.set_level(logging.WARNING, logger="alternator_shm.discovery")
    with pytest.raises(DiscoveryError) as info:
        d.fetch()
    message = str(info.value)
    assert "not an IP address or host name" in message
    assert cluster.dead in message and "NewConnectionError" in message
    assert "discovery failed" in caplog.text


def test_check_rack_and_datacenter(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    _discovery(cluster).check_if_rack_and_datacenter_set_correctly()  # no scope: nothing to do
    _discovery(cluster, datacenter="dc2", rack="r3").check_if_rack_and_datacenter_set_correctly()
    with pytest.raises(ConfigurationError, match="datacenter 'wrong'"):
        _discovery(cluster, datacenter="wrong").check_if_rack_and_datacenter_set_correctly()
    # No fallback in the check, even when routing would fall back.
    with pytest.raises(ConfigurationError, match="rack 'r3'"):
        _discovery(
            cluster, datacenter="dc1", rack="r3"
        ).check_if_rack_and_datacenter_set_correctly()
    cluster.kill(0)
    with pytest.raises(DiscoveryError):
        _discovery(cluster, datacenter="dc1").check_if_rack_and_datacenter_set_correctly()


@pytest.mark.parametrize("old", [False, True])
def test_feature_probe(cluster_factory: Any, old: bool) -> None:
    cluster = cluster_factory(TWO_DCS, old=old)
    assert _discovery(cluster).check_if_rack_datacenter_feature_is_supported() is (not old)
    assert any("rack=fakeRack" in path for _, path in cluster.asked)


def test_feature_probe_without_answers(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    cluster.kill(0)
    with pytest.raises(DiscoveryError):
        _discovery(cluster).check_if_rack_datacenter_feature_is_supported()


def test_probe(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    d = _discovery(cluster)
    assert d.probe(cluster.nodes[1].url) is True
    assert d.probe(f"http://{cluster.dead}:{cluster.port}") is False
    cluster.kill(1)
    assert d.probe(cluster.nodes[1].url) is False


# -- host-name seeds ------------------------------------------------------------------------------


def test_host_name_seed_contributes_every_address(cluster_factory: Any) -> None:
    """Issue 11 #4: a name resolving to several addresses contributed only one of them."""
    cluster = cluster_factory(TWO_DCS)
    answers = {"seeds.example": [cluster.nodes[0].host, cluster.nodes[3].host, "::1"]}
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[host]

    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    d = Discovery(["seeds.example"], scheme="http", port=cluster.port, transport=transport,
                  resolver=resolver, request_timeout=1.0)
    urls, failed = d.resolve_seeds()
    assert urls == [cluster.nodes[0].url, cluster.nodes[3].url, f"http://[::1]:{cluster.port}"]
    assert not failed
    # The cluster scope covers both datacenters: one address per datacenter was enough.
    assert d.fetch() == cluster.urls(0, 1, 2, 3, 4)
    # Resolved again whenever the seeds are used: the name now points at dc2 only.
    answers["seeds.example"] = [cluster.nodes[4].host]
    calls.clear()
    assert d.fetch() == cluster.urls(3, 4)
    assert calls == ["seeds.example"]


def test_unresolvable_seed_is_a_named_failure(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)

    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    d = Discovery(["nowhere.example", cluster.nodes[3].host], scheme="http", port=cluster.port,
                  transport=transport, resolver=resolver)
    assert d.fetch() == cluster.urls(3, 4)  # the literal seed still answers
    d_only = Discovery(["nowhere.example"], scheme="http", port=cluster.port,
                       transport=transport, resolver=resolver)
    with pytest.raises(DiscoveryError, match=r"nowhere\.example.*cannot resolve"):
        d_only.fetch()


def test_localhost_seed_resolves_for_real() -> None:
    """The real resolver: every address of ``localhost`` is a seed (one or several)."""
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", 1, type=socket.SOCK_STREAM)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LocalnodesHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        port = server.server_address[1]
        d = Discovery(["localhost"], scheme="http", port=port,
                      transport=Transport(TransportOptions(connect_timeout=0.5)))
        urls, failed = d.resolve_seeds()
        assert not failed
        assert {urlsplit(u).hostname for u in urls} == addresses
        if "127.0.0.1" in addresses:
            assert d.fetch() == [f"http://127.0.0.1:{port}"]
    finally:
        server.shutdown()
        server.server_close()


class _LocalnodesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'["127.0.0.1"]'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# -- no single node narrows the table -------------------------------------------------------------


def test_partial_view_is_outvoted_by_the_nodes_it_omits(
    cluster_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = cluster_factory(TWO_DCS)
    d = _discovery(cluster, seeds=[0], datacenter="dc1")
    known = cluster.urls(0, 1, 2)
    note = d.fetch(known).note
    cluster.nodes[0].answer = (200, json.dumps([cluster.nodes[0].host]).encode())
    for _ in range(8):
        assert d.fetch(known, previous_note=note) == known
    # Deterministically: the partial node is asked first, and alone it would shrink the table.
    monkeypatch.setattr(random, "shuffle", lambda seq: None)
    cluster.asked.clear()
    assert d.fetch(known, previous_note=note) == known
    assert cluster.asked[0][0] == cluster.nodes[0].host
    assert {host for host, _ in cluster.asked} == {n.host for n in cluster.nodes[:3]}


def test_shrink_needs_the_omitted_node_itself_to_fail(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    d = _discovery(cluster, seeds=[0], datacenter="dc1")
    known = cluster.urls(0, 1, 2)
    note = d.fetch(known).note
    cluster.kill(2)
    assert d.fetch(known, previous_note=note) == cluster.urls(0, 1)
    # Another scope's table is not narrowed against: its nodes are simply not in this scope.
    assert d.fetch(cluster.urls(0, 1, 3, 4), previous_note="scope the whole cluster") == (
        cluster.urls(0, 1)
    )


def test_empty_answer_on_a_published_scope_is_confirmed_by_its_nodes(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    d = _discovery(cluster, seeds=[0], datacenter="dc1", fallback=False)
    known = cluster.urls(0, 1, 2)
    note = d.fetch(known).note
    cluster.nodes[0].answer = (200, b"[]")  # one node says the scope is empty: not enough
    assert d.fetch(known, previous_note=note) == known


def test_growth_needs_one_answer(cluster_factory: Any) -> None:
    cluster = cluster_factory(TWO_DCS)
    d = _discovery(cluster, seeds=[0], datacenter="dc1")
    newcomer = cluster.dead  # listed, not (yet) serving: health handles that, not discovery
    hosts = [n.host for n in cluster.nodes[:3]] + [newcomer]
    cluster.nodes[0].answer = (200, json.dumps(hosts).encode())
    result = d.fetch([cluster.nodes[0].url])
    assert result == sorted([*cluster.urls(0, 1, 2), f"http://{newcomer}:{cluster.port}"])
