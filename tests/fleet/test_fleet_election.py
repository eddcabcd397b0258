"""Leader election: failover after SIGKILL, and fork (os.fork and a raw libc fork) never hands
leadership to a child nor takes it from the parent."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections import Counter

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.fleet import SharedFleet, segment


def _lead_until_killed(ns: str, ready_w: int) -> None:
    fleet = SharedFleet(ns, refresh=lambda: NODES, poll_interval=0.02)
    fleet.start()
    if not wait_until(lambda: fleet.is_leader, 10):
        raise RuntimeError("child never became leader")
    os.write(ready_w, b"!")
    time.sleep(60)


def test_leader_sigkill_new_leader_within_1s(make_fleet, ns) -> None:
    ready_r, ready_w = os.pipe()
    child = Child(_lead_until_killed, ns, ready_w)
    try:
        assert os.read(ready_r, 1) == b"!"
        follower = make_fleet(refresh=lambda: NODES, poll_interval=0.05)
        assert follower.wait_for_nodes(10) == NODES
        time.sleep(0.2)
        assert not follower.is_leader
        assert follower.stats().leader_pid == child.pid
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        os.waitpid(child.pid, 0)
        assert wait_until(lambda: follower.is_leader, 5, 0.001)
        failover = time.monotonic() - killed_at
    finally:
        child.kill()
        os.close(ready_r)
        os.close(ready_w)
    assert failover < 1.0, f"failover took {failover:.3f}s"
    assert follower.stats().leader_pid == os.getpid()
    assert follower.nodes() == NODES


def _leader_of(ns: str) -> int | None:
    """The leader as an unrelated process sees it (OFD locks carry no pid: the lock byte says
    whether it is held, the header names the epoch holder)."""
    held = segment.leader_pid_from_lock(segment.DEFAULT_SHM_DIR, segment.base_name(ns))
    return None if held is None else SharedFleet(ns).stats().leader_pid


def _child_picks(fleet: SharedFleet, picks: int) -> dict[str, object]:
    """Runs in a fork child holding the parent's (started, leading) fleet object."""
    was_leader = fleet.is_leader  # must be False even before any use
    nodes = fleet.nodes()
    counts: Counter[str] = Counter()
    for _ in range(picks):
        counts[nodes[fleet.advance() % len(nodes)]] += 1
    fleet.start()  # a failover candidate, but it cannot lead while the parent lives
    led = was_leader
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        led = led or fleet.is_leader
        time.sleep(0.01)
    return {"counts": dict(counts), "led": led, "leader": fleet.stats().leader_pid}


@pytest.mark.slow
def test_fork_after_init_children_pick_and_never_lead(make_fleet, ns) -> None:
    parent = make_fleet(refresh=lambda: NODES, poll_interval=0.02)
    assert parent.wait_for_nodes(10) == NODES
    assert wait_until(lambda: parent.is_leader, 5)
    start = parent.counter
    # PyDLL keeps the GIL across the call, as a C server forking from its own code does;
    # CDLL would release it, and a child forked while another thread held the GIL hangs.
    libc_fork = ctypes.PyDLL(None, use_errno=True).fork
    libc_fork.restype = ctypes.c_int
    forks = [os.fork, os.fork, os.fork, libc_fork]
    children = [Child(_child_picks, parent, 10_000, fork=f) for f in forks]
    results = [c.result(timeout=50) for c in children]
    total: Counter[str] = Counter()
    for r in results:
        assert r["led"] is False
        assert r["leader"] == os.getpid()
        total.update(r["counts"])
    assert parent.counter - start == 40_000
    assert dict(total) == {n: 10_000 for n in NODES}
    # the parent still holds the leader lock, as seen by an unrelated process
    assert parent.is_leader
    checker = Child(_leader_of, ns)
    assert checker.result(timeout=20) == os.getpid()


def test_close_gives_up_leadership_and_another_process_takes_over(make_fleet, ns) -> None:
    parent = make_fleet(refresh=lambda: NODES)
    assert parent.wait_for_nodes(10) == NODES
    assert wait_until(lambda: parent.is_leader, 5)
    parent.close()
    assert not parent.is_leader
    assert Child(_leader_of, ns).result(timeout=20) is None

    def takeover() -> int:
        fleet = SharedFleet(ns, refresh=lambda: NODES, poll_interval=0.02)
        fleet.start()
        return int(wait_until(lambda: fleet.is_leader, 5)) + 0 * fleet.counter

    assert Child(takeover).result(timeout=20) == 1


def test_two_fleets_of_one_process_elect_one_leader(make_fleet, ns) -> None:
    a = make_fleet(refresh=lambda: NODES)
    b = make_fleet(refresh=lambda: NODES)
    a.start()
    b.start()
    assert wait_until(lambda: a.is_leader or b.is_leader, 5)
    time.sleep(0.1)
    assert a.is_leader != b.is_leader
    (a if a.is_leader else b).close()
    assert wait_until(lambda: a.is_leader or b.is_leader, 5)
