"""The refresher and shared health: failing or garbage refreshes keep the last table with
backoff, refresh_now from followers, active vs idle period, and quarantine across processes."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.errors import DiscoveryError
from alternator_shm.fleet import SharedFleet, layout


class Flaky:
    """A refresh callback: good first, then whatever ``mode`` says; records call times."""

    def __init__(self) -> None:
        self.mode = "good"
        self.calls: list[float] = []

    def __call__(self) -> object:
        self.calls.append(time.monotonic())
        if self.mode == "good":
            return NODES
        if self.mode == "raise":
            raise ConnectionError("seed unreachable")
        return {"empty": [], "garbage": ["ok", 17], "string": "http://x"}[self.mode]


@pytest.mark.parametrize("mode", ["raise", "empty", "garbage", "string"])
def test_failing_refresh_keeps_last_table_and_backs_off(make_fleet, mode) -> None:
    cb = Flaky()
    fleet = make_fleet(refresh=cb, refresh_interval=0.01, idle_refresh_interval=0.01,
                       poll_interval=0.005, backoff_initial=0.02, backoff_max=0.32)
    assert fleet.wait_for_nodes(10) == NODES
    generation = fleet.generation
    cb.mode = mode
    cb.calls.clear()
    time.sleep(1.3)
    stats = fleet.stats()
    calls = list(cb.calls)
    assert fleet.nodes() == NODES and fleet.generation == generation
    assert stats.consecutive_refresh_failures >= 4
    assert stats.last_refresh_error
    # without backoff a 5 ms poll would have made ~250 attempts; with it, ~8
    assert 4 <= len(calls) <= 14, calls
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps[2:]) > 2 * min(gaps[:2]), gaps  # 0.02, 0.04 -> 0.32: it grows
    assert max(gaps) < 0.32 * 1.6 + 0.1  # ... up to backoff_max
    age = stats.last_refresh_age_s
    assert age is not None and age >= 1.0
    cb.mode = "good"
    assert wait_until(lambda: fleet.stats().consecutive_refresh_failures == 0, 5)


def _follower_refresh_now(ns: str) -> str:
    fleet = SharedFleet(ns)  # no refresh callback: cannot lead, asks the leader
    try:
        return "ok:" + ",".join(fleet.refresh_now(timeout=5))
    except DiscoveryError as exc:
        return f"DiscoveryError:{exc}"


def test_first_wait_ends_when_the_first_refresh_fails(make_fleet) -> None:
    """A first refresh that fails ends the wait for a table: the caller falls back to its
    seeds at once instead of sitting out the whole timeout."""
    cb = Flaky()
    cb.mode = "raise"
    fleet = make_fleet(refresh=cb, poll_interval=0.01)
    started = time.monotonic()
    assert fleet.wait_for_nodes(30.0) == ()
    assert time.monotonic() - started < 30.0
    assert cb.calls and fleet.stats().consecutive_refresh_failures >= 1


def test_refresh_now_from_a_follower(make_fleet, ns) -> None:
    cb = Flaky()
    leader = make_fleet(refresh=cb, idle_refresh_interval=100, refresh_interval=100,
                        backoff_initial=100)
    assert leader.wait_for_nodes(10) == NODES
    refreshes = leader.stats().refreshes
    assert Child(_follower_refresh_now, ns).result(timeout=20) == "ok:" + ",".join(NODES)
    assert leader.stats().refreshes == refreshes + 1
    cb.mode = "raise"
    verdict = Child(_follower_refresh_now, ns).result(timeout=20)
    assert verdict.startswith("DiscoveryError:") and "seed unreachable" in verdict
    # the leader itself re-raises the callback's error inline
    with pytest.raises(ConnectionError):
        leader.refresh_now()
    cb.mode = "garbage"
    with pytest.raises(ValueError):
        leader.refresh_now()
    assert leader.nodes() == NODES


def test_refresh_now_without_any_leader_raises_after_its_timeout(make_fleet) -> None:
    """Never a stale (here: empty) table silently: the timeout is a DiscoveryError."""
    fleet = make_fleet()
    t0 = time.monotonic()
    with pytest.raises(DiscoveryError, match=r"answered within 0\.2s"):
        fleet.refresh_now(timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 5


def test_active_vs_idle_refresh_period(make_fleet) -> None:
    cb = Flaky()
    fleet = make_fleet(refresh=cb, refresh_interval=0.05, idle_refresh_interval=100)
    assert fleet.wait_for_nodes(10) == NODES
    time.sleep(0.1)  # a refresh right after the first one may still be in flight
    idle_start = fleet.stats().refreshes
    time.sleep(0.5)
    assert fleet.stats().refreshes == idle_start  # counter idle: 100 s period
    fleet.advance()
    assert wait_until(lambda: fleet.stats().refreshes > idle_start, 5)
    time.sleep(0.3)
    after = fleet.stats().refreshes
    time.sleep(0.3)
    assert fleet.stats().refreshes == after  # idle again: the counter has not moved since


def _report(ns: str, node: str, what: str) -> dict[str, int]:
    fleet = SharedFleet(ns)
    getattr(fleet, what)(node)
    return fleet.quarantined()


def test_quarantine_is_shared_and_released_by_probe(make_fleet, ns) -> None:
    healthy = threading.Event()
    probed: list[str] = []

    def probe(node: str) -> bool:
        probed.append(node)
        return healthy.is_set()

    leader = make_fleet(refresh=lambda: NODES, probe=probe, probe_interval=0.05)
    assert leader.wait_for_nodes(10) == NODES
    bad = NODES[2]
    seen_by_reporter = Child(_report, ns, bad, "report_failure").result(timeout=20)
    assert list(seen_by_reporter) == [bad]
    assert list(leader.quarantined()) == [bad]
    stats = leader.stats()
    assert stats.per_node[bad].quarantined and stats.per_node[bad].failures == 1
    assert wait_until(lambda: len(probed) >= 3, 5)  # probed repeatedly while unhealthy...
    assert set(probed) == {bad} and list(leader.quarantined()) == [bad]
    healthy.set()
    assert wait_until(lambda: leader.quarantined() == {}, 5)  # ... and released when healthy
    assert Child(_report, ns, NODES[0], "record_pick").result(timeout=20) == {}


def test_quarantine_without_probe_expires_and_success_releases(make_fleet, ns) -> None:
    leader = make_fleet(refresh=lambda: NODES, quarantine=0.3)
    assert leader.wait_for_nodes(10) == NODES
    leader.report_failure(NODES[1])
    assert list(leader.quarantined()) == [NODES[1]]
    assert wait_until(lambda: leader.quarantined() == {}, 5)
    # the leader releases it in shared memory too (not just hidden by the local expiry)
    assert wait_until(lambda: not leader.stats().per_node[NODES[1]].quarantined, 5)
    # report_success from another process releases at once
    leader.report_failure(NODES[3])
    assert list(leader.quarantined()) == [NODES[3]]
    assert Child(_report, ns, NODES[3], "report_success").result(timeout=20) == {}
    assert leader.quarantined() == {}


def test_health_slots_policy_when_full_and_gc_of_departed_nodes(make_fleet) -> None:
    tables = [NODES, NODES[:1]]
    fleet = make_fleet(refresh=lambda: tables[0], idle_refresh_interval=100, quarantine=5)
    assert fleet.wait_for_nodes(10) == NODES
    for node in NODES:
        fleet.record_pick(node)
    assert fleet.stats().health_slots_used == 4
    # departed nodes lose their entries when a new generation is published
    tables[0] = NODES[:1]
    assert fleet.refresh_now() == NODES[:1]
    assert fleet.stats().health_slots_used == 1
    # fill every entry; the next node is tracked in this process only
    extra = [f"http://10.9.{i // 250}.{i % 250}:8000" for i in range(layout.HEALTH_CAPACITY)]
    for node in extra[: layout.HEALTH_CAPACITY - 1]:
        fleet.record_pick(node)
    assert fleet.stats().health_slots_used == layout.HEALTH_CAPACITY
    tables[0] = [NODES[0], extra[-1]]
    fleet.close()  # keep the leader from collecting the extra entries
    fleet2 = SharedFleet(fleet.namespace, refresh=lambda: tables[0], quarantine=5)
    try:
        assert fleet2.refresh_now() == (NODES[0], extra[-1])
        fleet2.close()
        for node in extra[: layout.HEALTH_CAPACITY - 1]:
            fleet2.record_pick(node)  # re-claim what the new generation collected
        fleet2.report_failure(extra[-1])
        assert fleet2.stats().health_overflow >= 1
        assert list(fleet2.quarantined()) == [extra[-1]]  # quarantined locally
        fleet2.report_success(extra[-1])
        assert fleet2.quarantined() == {}
    finally:
        fleet2.close()
