"""The refresher and shared health: failing or garbage refreshes keep the last table with
backoff, refresh_now from followers, active vs idle period (shared health: test_fleet_health.py)."""

from __future__ import annotations

import itertools
import time

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.errors import DiscoveryError
from alternator_shm.fleet import SharedFleet


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
