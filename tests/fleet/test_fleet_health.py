"""Shared node health across real processes: no lost outcome, leader-only probes with bounded
concurrency and a deadline, history kept for departed nodes, overflow tracked locally."""

from __future__ import annotations

import threading
import time

from _fleet_procs import NODES, Child, wait_until

from alternator_shm.fleet import SharedFleet, health, layout
from alternator_shm.fleet.health import HealthSettings, Observation, State

# Thresholds so high that nothing changes state: every report must show up in the streak.
NEVER = HealthSettings(
    active_failure_threshold=65535,
    quarantine_failure_threshold=65535,
    quarantine_promotion_threshold=65535,
)
FAST = HealthSettings(
    active_failure_threshold=3,
    quarantine_failure_threshold=2,
    down_recovery_threshold=2,
    probe_period=0.05,
    probe_timeout=2.0,
)


def _hammer(ns: str, node: str, count: int, start: float) -> int:
    fleet = SharedFleet(ns, health=NEVER)
    fleet.nodes()
    while time.time() < start:
        time.sleep(0.001)
    for i in range(count):
        if i % 2:
            fleet.report_failure(node)
        else:
            fleet.attachment.health.observe(node, Observation.TRAFFIC_FAILURE, None)
    return count


def test_outcomes_from_many_processes_are_never_lost(make_fleet, ns) -> None:
    leader = make_fleet(refresh=lambda: NODES, health=NEVER)
    assert leader.wait_for_nodes(10) == NODES
    node = NODES[0]
    start = time.time() + 0.5
    children = [Child(_hammer, ns, node, 400, start) for _ in range(4)]
    done = sum(c.result(timeout=60) for c in children)
    leader.report_failure(node)
    st = leader.node_status(node)
    per = leader.stats().per_node[node]
    assert (st.state, st.failures) == (State.QUARANTINED, done + 1)
    assert per.failures == done + 1 and per.consecutive_failures == done + 1


def _follower_view(ns: str, node: str, failures: int) -> tuple[str, int]:
    called: list[str] = []
    fleet = SharedFleet(ns, refresh=lambda: NODES, probe=lambda n: bool(called.append(n)),
                        health=FAST, poll_interval=0.02)
    fleet.start()
    try:
        fleet.wait_for_nodes(10)
        for _ in range(failures):
            fleet.report_failure(node)
        state = fleet.stats().per_node[node].state
        time.sleep(0.3)  # the leader keeps probing meanwhile; this follower must not
        return state, len(called)
    finally:
        fleet.close()


def test_state_is_shared_and_only_the_leader_probes(make_fleet, ns) -> None:
    healthy = threading.Event()
    healthy.set()
    probed: list[str] = []

    def probe(node: str) -> bool:
        probed.append(node)
        return healthy.is_set()

    leader = make_fleet(refresh=lambda: NODES, probe=probe, health=FAST)
    assert leader.wait_for_nodes(10) == NODES
    # Admission: every new node is probed at once and becomes ACTIVE.
    assert wait_until(lambda: all(
        s.state == "active" for s in leader.stats().per_node.values()), 10)
    healthy.clear()
    bad = NODES[2]
    state, follower_probes = Child(_follower_view, ns, bad, 3).result(timeout=30)
    assert state == "down" and follower_probes == 0
    st = leader.stats().per_node[bad]
    assert (st.state, st.generation, st.quarantined) == ("down", 1, True)
    assert leader.health_view()[bad] == (State.DOWN, 1)
    n = len(probed)
    assert wait_until(lambda: len(probed) >= n + 3, 10)  # recovery probes, failing
    assert leader.stats().per_node[bad].state == "down"
    healthy.set()
    # 2 successful probes -> recovery quarantine -> next probe period -> ACTIVE
    assert wait_until(lambda: leader.stats().per_node[bad].state == "active", 10)
    assert leader.stats().per_node[bad].generation == 1


def test_probes_bounded_by_concurrency_and_deadline(make_fleet) -> None:
    nodes = tuple(f"http://127.0.3.{i}:8000" for i in range(1, 9))
    release = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, max

    def probe(node: str) -> bool:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        return True

    settings = HealthSettings(probe_concurrency=2, probe_timeout=0.3, probe_period=60)
    fleet = make_fleet(refresh=lambda: nodes, probe=probe, health=settings)
    assert fleet.wait_for_nodes(10) == nodes
    assert wait_until(lambda: running[0] == 2, 10)
    time.sleep(0.8)  # past the deadline: both count as failed; nothing else starts meanwhile
    assert running[1] == 2
    timed_out = [n for n, s in fleet.health_view().items() if s[0] is State.QUARANTINED]
    assert len(timed_out) == len(nodes)
    release.set()
    time.sleep(0.5)
    # The two late answers are ignored: probe period 60 s, so no node was re-probed, yet the
    # queued probes (started after the release) activated their nodes.
    active = [n for n, s in fleet.health_view().items() if s[0] is State.ACTIVE]
    assert running[1] == 2
    assert 1 <= len(active) <= len(nodes) - 2, active


def test_departed_nodes_keep_history_and_overflow_is_local(make_fleet) -> None:
    tables = [NODES]
    fleet = make_fleet(refresh=lambda: tables[0], idle_refresh_interval=100,
                       health=HealthSettings(quarantine_failure_threshold=1))
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.stats().health_slots_used == len(NODES)
    fleet.report_failure(NODES[3])
    assert fleet.node_status(NODES[3]).state is State.DOWN
    tables[0] = NODES[:3]
    assert fleet.refresh_now() == NODES[:3]
    tables[0] = NODES
    assert fleet.refresh_now() == NODES
    assert fleet.stats().per_node[NODES[3]].state == "down"  # history kept
    # A node the leader never admitted (no entry) is tracked in this process only.
    stranger = "http://10.9.9.9:8000"
    fleet.report_failure(stranger)
    assert fleet.node_status(stranger).state is State.DOWN
    assert fleet.health_view_of((stranger,))[stranger] == (State.DOWN, 1)


def test_collect_frees_departed_entries_only_under_pressure(make_fleet) -> None:
    fleet = make_fleet(health=HealthSettings())
    h = fleet.attachment.health
    many = [f"http://10.8.{i // 250}.{i % 250}:8000" for i in range(layout.HEALTH_CAPACITY)]
    h.admit(many[: layout.HEALTH_CAPACITY * 3 // 4])
    assert h.collect(tuple(many[:2])) == 0  # 3/4 used: no pressure yet
    h.admit(many)
    assert health.slots_used(fleet.attachment.seg.words) == layout.HEALTH_CAPACITY
    freed = h.collect(tuple(many[:2]))
    assert freed == layout.HEALTH_CAPACITY // 2
    assert h.slot(many[0], create=False) is not None and h.slot(many[1], create=False) is not None
