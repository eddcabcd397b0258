"""Injected faults show as Alternator's documented errors (§7.8)."""

from __future__ import annotations

import threading
import time

import pytest
import urllib3
from _emulator_helpers import error_of, get, post

from alternator_shm.emulator import Cluster

OP = {"X-Amz-Target": "DynamoDB_20120810.ListTables"}


@pytest.fixture(scope="module")
def cluster() -> object:
    with Cluster(nodes=2, backend="null") as c:
        yield c


@pytest.fixture(autouse=True)
def _clean(cluster: Cluster) -> None:
    for n in cluster.nodes:
        n.clear_faults()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("internal_error", (500, "InternalServerError")),
        ("request_limit", (400, "RequestLimitExceeded")),
        ("payload_too_large", (413, "PayloadTooLarge")),
    ],
)
def test_error_faults_with_count(cluster: Cluster, kind: str, expected: tuple[int, str]) -> None:
    node = cluster.nodes[0]
    node.inject_fault(kind, count=2)
    assert error_of(post(node, b"{}", OP))[:2] == expected
    assert error_of(post(node, b"{}", OP))[:2] == expected
    assert post(node, b"{}", OP).status == 200  # count exhausted
    assert post(cluster.nodes[1], b"{}", OP).status == 200  # other nodes unaffected


def test_probability_zero_and_one(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    node.inject_fault("internal_error", probability=0.0)
    assert post(node, b"{}", OP).status == 200
    node.clear_faults()
    node.inject_fault("internal_error", probability=1.0)
    assert post(node, b"{}", OP).status == 500


def test_latency(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    node.inject_fault("latency", delay=0.3, count=1)
    started = time.monotonic()
    assert post(node, b"{}", OP).status == 200
    assert time.monotonic() - started >= 0.3


def test_reset(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    node.inject_fault("reset", count=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        post(node, b"{}", OP)
    assert post(node, b"{}", OP).status == 200


def test_localnodes_faults(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    node.inject_fault("localnodes_500", count=1)
    assert get(node.url + "/localnodes").status == 500
    node.inject_fault("localnodes_garbage", count=1)
    resp = get(node.url + "/localnodes")
    assert resp.status == 200 and not resp.data.startswith(b"[")


@pytest.mark.parametrize(
    ("kind", "path"), [("localnodes_hang", "/localnodes"), ("health_hang", "/")]
)
def test_hang_until_cleared(cluster: Cluster, kind: str, path: str) -> None:
    node = cluster.nodes[1]
    node.inject_fault(kind)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        get(node.url + path, timeout=0.3)
    results: list[int] = []
    t = threading.Thread(target=lambda: results.append(get(node.url + path, timeout=10).status))
    t.start()
    time.sleep(0.2)
    node.clear_faults()
    t.join(10)
    assert results == [200]


def test_health_500(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    node.inject_fault("health_500", count=1)
    assert get(node.url + "/").status == 500
    assert get(node.url + "/").status == 200


def test_unknown_fault_kind(cluster: Cluster) -> None:
    with pytest.raises(ValueError):
        cluster.nodes[0].inject_fault("meteor")
