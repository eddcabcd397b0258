"""Fenced leadership (issue 8, items 1, 3, 7, 8): a closed or taken-over leader never writes
again, a SIGSTOPped leader is replaced by exactly one follower and stands down on SIGCONT,
``refresh_now`` honours its timeout everywhere, one refresher per owner token, and locks that a
differently spelled path or a fork child cannot drop or keep by accident.

Real processes, literal SIGKILL / SIGSTOP; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

import pytest
from _fleet_procs import (
    NODES,
    Child,
    cont_and_kill,
    follow,
    read_byte,
    take_over,
    wait_until,
)

from alternator_shm.errors import DiscoveryError
from alternator_shm.fleet import SharedFleet, cleanup, layout, list_fleets, segment

STALE = ("http://127.9.9.9:8000",)  # what a fenced-out writer would publish
CHILD_TABLE = ("http://127.0.0.7:8000", "http://127.0.0.8:8000")


def _lead(ns: str, ready_w: int, table: tuple[str, ...], interval: float = 0.05) -> None:
    """A leader child: publishes ``table`` every ``interval``; reports 'L' when leading and 'F'
    when it stood down (after a SIGCONT); lives until killed."""
    fleet = SharedFleet(ns, refresh=lambda: table, poll_interval=0.02,
                        refresh_interval=interval, idle_refresh_interval=interval)
    fleet.start()
    if not wait_until(lambda: fleet.is_leader and fleet.nodes() == table, 10):
        raise RuntimeError("child never led")
    os.write(ready_w, b"L")
    wait_until(lambda: not fleet.is_leader, 120, 0.01)
    os.write(ready_w, b"F")
    time.sleep(120)


# -- item 1: a closed Helper keeps writing ---------------------------------------------------------


def test_closed_leader_cannot_publish_from_a_slow_refresh(make_fleet, ns) -> None:
    entered, release = threading.Event(), threading.Event()
    calls = []

    def slow() -> tuple[str, ...]:
        calls.append(1)
        if len(calls) == 1:
            return NODES
        entered.set()
        release.wait(30)
        return STALE

    old = make_fleet(refresh=slow, refresh_interval=0.05, idle_refresh_interval=0.05)
    assert old.wait_for_nodes(10) == NODES
    assert entered.wait(10), "the second refresh never started"
    old.close()  # returns while the refresher thread is still inside slow()
    ready_r, ready_w = os.pipe()
    new = Child(_lead, ns, ready_w, CHILD_TABLE)
    try:
        assert read_byte(ready_r, 20) == b"L"
        assert old.nodes() == CHILD_TABLE
        release.set()  # the closed process's refresh returns now, with a stale table
        time.sleep(0.5)
        assert old.nodes() == CHILD_TABLE, "a closed process published over the new leader"
        assert old.stats().published_epoch == old.stats().leader_epoch
    finally:
        release.set()
        new.kill()
        os.close(ready_r)
        os.close(ready_w)


# -- item 3: a stopped leader freezes the host -----------------------------------------------------


@pytest.mark.slow
def test_sigstopped_leader_is_taken_over_by_one_follower_and_stands_down(make_fleet, ns) -> None:
    ready_r, ready_w = os.pipe()
    leader = Child(_lead, ns, ready_w, CHILD_TABLE)
    others: list[Child] = []
    try:
        assert read_byte(ready_r, 20) == b"L"
        me = make_fleet(refresh=lambda: NODES, refresh_interval=0.05, idle_refresh_interval=0.05)
        me.start()
        others = [Child(follow, ns, NODES, 8.0) for _ in range(3)]
        assert wait_until(lambda: me.nodes() == CHILD_TABLE, 10)
        epoch = me.stats().leader_epoch
        takeovers = me.stats().takeovers
        os.kill(leader.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert wait_until(lambda: me.nodes() == NODES, 15, 0.01), "nobody took over"
        took = time.monotonic() - stopped_at
        st = me.stats()
        assert st.leader_mode == "takeover" and st.leader_epoch == epoch + 1
        assert st.takeovers == takeovers + 1
        assert 1.5 < took < 10, took  # max(3 x 0.05, 2 s) after the last heartbeat
        time.sleep(1.0)
        assert me.stats().takeovers == takeovers + 1, "several followers took over"
        os.kill(leader.pid, signal.SIGCONT)
        assert read_byte(ready_r, 10) == b"F", "the resumed leader did not stand down"
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert me.nodes() == NODES, "the resumed leader published"
            time.sleep(0.005)
        assert me.stats().published_epoch > epoch
        assert sum(c.result(timeout=30) for c in others) + int(me.is_leader) >= 1
    finally:
        cont_and_kill(leader.pid)
        leader.kill()
        for c in others:
            c.kill()
        os.close(ready_r)
        os.close(ready_w)


@pytest.mark.slow
@pytest.mark.parametrize("gone", ["killed inside its first refresh", "closed"])
def test_a_takeover_leader_that_is_gone_is_replaced_without_a_second_stale_heartbeat(
    make_fleet, ns, gone, tmp_path
) -> None:
    """Chaos finding: the leader lock is still held by a SIGSTOPped leader, so a takeover
    leader's own death (SIGKILL before it published anything) was only noticed when its
    heartbeat went stale in turn: the table aged by a second threshold meanwhile."""
    ready_r, ready_w = os.pipe()
    stopped = Child(_lead, ns, ready_w, CHILD_TABLE)
    deputy: Child | None = None
    try:
        assert read_byte(ready_r, 20) == b"L"
        os.kill(stopped.pid, signal.SIGSTOP)
        go = str(tmp_path / "go")
        deputy = Child(take_over, ns, ready_w, "hang" if gone.startswith("killed") else "close",
                       go)
        assert read_byte(ready_r, 30) == b"T", "the follower never took over"
        # our threshold is 30 s (3 x 10 s): only the deputy byte can let us in before that
        me = make_fleet(refresh=lambda: NODES, refresh_interval=10.0, idle_refresh_interval=10.0)
        me.start()
        time.sleep(0.3)
        assert not me.is_leader
        if gone == "closed":
            open(go, "w").close()
            assert read_byte(ready_r, 10) == b"C"
        else:
            deputy.kill()
        assert wait_until(lambda: me.is_leader, 10, 0.01), "waited for a stale heartbeat"
        st = me.stats()
        assert st.leader_mode == "takeover" and st.leader_pid == os.getpid()
        os.kill(stopped.pid, signal.SIGCONT)  # the old lock holder stands down ...
        assert read_byte(ready_r, 10) == b"F"
        assert wait_until(lambda: me.stats().leader_mode == "lock", 10, 0.01)  # ... we hold it
    finally:
        cont_and_kill(stopped.pid)
        stopped.kill()
        if deputy is not None:
            deputy.kill()
        os.close(ready_r)
        os.close(ready_w)


@pytest.mark.slow
def test_a_takeover_leader_without_the_deputy_byte_is_not_displaced(make_fleet, ns) -> None:
    """A stopped deputy keeps its byte; the follower that takes over from it (stale heartbeat)
    leads without the byte. When the stopped deputy then dies, its freed byte must not make a
    live leader look gone."""
    ready_r, ready_w = os.pipe()
    stopped = Child(_lead, ns, ready_w, CHILD_TABLE)
    children: list[Child] = []
    try:
        assert read_byte(ready_r, 20) == b"L"
        os.kill(stopped.pid, signal.SIGSTOP)
        first = Child(take_over, ns, ready_w, "lead")
        children.append(first)
        assert read_byte(ready_r, 30) == b"T"
        os.kill(first.pid, signal.SIGSTOP)
        second = Child(take_over, ns, ready_w, "lead")
        children.append(second)
        assert read_byte(ready_r, 30) == b"T"
        me = make_fleet(refresh=lambda: NODES, refresh_interval=10.0, idle_refresh_interval=10.0)
        me.start()
        epoch = me.stats().leader_epoch
        assert me.stats().leader_pid == second.pid
        first.kill()  # frees the deputy byte of an epoch that is no longer current
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            st = me.stats()
            assert not me.is_leader and st.leader_epoch == epoch, "a live leader was displaced"
            time.sleep(0.01)
    finally:
        for child in (stopped, *children):
            cont_and_kill(child.pid)
            child.kill()
        os.close(ready_r)
        os.close(ready_w)


def _asker(ns: str, timeout: float) -> str:
    fleet = SharedFleet(ns)  # a pure reader: cannot take over, must not lie either
    t0 = time.monotonic()
    try:
        nodes = fleet.refresh_now(timeout=timeout)
        return f"returned {nodes} after {time.monotonic() - t0:.1f}s"
    except DiscoveryError as exc:
        return f"DiscoveryError after {time.monotonic() - t0:.1f}s: {exc}"


def test_refresh_now_with_a_stopped_leader_is_not_silently_stale(ns) -> None:
    ready_r, ready_w = os.pipe()
    leader = Child(_lead, ns, ready_w, CHILD_TABLE)
    try:
        assert read_byte(ready_r, 20) == b"L"
        os.kill(leader.pid, signal.SIGSTOP)
        verdict = Child(_asker, ns, 1.0).result(timeout=20)
        assert verdict.startswith("DiscoveryError after 1."), verdict
        assert "heartbeat age" in verdict
    finally:
        cont_and_kill(leader.pid)
        leader.kill()
        os.close(ready_r)
        os.close(ready_w)


def test_refresh_now_in_the_leader_honours_its_timeout(make_fleet) -> None:
    release = threading.Event()
    calls = []

    def slow() -> tuple[str, ...]:
        calls.append(1)
        if len(calls) > 1:
            release.wait(20)
        return NODES

    fleet = make_fleet(refresh=slow, idle_refresh_interval=100, refresh_interval=100)
    try:
        assert fleet.wait_for_nodes(10) == NODES
        assert wait_until(lambda: fleet.is_leader, 5)
        t0 = time.monotonic()
        with pytest.raises(DiscoveryError, match="within 1s"):
            fleet.refresh_now(timeout=1.0)
        assert time.monotonic() - t0 < 3.0
    finally:
        release.set()


# -- item 7: two refreshers in one process ---------------------------------------------------------


def _refresher_threads(base: str) -> list[threading.Thread]:
    name = f"alternator-shm-refresher-{base}"
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_concurrent_first_use_leaves_no_refresher_close_cannot_stop(ns) -> None:
    base = segment.base_name(ns)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen every race
    try:
        _first_use_trials(ns, base)
    finally:
        sys.setswitchinterval(switch)


def _first_use_trials(ns: str, base: str) -> None:
    for trial in range(150):
        fleet = SharedFleet(ns, refresh=lambda: NODES, poll_interval=0.05)
        barrier = threading.Barrier(6)

        def use(f: SharedFleet = fleet, b: threading.Barrier = barrier) -> None:
            b.wait(10)
            f.start()

        threads = [threading.Thread(target=use) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        fleet.close()
        assert wait_until(lambda: not _refresher_threads(base), 5), (
            f"trial {trial}: {len(_refresher_threads(base))} refresher(s) outlived close()"
        )


# -- item 8: status reads and fork children vs the locks -------------------------------------------


def _may_lead(ns: str) -> int:
    fleet = SharedFleet(ns, refresh=lambda: NODES, poll_interval=0.02)
    fleet.start()
    return int(bool(wait_until(lambda: fleet.is_leader, 1.0)))


def _cleanup_other_spelling(ns: str) -> list[str]:
    return cleanup(ns, shm_dir=segment.DEFAULT_SHM_DIR + "/.")


def test_status_under_another_spelling_drops_no_lock(make_fleet, ns) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    assert wait_until(lambda: fleet.is_leader, 5)
    odd = segment.DEFAULT_SHM_DIR + "/."
    # what `alternator-shm status --shm-dir /dev/shm/.` and a cleanup attempt do in this process
    assert [s for s in list_fleets(odd) if s.namespace == ns]
    assert cleanup(ns, shm_dir=odd) == []
    assert Child(_may_lead, ns).result(timeout=20) == 0, "a second leader appeared"
    assert Child(_cleanup_other_spelling, ns).result(timeout=20) == []
    assert os.path.exists(os.path.join(segment.DEFAULT_SHM_DIR, segment.base_name(ns)))


def _lead_with_a_c_forked_child(ns: str, ready_w: int) -> None:
    fleet = SharedFleet(ns, refresh=lambda: NODES, poll_interval=0.02)
    fleet.start()
    if not wait_until(lambda: fleet.is_leader, 10):
        raise RuntimeError("never led")
    libc_fork = ctypes.PyDLL(None, use_errno=True).fork
    libc_fork.restype = ctypes.c_int
    pid = libc_fork()  # no atfork hooks: the child keeps the lock file's description open
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    os.write(ready_w, pid.to_bytes(4, "little"))
    time.sleep(120)


@pytest.mark.slow
def test_leader_death_frees_leadership_while_a_c_forked_child_keeps_the_fd(make_fleet, ns) -> None:
    ready_r, ready_w = os.pipe()
    leader = Child(_lead_with_a_c_forked_child, ns, ready_w)
    grandchild = 0
    try:
        data = b""
        deadline = time.monotonic() + 20
        while len(data) < 4 and time.monotonic() < deadline:
            data += read_byte(ready_r, 1)
        grandchild = int.from_bytes(data, "little")
        assert grandchild > 0
        follower = make_fleet(refresh=lambda: NODES)
        follower.start()
        time.sleep(0.3)
        assert not follower.is_leader
        os.kill(leader.pid, signal.SIGKILL)
        os.waitpid(leader.pid, 0)
        # the grandchild still holds the leader byte's description: only the takeover helps
        assert wait_until(lambda: follower.is_leader, 10, 0.01)
        assert follower.stats().leader_mode == "takeover"
    finally:
        leader.kill()
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        os.close(ready_r)
        os.close(ready_w)
    assert layout.LOCK_TAKEOVER != layout.LOCK_LEADER


def test_one_refresher_per_process_and_namespace_with_a_standby(make_fleet, ns) -> None:
    base = segment.base_name(ns)
    a = make_fleet(refresh=lambda: NODES)
    b = make_fleet(refresh=lambda: NODES)
    a.start()
    b.start()
    assert a.wait_for_nodes(10) == NODES and b.nodes() == NODES
    assert len(_refresher_threads(base)) == 1
    assert wait_until(lambda: a.is_leader, 5) and not b.is_leader
    a.close()
    assert wait_until(lambda: b.is_leader, 5), "the standby fleet did not take over"
    assert len(_refresher_threads(base)) == 1
    b.close()
    assert wait_until(lambda: not _refresher_threads(base), 5)


def _lead_with_a_forked_user(ns: str, ready_w: int) -> None:
    fleet = SharedFleet(ns, refresh=lambda: NODES, poll_interval=0.02)
    fleet.start()
    if not wait_until(lambda: fleet.is_leader, 10):
        raise RuntimeError("never led")
    pid = os.fork()
    if pid == 0:  # uses the library: first use closes the inherited lock-file fd (no unlock)
        try:
            SharedFleet(ns).nodes()
            time.sleep(60)
        finally:
            os._exit(0)
    os.write(ready_w, pid.to_bytes(4, "little"))
    time.sleep(120)


def test_a_fork_child_that_uses_the_library_does_not_keep_the_leader_lock(make_fleet, ns) -> None:
    ready_r, ready_w = os.pipe()
    leader = Child(_lead_with_a_forked_user, ns, ready_w)
    grandchild = 0
    try:
        data = b""
        deadline = time.monotonic() + 20
        while len(data) < 4 and time.monotonic() < deadline:
            data += read_byte(ready_r, 1)
        grandchild = int.from_bytes(data, "little")
        assert grandchild > 0
        follower = make_fleet(refresh=lambda: NODES)
        follower.start()
        time.sleep(0.5)  # the grandchild has attached (closed the inherited fd) by now
        assert not follower.is_leader
        os.kill(leader.pid, signal.SIGKILL)
        os.waitpid(leader.pid, 0)
        killed = time.monotonic()
        assert wait_until(lambda: follower.is_leader, 10, 0.005)
        assert follower.stats().leader_mode == "lock"  # the lock itself was freed
        assert time.monotonic() - killed < 1.5
    finally:
        leader.kill()
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        os.close(ready_r)
        os.close(ready_w)
