"""Each version profile's distinguishing behaviour (§1.1, §3.2-3.4, §7.2)."""

from __future__ import annotations

import gzip
import json

from _emulator_helpers import SECRET, USER, error_of, get, post, signed_headers

from alternator_shm.emulator import Cluster

TOPO = [("dc1", "rack1"), ("dc1", "rack2"), ("dc2", "rack1")]


def _gzip_status(cluster: Cluster) -> tuple[int, str]:
    node = cluster.nodes[0]
    body = gzip.compress(b"{}")
    headers = signed_headers(node, "ListTables", body, extra={"Content-Encoding": "gzip"})
    resp = post(node, body, headers)
    return resp.status, json.loads(resp.data).get("__type", "").rsplit("#", 1)[-1]


def _bad_sig_message(cluster: Cluster) -> str:
    node = cluster.nodes[0]
    return error_of(post(node, b"{}", signed_headers(node, "ListTables", b"{}", secret="x")))[2]


def test_2026_1_sends_seastar_server_header() -> None:
    with Cluster(topology=TOPO, backend="null", users={USER: SECRET}, profile="2026.1") as c:
        assert get(c.nodes[0].url + "/").headers["Server"] == "Seastar httpd"
        assert _bad_sig_message(c) == "wrong signature"
        assert _gzip_status(c)[0] == 200


def test_2025_1_has_dc_rack_but_no_compression() -> None:
    with Cluster(topology=TOPO, backend="null", users={USER: SECRET}, profile="2025.1") as c:
        assert json.loads(get(c.nodes[0].url + "/localnodes?dc=nope").data) == []
        assert _gzip_status(c) == (400, "ValidationException")
        assert _bad_sig_message(c) == "The security token included in the request is invalid."


def test_6_2_ignores_dc_and_rack() -> None:
    with Cluster(topology=TOPO, backend="null", profile="6.2") as c:
        url = c.nodes[0].url
        assert json.loads(get(url + "/localnodes?rack=fakeRack").data) == c.seeds[:2]
        assert json.loads(get(url + "/localnodes?dc=dc2").data) == c.seeds[:2]
        c.nodes[1].kill()
        assert json.loads(get(url + "/localnodes").data) == c.seeds[:1]


def test_6_1_keeps_killed_node_listed() -> None:
    with Cluster(nodes=3, backend="null", profile="6.1") as c:
        c.nodes[2].kill()
        assert json.loads(get(c.nodes[0].url + "/localnodes?dc=zz").data) == c.seeds
        c.nodes[1].drain()  # a drained node announces it, so it does go away
        assert json.loads(get(c.nodes[0].url + "/localnodes").data) == [c.seeds[0], c.seeds[2]]


def test_6_0_lists_joining_nodes() -> None:
    with Cluster(nodes=2, backend="null", profile="6.0") as c:
        node = c.add_node(join_delay=30)
        assert node.ip in json.loads(get(c.nodes[0].url + "/localnodes").data)
