"""Router: the per-attempt pick over the shared counter, with a fake in-process fleet.

The fake keeps the same contract as :class:`alternator_shm.fleet.SharedFleet` as far as routing
sees it (``FleetView``): a node table, a counter that advances once per pick, and per-node
health (state, generation). That lets the selection rules be checked exactly, without shared
memory.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Mapping

import pytest

from alternator_shm.errors import NoLiveNodesError
from alternator_shm.fleet.health import State
from alternator_shm.routing import Router, round_robin_plan, select

Q, D = State.QUARANTINED, State.DOWN

NODES = tuple(f"http://127.0.0.{i}:8000" for i in range(1, 6))


class FakeFleet:
    """An in-process stand-in for the shared fleet state."""

    def __init__(self, nodes: tuple[str, ...] = NODES) -> None:
        self.table = nodes
        self.counter = 0
        self.starts = 0
        self.picks: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.health: dict[str, tuple[State, int]] = {}  # missing = ACTIVE, generation 0
        self.reports: list[tuple[str, str, int | None]] = []
        self.waited: list[float] = []
        self.reason: str | None = None  # empty_reason(): the table was published empty on purpose

    def start(self) -> None:
        self.starts += 1

    def nodes(self) -> tuple[str, ...]:
        return self.table

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]:
        self.waited.append(timeout)
        return self.table

    def advance(self) -> int:
        value = self.counter
        self.counter += 1
        return value

    def record_pick(self, node: str) -> None:
        self.picks[node] += 1

    def report_failure(self, node: str, generation: int | None = None) -> None:
        self.failures[node] += 1
        self.reports.append(("failure", node, generation))

    def report_success(self, node: str, generation: int | None = None) -> None:
        self.successes[node] += 1
        self.reports.append(("success", node, generation))

    def health_view_of(self, nodes: tuple[str, ...]) -> Mapping[str, tuple[State, int]]:
        return dict(self.health)

    def set(self, states: dict[str, State]) -> None:
        self.health = {n: (st, 0) for n, st in states.items()}

    def empty_reason(self) -> str | None:
        return self.reason


def _attempts(router: Router, count: int) -> list[str]:
    """The nodes chosen for ``count`` attempts of one call (each attempt remembers the last)."""
    tried: list[str] = []
    for _ in range(count):
        tried.append(router.choose(tried))
    return tried


def test_first_attempts_round_robin_exactly() -> None:
    fleet = FakeFleet()
    router = Router(fleet, NODES[:1])
    chosen = [router.choose(()) for _ in range(5 * 40)]
    assert Counter(chosen) == {n: 40 for n in NODES}
    # Consecutive calls walk the table in order, from the counter's position.
    assert chosen[:7] == [*NODES, NODES[0], NODES[1]]
    assert fleet.counter == 200
    assert fleet.picks == Counter(chosen)


def test_each_attempt_advances_the_counter_once_and_goes_to_a_new_node() -> None:
    fleet = FakeFleet()
    router = Router(fleet, NODES[:1])
    attempts = _attempts(router, 5)
    assert len(set(attempts)) == 5
    assert fleet.counter == 5


def test_quarantined_nodes_are_skipped_without_extra_counter_steps() -> None:
    fleet = FakeFleet()
    fleet.set({NODES[1]: Q, NODES[3]: D})
    router = Router(fleet, NODES[:1])
    chosen = [router.choose(()) for _ in range(300)]
    assert NODES[1] not in chosen and NODES[3] not in chosen
    # The active nodes share the calls exactly (a skipped node's turn is not its neighbour's).
    assert Counter(chosen) == {NODES[0]: 100, NODES[2]: 100, NODES[4]: 100}
    # One counter step per pick, whatever was skipped.
    assert fleet.counter == 300


def test_tried_nodes_are_skipped() -> None:
    fleet = FakeFleet()
    router = Router(fleet, NODES[:1])
    for start in range(5):
        fleet.counter = start
        tried = [NODES[start % 5], NODES[(start + 1) % 5]]
        chosen = router.choose(tried)
        assert chosen not in tried
        # The walk goes forward from the counter's position to the first untried node.
        assert chosen == NODES[(start + 2) % 5]


def test_retries_skip_both_tried_and_quarantined() -> None:
    fleet = FakeFleet()
    fleet.set({NODES[2]: Q})
    router = Router(fleet, NODES[:1])
    attempts = _attempts(router, 4)
    assert len(set(attempts)) == 4
    assert NODES[2] not in attempts
    # ... until every active node was tried: then the quarantined one.
    assert router.choose(attempts) == NODES[2]


def test_all_quarantined_are_routed_round_robin() -> None:
    fleet = FakeFleet()
    fleet.set({n: Q for n in NODES})
    router = Router(fleet, NODES[:1])
    chosen = [router.choose(()) for _ in range(50)]
    assert Counter(chosen) == {n: 10 for n in NODES}
    assert len(set(_attempts(router, 5))) == 5


def test_down_nodes_never_get_traffic() -> None:
    fleet = FakeFleet()
    fleet.set({NODES[0]: D, NODES[1]: Q, NODES[2]: D, NODES[3]: Q, NODES[4]: D})
    router = Router(fleet, NODES[:1])
    for _ in range(20):
        attempts = _attempts(router, 6)
        assert set(attempts) == {NODES[1], NODES[3]}


def test_only_down_nodes_fail_locally() -> None:
    fleet = FakeFleet()
    fleet.set({n: D for n in NODES})
    router = Router(fleet, NODES[:1])
    with pytest.raises(NoLiveNodesError, match="down"):
        router.choose(())
    with pytest.raises(NoLiveNodesError):
        router.choose([NODES[0]])
    assert not fleet.picks


def test_more_attempts_than_nodes_goes_around_again() -> None:
    fleet = FakeFleet(NODES[:3])
    router = Router(fleet, NODES[:1])
    attempts = _attempts(router, 7)
    # Each cycle tries every node once before any node is tried again.
    assert len(set(attempts[:3])) == 3 and len(set(attempts[3:6])) == 3
    assert set(attempts[6:]) <= set(NODES[:3])


def test_new_cycle_prefers_active_nodes() -> None:
    fleet = FakeFleet(NODES[:3])
    router = Router(fleet, NODES[:1])
    tried = list(NODES[:3])
    fleet.set({NODES[0]: Q, NODES[1]: Q})
    for _ in range(5):
        assert router.choose(tried) == NODES[2]


def test_single_node_cluster_retries_on_it() -> None:
    fleet = FakeFleet(NODES[:1])
    fleet.set({NODES[0]: Q})
    router = Router(fleet, NODES[:1])
    assert _attempts(router, 3) == [NODES[0]] * 3


def test_select_is_a_filter_over_any_base_plan() -> None:
    """The seam for other planners: ``select`` keeps the plan's relative order per pass."""
    plan = (NODES[3], NODES[0], NODES[4], NODES[1], NODES[2])
    health = {NODES[3]: (Q, 0), NODES[4]: (D, 2), NODES[2]: (Q, 0)}
    assert select(plan, (), health) == (NODES[0], 0)
    assert select(plan, [NODES[0]], health) == (NODES[1], 0)
    assert select(plan, [NODES[0], NODES[1]], health) == (NODES[3], 0)
    assert select(plan, [NODES[0], NODES[1], NODES[3]], health) == (NODES[2], 0)
    assert round_robin_plan(NODES, 7) == NODES[2:] + NODES[:2]


