"""Discovery through the Helper: dc / rack scopes, fallback, the two checks, bad answers, joins.

The cluster has two datacenters; which nodes a Helper routes to, and which ``/localnodes``
questions it asked, are read back from the emulator.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from test_helper_support import (
    REFRESH,
    api_counts,
    api_entries,
    localnodes_entries,
    make_helper,
    module_cluster,
    node_urls,
    wait_for,
)

from alternator_shm import AlternatorError, ConfigurationError, DiscoveryError
from alternator_shm.emulator import Cluster

USERS = {"disc-key": "disc-secret"}
TOPOLOGY = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r3")]
TABLE = "disc_table"
KEY = {"p": {"S": "k"}}


cluster = module_cluster(topology=TOPOLOGY, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


def _urls(cluster: Any, dc: str | None = None, rack: str | None = None) -> list[str]:
    chosen = [
        n for n in cluster.nodes if (dc is None or n.dc == dc) and (rack is None or n.rack == rack)
    ]
    return node_urls(cluster, chosen)


def _queries(cluster: Any) -> list[dict[str, str]]:
    """The /localnodes questions asked (as query dicts), in time order."""
    entries = sorted(
        (e for n in cluster.nodes for e in localnodes_entries(n)), key=lambda e: e.time
    )
    return [dict(parse_qsl(urlsplit(e.path).query)) for e in entries]


def _traffic_goes_only_to(cluster: Any, helper: Any, expected: list[str]) -> None:
    cluster.clear_logs()
    client = helper.new_dynamodb_client()
    for _ in range(2 * len(expected)):
        client.get_item(TableName=TABLE, Key=KEY)
    counts = api_counts(cluster)
    assert {u for u, c in counts.items() if c} == set(expected), counts
    assert all(counts[u] == 2 for u in expected), counts


def _dc1_seeds(cluster: Any) -> list[str]:
    return [n.ip for n in cluster.nodes if n.dc == "dc1"]


def test_no_scope_routes_over_the_whole_cluster(cluster: Any) -> None:
    with make_helper(cluster) as h:
        assert sorted(h.live_nodes()) == _urls(cluster)
        _traffic_goes_only_to(cluster, h, _urls(cluster))


def test_datacenter(cluster: Any) -> None:
    with make_helper(cluster, datacenter="dc2", seeds=_dc1_seeds(cluster)) as h:
        assert sorted(h.live_nodes()) == _urls(cluster, "dc2")
        assert {"dc": "dc2"} in _queries(cluster)
        _traffic_goes_only_to(cluster, h, _urls(cluster, "dc2"))


def test_datacenter_and_rack(cluster: Any) -> None:
    with make_helper(cluster, datacenter="dc2", rack="r3") as h:
        assert h.live_nodes() == _urls(cluster, "dc2", "r3")
        _traffic_goes_only_to(cluster, h, _urls(cluster, "dc2", "r3"))


def test_rack_without_datacenter_is_in_the_seeds_datacenter(cluster: Any) -> None:
    with make_helper(cluster, rack="r1", seeds=_dc1_seeds(cluster)) as h:
        assert sorted(h.live_nodes()) == _urls(cluster, "dc1", "r1")
    assert {"rack": "r1"} in _queries(cluster)


def test_fallback_rack_to_datacenter(cluster: Any) -> None:
    with make_helper(cluster, datacenter="dc1", rack="nope") as h:
        assert sorted(h.live_nodes()) == _urls(cluster, "dc1")
    queries = _queries(cluster)
    first_dc = queries.index({"dc": "dc1"})
    assert {"dc": "dc1", "rack": "nope"} in queries[:first_dc]
    assert {} not in queries  # never widened to the whole cluster


def test_fallback_rack_to_datacenter_to_cluster(cluster: Any) -> None:
    with make_helper(cluster, datacenter="nope", rack="nope") as h:
        assert sorted(h.live_nodes()) == _urls(cluster)  # both datacenters
        queries = _queries(cluster)
        order = [queries.index(q) for q in ({"dc": "nope", "rack": "nope"}, {"dc": "nope"}, {})]
        assert order == sorted(order)
        _traffic_goes_only_to(cluster, h, _urls(cluster))


def test_no_fallback_does_not_widen(cluster: Any) -> None:
    with make_helper(cluster, datacenter="dc1", rack="nope", fallback=False) as h:
        with pytest.raises(AlternatorError):
            h.update_live_nodes(timeout=2.0)
        with pytest.raises(ConfigurationError, match="nope"):
            h.check_if_rack_and_datacenter_set_correctly()
    queries = _queries(cluster)
    assert queries and all(q == {"dc": "dc1", "rack": "nope"} for q in queries), queries


def test_check_scope(cluster: Any) -> None:
    for good in ({}, {"datacenter": "dc2"}, {"datacenter": "dc1", "rack": "r2"}, {"rack": "r1"}):
        with make_helper(cluster, **good) as h:
            assert h.check_if_rack_and_datacenter_set_correctly() is None
    for bad in ({"datacenter": "nope"}, {"datacenter": "dc1", "rack": "r3"}, {"rack": "nope"}):
        with make_helper(cluster, **bad) as h:
            name = bad.get("rack") or bad["datacenter"]
            with pytest.raises(ConfigurationError, match=name):
                h.check_if_rack_and_datacenter_set_correctly()


def test_feature_supported_on_current_profile(cluster: Any) -> None:
    with make_helper(cluster) as h:
        assert h.check_if_rack_datacenter_feature_is_supported() is True
    assert {"rack": "fakeRack"} in _queries(cluster)


def test_feature_not_supported_on_6_2() -> None:
    with (
        Cluster(nodes=2, users=USERS, backend="null", profile="6.2") as old,
        make_helper(old) as h,
    ):
        assert h.check_if_rack_datacenter_feature_is_supported() is False


@pytest.mark.parametrize("fault", ["localnodes_garbage", "localnodes_500"])
def test_bad_localnodes_keeps_last_table_and_logs(
    cluster: Any, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="alternator_shm")
    with make_helper(cluster) as h:
        good = h.update_live_nodes()
        assert sorted(good) == _urls(cluster)
        generation = h.stats().generation
        for node in cluster.nodes:
            node.inject_fault(fault)
        cluster.clear_logs()
        with pytest.raises(DiscoveryError):
            h.update_live_nodes(timeout=2.0)
        # The refresher keeps polling (and failing) in the background; nothing is replaced.
        assert wait_for(lambda: h.stats().consecutive_refresh_failures >= 2, 5.0)
        assert h.live_nodes() == good
        assert h.stats().generation == generation
        assert any(localnodes_entries(n) for n in cluster.nodes)
        _traffic_goes_only_to(cluster, h, good)
    discovery_errors = [
        r
        for r in caplog.records
        if r.name.startswith("alternator_shm")
        and r.levelno >= logging.WARNING
        and (
            (r.exc_info is not None and r.exc_info[0] is DiscoveryError)
            or "DiscoveryError" in r.getMessage()
            or "discovery failed" in r.getMessage()
        )
    ]
    assert discovery_errors, [r.getMessage() for r in caplog.records]


def test_joined_node_receives_traffic_within_about_one_refresh() -> None:
    with (
        Cluster(nodes=3, users=USERS, backend="null") as c,
        make_helper(c) as h,
    ):
        client = h.new_dynamodb_client()
        assert len(h.live_nodes()) == 3
        new = c.add_node("dc1", "rack1")
        added = time.monotonic()

        def new_node_served() -> bool:
            client.get_item(TableName=TABLE, Key=KEY)
            return bool(api_entries(new))

        assert wait_for(new_node_served, timeout=20 * REFRESH, interval=0.01)
        # Generous bound (machines are noisy), but far below any "eventually".
        assert time.monotonic() - added < 20 * REFRESH
        assert new.url in h.live_nodes()
