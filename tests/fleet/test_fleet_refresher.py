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
    # Event-based: wait for 9 failed attempts rather than sleeping a fixed window, and assert
    # only what scheduling delays cannot fake (a stalled thread makes gaps longer, not shorter).
    # (the failure is recorded just after the callback returns: wait for both)
    assert wait_until(lambda: len(cb.calls) >= 9
                      and fleet.stats().consecutive_refresh_failures >= 9, 30)
    stats = fleet.stats()
    calls = list(cb.calls)[:9]
    assert fleet.nodes() == NODES and fleet.generation == generation
    assert stats.consecutive_refresh_failures >= 9
    assert stats.last_refresh_error
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # Without backoff a 5 ms poll makes 9 attempts in ~0.05 s; backing off 0.02, 0.04, 0.08,
    # 0.16, 0.32, 0.32, ... puts the 6th attempt at least 0.62 s after the first.
    assert calls[5] - calls[0] >= 0.5, gaps
    # ... capped at backoff_max: uncapped doubling would make the last gaps 0.64, 1.28, 2.56 s;
    # the median of the last three is immune to one stalled wake-up.
    assert sorted(gaps[-3:])[1] < 0.32 * 1.6 + 0.3, gaps
    age = stats.last_refresh_age_s
    assert age is not None and age >= calls[-1] - calls[0]
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


def _settles(fleet, quiet: float = 0.6, timeout: float = 15.0) -> bool:
    """Whether the refresh count stops moving for ``quiet`` s (many active periods) in time."""
    deadline = time.monotonic() + timeout
    last, since = fleet.stats().refreshes, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = fleet.stats().refreshes
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


def test_active_vs_idle_refresh_period(make_fleet) -> None:
    # Event-based: at the 0.05 s active period a 0.6 s quiet window would hold ~12 refreshes,
    # so "settles" proves the idle (100 s) period without racing a fixed sleep.
    cb = Flaky()
    fleet = make_fleet(refresh=cb, refresh_interval=0.05, idle_refresh_interval=100)
    assert fleet.wait_for_nodes(10) == NODES
    assert _settles(fleet)  # counter idle: 100 s period
    idle_start = fleet.stats().refreshes
    fleet.advance()
    assert wait_until(lambda: fleet.stats().refreshes > idle_start, 5)
    assert _settles(fleet)  # idle again: the counter has not moved since
