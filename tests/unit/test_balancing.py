"""``balancing="adaptive"`` in the Router, with a fake fleet and fake host-wide load."""

from __future__ import annotations

from collections import Counter

import pytest
from test_routing import NODES, FakeFleet

from alternator_shm.balancing import better_than
from alternator_shm.fleet.health import State
from alternator_shm.routing import Router


class FakeLoad:
    def __init__(self, latency: float | None = 2.0) -> None:
        self.latency: dict[str, float | None] = dict.fromkeys(NODES, latency)
        self.in_flight: Counter[str] = Counter()
        self.begun: list[str] = []
        self.ended: list[tuple[object, bool]] = []

    def begin_attempt(self, node: str) -> object:
        self.begun.append(node)
        return ("token", node)

    def end_attempt(self, attempt: object, answered: bool) -> None:
        self.ended.append((attempt, answered))

    def node_load(self, node: str) -> tuple[int, float | None]:
        return self.in_flight[node], self.latency[node]


def _router(load: FakeLoad, fleet: FakeFleet | None = None) -> tuple[Router, FakeFleet]:
    fleet = fleet or FakeFleet()
    return Router(fleet, NODES[:1], load=load, balancing="adaptive"), fleet


def test_equal_nodes_keep_exact_round_robin() -> None:
    router, _ = _router(FakeLoad())
    chosen = [router.choose(()) for _ in range(5 * 20)]
    assert chosen[:5] == list(NODES)
    assert set(Counter(chosen).values()) == {20}


def test_small_differences_keep_round_robin() -> None:
    load = FakeLoad()
    load.latency[NODES[2]] = 9.0  # 4.5x slower but only 7 ms: jitter on a fast cluster
    load.in_flight[NODES[3]] = 3  # busier, but 8 ms vs 2 ms
    router, _ = _router(load)
    assert set(Counter(router.choose(()) for _ in range(100)).values()) == {20}


def test_a_slow_node_is_avoided_and_its_share_spread_over_two_successors() -> None:
    load = FakeLoad()
    load.latency[NODES[2]] = 62.0
    router, fleet = _router(load)
    counts = Counter(router.choose(()) for _ in range(100))
    assert counts[NODES[2]] == 0
    assert fleet.counter == 100  # one counter step per attempt, as always
    # Ties go to the first successor; in-flight differences move it to the next one.
    assert counts[NODES[3]] == 40
    load.in_flight[NODES[3]] = 2
    counts = Counter(router.choose(()) for _ in range(100))
    assert counts[NODES[2]] == 0 and counts[NODES[4]] == 40


def test_a_busy_node_gives_way() -> None:
    load = FakeLoad(latency=5.0)
    load.in_flight.update({NODES[0]: 20})
    router, _ = _router(load)
    assert router.choose(()) == NODES[1]


def test_health_first_a_quarantined_node_is_never_preferred() -> None:
    load = FakeLoad()
    load.latency[NODES[0]] = 100.0
    load.latency[NODES[1]] = 0.1
    router, fleet = _router(load)
    fleet.set({NODES[1]: State.QUARANTINED})
    # NODES[0] is slow; its successors are NODES[2] (active) and NODES[1] (quarantined, fast).
    assert router.choose(()) == NODES[2]
    # Only quarantined alternatives: keep the slow but active node.
    fleet.set({n: State.QUARANTINED for n in NODES[1:]})
    assert router.choose(()) == NODES[0]


def test_unknown_latency_is_neutral() -> None:
    load = FakeLoad(latency=None)
    router, _ = _router(load)
    assert [router.choose(()) for _ in range(5)] == list(NODES)
    assert better_than(NODES[0], [NODES[1]], load.node_load) == NODES[0]


def test_round_robin_ignores_load_but_still_counts_attempts() -> None:
    load = FakeLoad()
    load.latency[NODES[0]] = 500.0
    router = Router(FakeFleet(), NODES[:1], load=load)
    assert router.choose(()) == NODES[0]
    token = router.attempt_started(NODES[0])
    router.attempt_finished(token, True)
    assert load.begun == [NODES[0]] and load.ended == [(token, True)]


def test_adaptive_needs_a_load_view_and_a_known_mode() -> None:
    with pytest.raises(ValueError):
        Router(FakeFleet(), NODES[:1], balancing="adaptive")
    with pytest.raises(ValueError):
        Router(FakeFleet(), NODES[:1], load=FakeLoad(), balancing="fastest")
