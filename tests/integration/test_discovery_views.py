"""Discovery that no single node can narrow, paused nodes asked concurrently, scopes honoured.

Real HTTP against the emulator: a node's ``/localnodes`` view is forced with ``set_view``,
nodes are paused (SIGSTOP semantics: connection accepted, never answered) or killed, and
which nodes served the calls is read back from the emulator's request logs.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_helper_support import api_counts, helper_options, make_helper, module_cluster, node_urls

from alternator_shm import NoLiveNodesError
from alternator_shm.discovery import Discovery, scope_note
from alternator_shm.emulator import Cluster
from alternator_shm.transport import Transport, TransportOptions

USERS = {"views-key": "views-secret"}
TOPOLOGY = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r2")]
TABLE = "views_table"
KEY = {"p": {"S": "k"}}


cluster = module_cluster(topology=TOPOLOGY, users=USERS, backend="null")


@pytest.fixture(autouse=True)
def _clean(clean_cluster: Any) -> Iterator[None]:
    yield
    for node in clean_cluster.nodes:
        node.set_view(None)


def _lowest(cluster: Any, dc: str | None = None) -> Any:
    """The node the old code asked first: the lowest URL of the (sorted) table."""
    members = [n for n in cluster.nodes if dc is None or n.dc == dc]
    return min(members, key=lambda n: n.url)


@pytest.mark.parametrize("dc", ["dc1", None], ids=["datacenter", "cluster"])
def test_one_partial_view_does_not_take_over_the_host(cluster: Any, dc: str | None) -> None:
    """Issue 11 #1: the lowest node lists only itself; 30 of 30 calls went to it."""
    expected = node_urls(cluster, [n for n in cluster.nodes if dc is None or n.dc == dc])
    with make_helper(cluster, datacenter=dc) as h:
        assert sorted(h.update_live_nodes()) == expected
        partial = _lowest(cluster, dc)
        partial.set_view([partial.ip])
        for _ in range(10):  # random order: the partial node is asked first in some of them
            assert sorted(h.update_live_nodes()) == expected
        cluster.clear_logs()
        client = h.new_dynamodb_client()
        for _ in range(3 * len(expected)):
            client.get_item(TableName=TABLE, Key=KEY)
        counts = api_counts(cluster)
        assert {u for u, c in counts.items() if c} == set(expected), counts
        assert max(counts[u] for u in expected) - min(counts[u] for u in expected) <= 1, counts


def test_a_shrink_confirmed_by_the_node_itself_is_applied() -> None:
    """Killed and decommissioned nodes still leave the table at the next refresh."""
    with Cluster(nodes=4, users=USERS, backend="null") as c, make_helper(c) as h:
        assert len(h.update_live_nodes()) == 4
        c.nodes[3].kill()
        c.nodes[2].decommission()
        assert sorted(h.update_live_nodes()) == node_urls(c, c.nodes[:2])


def test_a_node_that_omits_itself_confirms_its_removal(cluster: Any) -> None:
    """A node whose own answer leaves itself out (it was removed) is no witness for itself."""
    dc1 = [n for n in cluster.nodes if n.dc == "dc1"]
    gone = dc1[2]
    d = _discovery(cluster, datacenter="dc1")
    urls = node_urls(cluster, dc1)
    for node in dc1:
        node.set_view([n.ip for n in dc1 if n is not gone])
    assert d.fetch(urls, previous_note=scope_note(d.scopes[0])) == node_urls(cluster, dc1[:2])


def _discovery(c: Any, **kwargs: Any) -> Discovery:
    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    return Discovery(list(c.seeds), scheme=c.scheme, port=c.port, transport=transport, **kwargs)


@pytest.mark.slow
def test_paused_known_nodes_cost_about_one_timeout_not_one_each() -> None:
    """Issue 8 #5: 8 of 10 known nodes paused cost 2 s each, one after the other (16 s)."""
    with Cluster(nodes=10, users=USERS, backend="null") as c:
        nodes = sorted(c.nodes, key=lambda n: n.url)
        live, paused = nodes[8:], nodes[:8]  # the old code asked the lowest (paused) first
        d = Discovery([n.ip for n in live], scheme=c.scheme, port=c.port,
                      transport=Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0)),
                      request_timeout=1.0)
        known = node_urls(c)
        for node in paused:
            node.pause()
        try:
            started = time.monotonic()
            result = d.fetch(known)
            elapsed = time.monotonic() - started
        finally:
            for node in paused:
                node.resume()
        assert sorted(result) == node_urls(c, live)
        # Sequential asking took >= 8 x 1 s; concurrent asking about one timeout (+ hedging).
        assert elapsed < 6.0, elapsed


