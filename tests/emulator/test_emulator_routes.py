"""Routes other than the API: health, /localnodes, OPTIONS, 404 (ALTERNATOR_PROTOCOL.md §1-2)."""

from __future__ import annotations

import json

import urllib3
from _emulator_helpers import get

from alternator_shm.emulator import Cluster


def _nodes(cluster: Cluster, query: str = "", node: int = 0) -> list[str]:
    resp = get(f"{cluster.nodes[node].url}/localnodes{query}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert b" " not in resp.data  # compact JSON
    result = json.loads(resp.data)
    assert isinstance(result, list)
    return result


def test_health_echoes_host(shared: Cluster) -> None:
    node = shared.nodes[1]
    resp = get(node.url + "/", headers={"Host": "dog.example.com:1234"})
    assert resp.status == 200
    assert resp.data == b"healthy: dog.example.com:1234"
    assert resp.headers["Content-Type"] == "text/plain"
    assert "Server" not in resp.headers  # profile "current"


def test_localnodes_defaults_to_receiving_dc(shared: Cluster) -> None:
    a, b, c = shared.seeds
    assert _nodes(shared, node=0) == [a, b]
    assert _nodes(shared, node=2) == [c]


def test_localnodes_needs_no_auth_and_lists_bare_ips(shared: Cluster) -> None:
    assert all(":" not in ip and ip.startswith("127.") for ip in _nodes(shared))
    assert shared.users is not None


def test_localnodes_unknown_dc_or_rack_is_empty(shared: Cluster) -> None:
    assert _nodes(shared, "?dc=nope") == []
    assert _nodes(shared, "?rack=nope") == []


def test_localnodes_rack_without_dc_uses_receiving_dc(shared: Cluster) -> None:
    a, _b, c = shared.seeds
    assert _nodes(shared, "?rack=rack1", node=0) == [a]
    assert _nodes(shared, "?rack=rack1", node=2) == [c]
    assert _nodes(shared, "?rack=rack2", node=2) == []


def test_localnodes_dc_and_rack(shared: Cluster) -> None:
    a, b, c = shared.seeds
    assert _nodes(shared, "?dc=dc2", node=0) == [c]
    assert _nodes(shared, "?dc=dc1&rack=rack2", node=2) == [b]
    assert _nodes(shared, "?dc=&rack=", node=0) == [a, b]  # empty values = not given
    assert _nodes(shared, "?unknown=1", node=0) == [a, b]


def test_localnodes_trailing_slash_and_wrong_method(shared: Cluster) -> None:
    url = shared.nodes[0].url
    assert json.loads(get(url + "/localnodes/").data) == shared.seeds[:2]
    resp = urllib3.request("POST", url + "/localnodes", body=b"", retries=False)
    assert resp.status == 404


def test_unknown_path_is_seastar_404(shared: Cluster) -> None:
    resp = get(shared.nodes[0].url + "/metrics")
    assert resp.status == 404
    assert json.loads(resp.data) == {"message": "Not found", "code": 404}
    assert resp.headers["Content-Type"] == "application/json"


def test_options_cors(shared: Cluster) -> None:
    resp = urllib3.request(
        "OPTIONS",
        shared.nodes[0].url + "/",
        headers={
            "Origin": "http://x",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-amz-target",
        },
        retries=False,
    )
    assert resp.status == 200
    assert resp.data == b""
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    assert resp.headers["Access-Control-Allow-Headers"] == "x-amz-target"
    assert resp.headers["Access-Control-Max-Age"] == "7200"


def test_keep_alive_and_log(shared: Cluster) -> None:
    pool = urllib3.HTTPConnectionPool(shared.seeds[0], shared.port, maxsize=1, retries=False)
    shared.clear_logs()
    for _ in range(3):
        assert pool.request("GET", "/localnodes?dc=dc1").status == 200
    assert pool.num_connections == 1
    log = shared.nodes[0].log
    assert [e.path for e in log] == ["/localnodes?dc=dc1"] * 3
    entry = log[0]
    assert entry.method == "GET" and entry.status == 200 and entry.operation is None
    assert entry.headers["Host"] == f"{shared.seeds[0]}:{shared.port}"
    # header block without the request line: "Name: value\r\n" per header + final "\r\n"
    expected = sum(len(n) + 2 + len(v) + 2 for n, v in entry.headers.items()) + 2
    assert entry.header_bytes == expected
    assert entry.body_bytes == 0 and entry.auth_ok is None