def test_fleet_started_once_per_process_and_again_after_forget() -> None:
    fleet = FakeFleet()
    router = Router(fleet, NODES[:1])
    assert fleet.starts == 0  # building a Router starts nothing
    for _ in range(10):
        router.choose(())
    assert fleet.starts == 1
    router.forget_start()
    router.choose(())
    assert fleet.starts == 2


def test_start_again_in_a_forked_child() -> None:
    fleet = FakeFleet()
    router = Router(fleet, NODES[:1])
    router.choose(())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            router.choose(())
            os.write(write, str(fleet.starts).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        data = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert data == b"2"


def test_waits_for_first_table_then_uses_bootstrap() -> None:
    fleet = FakeFleet(())
    router = Router(fleet, (NODES[4],), first_table_timeout=0.01)
    assert router.choose(()) == NODES[4]
    assert len(fleet.waited) == 1 and 0 < fleet.waited[0] <= 0.01  # what is left of the bound
    # Once the process's first wait ended without a table, later calls use the seeds at once.
    assert router.choose(()) == NODES[4]
    assert len(fleet.waited) == 1
    fleet.table = NODES[:2]
    assert router.choose(()) in NODES[:2]


def test_no_table_and_no_bootstrap_raises() -> None:
    fleet = FakeFleet(())
    router = Router(fleet, (), first_table_timeout=0.01)
    with pytest.raises(NoLiveNodesError):
        router.choose(())


def test_next_node_is_a_first_attempt() -> None:
    fleet = FakeFleet()
    router = Router(fleet, NODES[:1])
    seen = [router.next_node() for _ in range(10)]
    assert Counter(seen) == {n: 2 for n in NODES}
    assert fleet.counter == 10


def test_outcomes_report_the_generation_captured_at_selection() -> None:
    fleet = FakeFleet()
    fleet.health = {n: (State.ACTIVE, 7) for n in NODES}
    router = Router(fleet, NODES[:1])
    node = router.choose(())
    fleet.health = {n: (State.ACTIVE, 8) for n in NODES}  # went down and back meanwhile
    router.report_failure(node, ConnectionRefusedError())
    router.report_success(node)
    assert fleet.reports == [("failure", node, 7), ("success", node, 7)]
    # Another thread has its own attempt: it cannot report this one's generation.
    seen: list[tuple[str, str, int | None]] = []
    t = threading.Thread(target=lambda: router.report_success(node))
    t.start()
    t.join()
    seen.append(fleet.reports[-1])
    assert seen == [("success", node, None)]


def test_empty_scope_verdict_raises_without_fallback_and_sends_nothing() -> None:
    fleet = FakeFleet(())
    fleet.reason = "no live node in rack 'r9' in datacenter 'dc1' (fallback=False)"
    router = Router(fleet, ["http://seed:8000"], fallback=False)
    with pytest.raises(NoLiveNodesError, match="rack 'r9'"):
        router.choose(())
    assert fleet.counter == 0 and not fleet.picks  # nothing advanced, nothing sent
    # With fallback the empty verdict is not this Helper's: the seeds still serve.
    assert Router(fleet, ["http://seed:8000"]).choose(()) == "http://seed:8000"
