"""Review of issue 11 (discovery that no single node can narrow): probes that found faults.

Real HTTP against the emulator; a node's ``/localnodes`` view is forced with ``set_view``.
Each test failed on the code as reviewed and passes since its fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_helper_support import make_helper, node_urls

from alternator_shm import NoLiveNodesError
from alternator_shm.discovery import Discovery, scope_note
from alternator_shm.emulator import Cluster
from alternator_shm.transport import Transport, TransportOptions

USERS = {"b11d-key": "b11d-secret"}
TOPOLOGY = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with Cluster(topology=TOPOLOGY, users=USERS, backend="null") as c:
        yield c


@pytest.fixture(autouse=True)
def _clean(cluster: Any) -> Iterator[None]:
    yield
    for node in cluster.nodes:
        node.set_view(None)
        node.clear_faults()


def _discovery(c: Any, seeds: list[str], **kwargs: Any) -> Discovery:
    transport = Transport(TransportOptions(connect_timeout=0.5, read_timeout=1.0))
    return Discovery(seeds, scheme=c.scheme, port=c.port, transport=transport, **kwargs)


def test_two_self_only_views_do_not_keep_the_table_narrowed(cluster: Any) -> None:
    """dc1 = A, B, C. A and B are partly cut off and each list only itself; C lists all three
    and is a seed. The published table is [A, B] (for instance C was down at the last refresh
    and confirmed its own absence). The module docstring: "a table that a partial view already
    narrowed to itself is widened again by the seeds at the next refresh"; the issue: "a node
    that lists only itself while others list more is outvoted". Two such nodes are two partial
    views, not a majority, yet C -- alive, serving, a seed, listing everybody -- stays out."""
    a, b, c = [n for n in cluster.nodes if n.dc == "dc1"]
    a.set_view([a.ip])
    b.set_view([b.ip])
    d = _discovery(cluster, [a.ip, b.ip, c.ip], datacenter="dc1")
    known = node_urls(cluster, [a, b])
    expected = node_urls(cluster, [a, b, c])
    results = [sorted(d.fetch(known, previous_note=scope_note(d.scopes[0]))) for _ in range(5)]
    assert all(r == expected for r in results), results


def test_an_empty_scope_verdict_is_lifted_soon_after_the_scope_gets_a_node() -> None:
    """Rack r2 has no live node (say its only node is being replaced): fallback=False calls
    raise NoLiveNodesError naming the scope, as they must. Then a node of rack r2 serves; the
    calls, which never stopped, must reach it within a few refresh intervals (0.2 s here), not
    only after idle_refresh_interval."""
    with (
        Cluster(topology=[("dc1", "r1"), ("dc1", "r1")], users=USERS, backend="null") as c,
        make_helper(c, datacenter="dc1", rack="r2", fallback=False) as h,
    ):
        client = h.new_dynamodb_client()
        for _ in range(3):
            with pytest.raises(NoLiveNodesError, match="rack 'r2'"):
                client.get_item(TableName="t", Key={"p": {"S": "k"}})
        c.add_node(dc="dc1", rack="r2")
        began = time.monotonic()
        served = False
        while not served and time.monotonic() - began < 10:
            try:
                client.get_item(TableName="t", Key={"p": {"S": "k"}})
                served = True
            except NoLiveNodesError:
                time.sleep(0.1)  # the application keeps calling
        assert served, f"still refused after 10 s; last refresh {h.stats().last_refresh_age_s}s ago"