def test_empty_scope_without_fallback_raises_and_sends_nothing(cluster: Any) -> None:
    """Issue 11 #2: every call succeeded by routing to the seed, outside the scope."""
    with make_helper(cluster, datacenter="dc1", rack="r9", fallback=False) as h:
        client = h.new_dynamodb_client()
        for _ in range(3):
            with pytest.raises(NoLiveNodesError, match="rack 'r9'"):
                client.get_item(TableName=TABLE, Key=KEY)
        with pytest.raises(NoLiveNodesError, match="rack 'r9'"):
            h.update_live_nodes(timeout=3.0)
        assert h.live_nodes() == []
        assert sum(api_counts(cluster).values()) == 0
        # Another process of the host reads the verdict from the shared table.
        options = helper_options(cluster, datacenter="dc1", rack="r9", fallback=False,
                                 namespace=h.namespace)
        code = textwrap.dedent(f"""
            from alternator_shm import Helper, NoLiveNodesError
            h = Helper({list(cluster.seeds)!r}, **{options!r})
            try:
                h.new_dynamodb_client().get_item(TableName={TABLE!r}, Key={KEY!r})
            except NoLiveNodesError as e:
                print("NoLiveNodesError", e)
            else:
                print("sent")
            h.close()
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ))
        assert out.stdout.startswith("NoLiveNodesError") and "rack 'r9'" in out.stdout, out
    assert sum(api_counts(cluster).values()) == 0


def test_fallback_logs_one_warning_naming_the_scope_used(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="alternator_shm.discovery")
    with make_helper(cluster, datacenter="nope") as h:
        for _ in range(4):
            assert sorted(h.update_live_nodes()) == node_urls(cluster)  # widened to the cluster
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "alternator_shm.discovery" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "datacenter 'nope'" in warnings[0] and "whole cluster" in warnings[0], warnings


def test_seeds_outvote_a_partial_view_that_became_the_table(cluster: Any) -> None:
    """The stuck state: the published table is [A] (A answered first, listing only itself).

    B and C are seeds and list the whole datacenter; the next refresh must not keep A's word.
    """
    dc1 = [n for n in cluster.nodes if n.dc == "dc1"]
    partial = dc1[0]
    partial.set_view([partial.ip])
    d = _discovery(cluster, datacenter="dc1")
    known = node_urls(cluster, [partial])
    for _ in range(3):
        result = d.fetch(known, previous_note=scope_note(d.scopes[0]))
        assert sorted(result) == node_urls(cluster, dc1)


def test_a_paused_second_witness_is_not_waited_for(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second witness is only a confirmation: once another node confirmed, a paused
    witness is cut off instead of costing its whole request deadline on every refresh."""
    dc1 = [n for n in cluster.nodes if n.dc == "dc1"]
    alone, paused, other = dc1
    alone.set_view([alone.ip])  # lists only itself: a witness is needed
    monkeypatch.setattr(random, "shuffle", lambda x: None)  # seeds asked in the given order
    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=3.0))
    d = Discovery([paused.ip, other.ip], scheme=cluster.scheme, port=cluster.port,
                  transport=transport, datacenter="dc1", request_timeout=3.0)
    paused.pause()
    try:
        for _ in range(2):
            started = time.monotonic()
            result = d.fetch(node_urls(cluster, [alone]), previous_note=scope_note(d.scopes[0]))
            elapsed = time.monotonic() - started
            # The other seed was heard (whether it still lists the paused node is the
            # emulator's failure detection's business).
            assert set(node_urls(cluster, [alone, other])) <= set(result)
            assert elapsed < 2.0, elapsed  # waiting for the paused witness takes >= 3 s
    finally:
        paused.resume()


def test_no_table_yet_without_fallback_sends_nothing_outside_the_scope(cluster: Any) -> None:
    """``fallback=False`` with a scope, and discovery not answering at all: the calls went to
    the seeds (here all in dc1) although the scope is dc2 — outside the scope the user asked
    for. The seeds' datacenter is unknown until discovery answers, so nothing may be sent."""
    dc1 = [n for n in cluster.nodes if n.dc == "dc1"]
    for node in cluster.nodes:
        node.inject_fault("localnodes_500")
    with make_helper(cluster, seeds=[n.ip for n in dc1], datacenter="dc2",
                     fallback=False) as h:
        client = h.new_dynamodb_client()
        for _ in range(3):
            with pytest.raises(NoLiveNodesError, match="datacenter 'dc2'"):
                client.get_item(TableName=TABLE, Key=KEY)
    assert sum(api_counts(cluster).values()) == 0, api_counts(cluster)
    # The cluster scope (no datacenter, no rack) holds every seed: bootstrapping there is fine.
    with make_helper(cluster, seeds=[n.ip for n in dc1], fallback=False) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
    assert sum(api_counts(cluster).values()) == 1, api_counts(cluster)
