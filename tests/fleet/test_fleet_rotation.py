"""Random rotation per segment (issue 16, scripts/sim_many_hosts.py): every host's counter
starts at 0, so without an offset hosts deployed together all start on the same node. The
segment's creator draws a random 64-bit rotation; routing picks (counter + rotation) mod n,
the counter and the stats still count picks from 0, and the round-robin stays exact."""

from __future__ import annotations

import uuid
from collections import Counter

from _fleet_procs import NODES

from alternator_shm.fleet import SharedFleet, cleanup, layout
from alternator_shm.routing import Router


def test_fresh_namespaces_get_different_rotations(make_fleet) -> None:
    names = [f"test-fleet-rot-{uuid.uuid4().hex}" for _ in range(3)]
    try:
        rotations = {make_fleet(n).rotation() for n in names}
    finally:
        for n in names:
            cleanup(n)
    assert len(rotations) == 3  # 64 random bits: a collision is a bug, not bad luck
    assert all(0 <= r < 1 << 64 for r in rotations)


def test_rotation_is_fixed_for_the_segment_and_shared(make_fleet, ns) -> None:
    a = make_fleet(refresh=lambda: NODES)
    b = SharedFleet(ns)
    assert a.rotation() == b.rotation() == a.rotation()
    words = a.attachment.seg.words
    assert int(words[layout.ROTATION_OFF // 8]) == a.rotation()


def test_router_rotates_start_keeps_exact_round_robin_and_stats_count_picks(make_fleet) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    router = Router(fleet, ())
    n = len(NODES)
    expected_first = NODES[fleet.rotation() % n]
    picks = [router.next_node() for _ in range(50 * n)]  # slow path first, then the fast path
    assert picks[0] == expected_first
    # strict round-robin from the rotated start: every pick is the next node of the table
    for i, node in enumerate(picks):
        assert node == NODES[(fleet.rotation() + i) % n]
    assert set(Counter(picks).values()) == {50}
    st = fleet.stats()
    assert st.picks == fleet.counter == 50 * n  # the counter counts picks, unrotated
    assert {s.picks for s in st.per_node.values()} == {50}
