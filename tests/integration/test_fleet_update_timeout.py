"""``update_live_nodes(timeout)`` honours its timeout in the leader too (issue 8, item 3), on
real HTTP: with every node paused (connections accepted, never answered) the leader's refresh
hangs in discovery, yet the caller gets a ``DiscoveryError`` after ``timeout``, never a stale
table silently; and ``close()`` returns promptly with that refresh still in flight."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_helper_support import make_helper, wait_for

from alternator_shm.emulator import Cluster
from alternator_shm.errors import DiscoveryError


@pytest.fixture
def cluster() -> Iterator[Any]:
    with Cluster(nodes=3, users={"ut-key": "ut-secret"}, backend="null") as c:
        yield c


def test_update_live_nodes_in_the_leader_honours_its_timeout(cluster: Any) -> None:
    with make_helper(cluster) as h:
        assert len(h.live_nodes()) == 3
        assert wait_for(lambda: h.stats().is_leader, 10)
        for node in cluster.nodes:
            node.pause()
        try:
            t0 = time.monotonic()
            with pytest.raises(DiscoveryError, match=r"within 1s"):
                h.update_live_nodes(timeout=1.0)
            assert time.monotonic() - t0 < 3.0
            t1 = time.monotonic()
            h.close()  # the refresher is still inside the hanging /localnodes request
            assert time.monotonic() - t1 < 3.0
        finally:
            for node in cluster.nodes:
                node.resume()
