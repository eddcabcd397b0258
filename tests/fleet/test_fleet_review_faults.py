"""Review of issue 8 (fenced leadership, takeover, fail-soft): faults found by attacking the
lead's implementation. Each test failed on the code as it was and passes since its fix; the
commit-section one stays a strict xfail: an accepted limit (README, "Limits").

Real processes, literal SIGKILL / SIGSTOP, loopback only; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
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

from alternator_shm.fleet import SharedFleet
from alternator_shm.fleet.health import HealthSettings

NEW_NODE = "http://127.0.0.99:8000"  # only a stale refresh result lists it


def test_closed_leader_neither_claims_health_entries_nor_probes(make_fleet) -> None:
    """Issue 8: 'After close() returns, that process can no longer change the table, whatever
    its thread is doing.' A refresh still in flight at close() returns later with a node list;
    that closed process must not write the shared segment (health entries are part of what
    the leader publishes) nor start network probes."""
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []
    probed: list[str] = []
    closed_at: list[float] = []

    def refresh() -> tuple[str, ...]:
        calls.append(1)
        if len(calls) == 1:
            return NODES
        entered.set()
        release.wait(30)
        return (*NODES, NEW_NODE)

    def probe(node: str) -> bool:
        if closed_at:
            probed.append(node)
        return True

    fleet = make_fleet(refresh=refresh, probe=probe, health=HealthSettings(),
                       refresh_interval=0.05, idle_refresh_interval=0.05)
    assert fleet.wait_for_nodes(10) == NODES
    assert entered.wait(10), "the second refresh never started"
    reader = make_fleet()  # another handle on the same segment (never leads: no refresh)
    assert reader.node_status(NEW_NODE) is not None
    health = reader.attachment.health
    assert health.slot(NEW_NODE, create=False) is None
    fleet.close()
    closed_at.append(time.monotonic())
    release.set()  # the closed process's refresh returns now
    time.sleep(1.0)
    claimed = health.slot(NEW_NODE, create=False) is not None
    assert not claimed and not probed, (
        f"after close(): health entry claimed={claimed}, probes sent={probed}")


# -- the deputy byte covers one level of takeover only -----------------------------------------

CHILD_TABLE = ("http://127.0.0.7:8000", "http://127.0.0.8:8000")


def _lead(ns: str, ready_w: int) -> None:
    """Leads by the lock (reports 'L'), then lives until killed."""
    fleet = SharedFleet(ns, refresh=lambda: CHILD_TABLE, poll_interval=0.02,
                        refresh_interval=0.05, idle_refresh_interval=0.05)
    fleet.start()
    if not wait_until(lambda: fleet.is_leader and fleet.nodes() == CHILD_TABLE, 10):
        raise RuntimeError("child never led")
    os.write(ready_w, b"L")
    time.sleep(120)


def _hold_byte_then_stop(path: str, byte: int, ready_w: int) -> None:
    """What a follower SIGSTOPped inside its brief deputy check looks like to the kernel: an
    OFD lock on ``byte`` of the lock file, held by a stopped process."""
    import fcntl
    import struct

    fd = os.open(path, os.O_RDWR)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, byte,
                                                    1, 0))
    os.write(ready_w, b"H")
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(120)


@pytest.mark.slow
@pytest.mark.parametrize("holder", ["a stopped takeover leader", "a stopped follower"])
def test_death_of_a_takeover_leader_is_seen_at_once_whoever_holds_the_deputy_byte(
    make_fleet, ns, holder
) -> None:
    """The lead's claim: 'when a takeover leader dies, a follower that gets byte 5 while the
    epoch is still the deputy's takes over at once'. Two stopped processes (a frozen cgroup, a
    debugger, or the chaos test's stop landing twice) leave the leader lock AND the deputy byte
    with stopped processes; the takeover leader F that follows is then SIGKILLed inside its
    first refresh. Its successor waits F's whole stale threshold (2 s), and the table, already
    one threshold old when F took over, ages past ``3 x refresh_interval + 2 s``."""
    from alternator_shm.fleet import layout, segment

    ready_r, ready_w = os.pipe()
    procs: list[Child] = []
    try:
        procs.append(Child(_lead, ns, ready_w))
        assert read_byte(ready_r, 20) == b"L"
        os.kill(procs[-1].pid, signal.SIGSTOP)
        if holder == "a stopped takeover leader":
            procs.append(Child(take_over, ns, ready_w, "lead"))
            assert read_byte(ready_r, 30) == b"T", "no takeover of the stopped leader"
            os.kill(procs[-1].pid, signal.SIGSTOP)  # it keeps the deputy byte
        else:
            path = os.path.join(os.path.realpath(segment.DEFAULT_SHM_DIR),
                                segment.base_name(ns) + ".lock")
            # the seat the next takeover leader would try first
            epoch = SharedFleet(ns).stats().leader_epoch
            procs.append(Child(_hold_byte_then_stop, path, layout.deputy_byte(epoch + 1),
                               ready_w))
            assert read_byte(ready_r, 10) == b"H"
        taker = Child(take_over, ns, ready_w, "hang")
        procs.append(taker)
        assert read_byte(ready_r, 30) == b"T", "no takeover"
        me = make_fleet(refresh=lambda: NODES, refresh_interval=0.05, idle_refresh_interval=0.05)
        me.start()
        time.sleep(0.3)
        assert not me.is_leader and me.stats().leader_pid == taker.pid
        os.kill(taker.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: me.is_leader, 10, 0.005)
        gap = time.monotonic() - killed
        age = me.stats().last_refresh_age_s
        assert gap < 1.0, (
            f"the takeover leader's death was noticed only after {gap:.2f}s "
            f"(a stale heartbeat); table age then {age}s")
    finally:
        for child in procs:
            cont_and_kill(child.pid)
            child.kill()
        os.close(ready_r)
        os.close(ready_w)


# -- a live leader displaced while it waits for its first table's admission probes --------------


@pytest.mark.slow
def test_a_live_leader_waiting_for_admission_probes_is_not_taken_over(make_fleet, ns) -> None:
    """'Leadership tied to progress': only a leader whose heartbeat is older than
    max(3 x refresh_interval, 2 s) counts as wedged. The host's first table waits for its new
    nodes' admission probes (up to 2 s) before it is published; one node that does not answer
    its probe (a paused node) makes that wait last the full 2 s, without a heartbeat. The
    follower must poll inside a window of about 0.2 s to see it, so a loaded machine may miss
    it once: up to three fresh namespaces are tried, and one displacement is the fault."""
    import uuid

    from alternator_shm.fleet import cleanup

    displaced = []
    for attempt in range(3):
        name = ns if attempt == 0 else f"{ns}-{attempt}-{uuid.uuid4().hex[:6]}"
        try:
            result = _admission_round(make_fleet, name)
        finally:
            if attempt:
                cleanup(name)
        if result:
            displaced.append(result)
            break
    assert not displaced, f"a live leader was displaced: {displaced}"


def _probing_follower(ns: str, seconds: float) -> int:
    return follow(ns, NODES, seconds, probe=lambda node: True, health=HealthSettings())


def _admission_round(make_fleet, name: str) -> str:
    go = threading.Event()
    calls: list[int] = []

    def refresh() -> tuple[str, ...]:
        calls.append(1)
        if not go.is_set():
            raise RuntimeError("not yet")  # keeps the first table unpublished meanwhile
        time.sleep(0.2)
        return NODES

    def probe(node: str) -> bool:
        if node == NODES[0]:
            time.sleep(5)  # a paused node: its probe answers only at probe_timeout
        return True

    me = make_fleet(name, refresh=refresh, probe=probe, health=HealthSettings(),
                    refresh_interval=0.05, idle_refresh_interval=0.05, backoff_initial=0.05,
                    backoff_max=0.05)
    me.start()
    assert wait_until(lambda: me.is_leader and calls, 10)
    follower = Child(_probing_follower, name, 6.0)
    try:
        time.sleep(1.0)  # the follower runs and polls
        assert me.is_leader
        takeovers = me.stats().takeovers
        go.set()
        assert wait_until(lambda: me.nodes() == NODES, 10)
        time.sleep(0.5)
        st = me.stats()
        if st.takeovers != takeovers:
            return (f"takeovers {takeovers} -> {st.takeovers} while the leader (pid "
                    f"{os.getpid()}) ran, waiting for its admission probes")
        return ""
    finally:
        me.close()
        follower.result(timeout=30)


# -- a live takeover leader displaced when the old lock holder lets go ---------------------------


def _peer(ns: str, ready_w: int, seconds: float) -> None:
    """A peer whose refresh lasts 0.3 s (a network fetch): as leader it is mostly inside it."""
    def refresh() -> tuple[str, ...]:
        time.sleep(0.3)
        return NODES

    fleet = SharedFleet(ns, refresh=refresh, poll_interval=0.02, refresh_interval=0.05,
                        idle_refresh_interval=0.05)
    fleet.start()
    os.write(ready_w, b"P")
    time.sleep(seconds)
    fleet.close()


@pytest.mark.slow
def test_a_live_takeover_leader_keeps_leading_when_the_stopped_leader_lets_go(ns) -> None:
    """A stopped leader L is taken over by T (takeover mode). When L resumes it stands down and
    frees the leader lock byte; T then takes that byte and keeps its epoch. But every follower
    polls the same byte: whoever polls first claims a NEW epoch and T, live and leading, is
    displaced (its refresh in flight fenced out, a WARNING, a second leadership change)."""
    from alternator_shm.fleet import SharedFleet as _Fleet

    ready_r, ready_w = os.pipe()
    leader = Child(_lead, ns, ready_w)
    peers: list[Child] = []
    watcher = _Fleet(ns)  # a pure reader
    try:
        assert read_byte(ready_r, 20) == b"L"
        peers = [Child(_peer, ns, ready_w, 40.0) for _ in range(4)]
        for _ in peers:
            assert read_byte(ready_r, 20) == b"P"
        displaced = []
        for _round in range(3):
            stopped = watcher.stats().leader_pid
            assert stopped
            os.kill(stopped, signal.SIGSTOP)
            assert wait_until(lambda s=stopped: watcher.stats().leader_pid not in (None, s)
                              and watcher.stats().leader_mode == "takeover", 15, 0.01)
            taker, epoch = watcher.stats().leader_pid, watcher.stats().leader_epoch
            os.kill(stopped, signal.SIGCONT)  # it stands down and frees the leader lock byte
            assert wait_until(lambda: watcher.stats().leader_mode == "lock", 10, 0.01)
            time.sleep(0.5)
            st = watcher.stats()
            if st.leader_pid != taker or st.leader_epoch != epoch:
                displaced.append((taker, epoch, st.leader_pid, st.leader_epoch))
                break  # one displacement is the fault; more rounds only guard a lucky race
        assert not displaced, (
            f"live takeover leaders displaced (pid, epoch -> pid, epoch): {displaced}")
    finally:
        for child in (leader, *peers):
            cont_and_kill(child.pid)
            child.kill()
        os.close(ready_r)
        os.close(ready_w)


# -- a process stopped inside the commit section stops every refresh of the host -----------------


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "fencing.py commit_section: every fenced write (heartbeat, publish, takeover) needs byte "
    "LOCK_COMMIT; a process stopped while holding it blocks them all until it is continued or "
    "killed (documented there as 'the one residual case'), so the table ages without bound "
    "while the leader and every follower run"))
def test_a_process_stopped_inside_the_commit_section_does_not_freeze_the_table(
    make_fleet, ns
) -> None:
    """Simulated holder: what the kernel sees when a leader is SIGSTOPped inside its commit
    (an OFD lock on byte 4 held by a stopped process). The leader and a follower both run."""
    from alternator_shm.fleet import layout, segment

    me = make_fleet(refresh=lambda: NODES, refresh_interval=0.05, idle_refresh_interval=0.05)
    assert me.wait_for_nodes(10) == NODES
    ready_r, ready_w = os.pipe()
    follower = Child(follow, ns, 12.0)
    path = os.path.join(os.path.realpath(segment.DEFAULT_SHM_DIR),
                        segment.base_name(ns) + ".lock")
    holder = Child(_hold_byte_then_stop, path, layout.LOCK_COMMIT, ready_w)
    try:
        assert read_byte(ready_r, 10) == b"H"
        worst = 0.0
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            age = me.stats().last_refresh_age_s or 0.0
            worst = max(worst, age)
            time.sleep(0.05)
        bound = max(3 * 0.05, 2.0) + 1.0
        assert worst <= bound, f"table {worst:.1f}s old while leader and follower run"
    finally:
        cont_and_kill(holder.pid)
        holder.kill()
        follower.kill()
        os.close(ready_r)
        os.close(ready_w)


# -- the in-flight renewer dies on a stopped counter-lock holder and is never restarted ----------


def _hold_counter_lock_and_stop(ns: str, ready_w: int) -> None:
    from alternator_shm.fleet.counter import FlockWords

    ops = SharedFleet(ns).attachment.ops
    assert isinstance(ops, FlockWords)
    with ops.critical():
        os.write(ready_w, b"!")
        os.kill(os.getpid(), signal.SIGSTOP)  # stopped inside the critical section
        time.sleep(60)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_in_flight_counts_survive_a_stopped_counter_lock_holder(make_fleet, ns) -> None:
    from alternator_shm.fleet import load as _load

    fleet = make_fleet(refresh=lambda: NODES, counter_backend="flock")
    assert fleet.wait_for_nodes(10) == NODES
    first = fleet.begin_attempt(NODES[0])  # outstanding: the renewer runs for it
    ready_r, ready_w = os.pipe()
    holder = Child(_hold_counter_lock_and_stop, ns, ready_w)
    try:
        assert read_byte(ready_r, 10) == b"!"
        time.sleep(_load.EPOCH_S * 1.5)  # the renewer's next round meets the stopped holder
    finally:
        cont_and_kill(holder.pid)
        holder.kill()
        os.close(ready_r)
        os.close(ready_w)
    fleet.end_attempt(first, True)
    long_call = fleet.begin_attempt(NODES[1])  # a call that lasts several epochs
    try:
        worst = 1
        deadline = time.monotonic() + _load.EPOCH_S * 3
        while time.monotonic() < deadline:
            worst = min(worst, fleet.node_load(NODES[1])[0])
            time.sleep(0.05)
        assert worst == 1, "a live attempt dropped out of the in-flight count"
    finally:
        fleet.end_attempt(long_call, True)


# -- a follower stopped inside its takeover attempt blocks every takeover ------------------------


@pytest.mark.slow
def test_a_follower_stopped_inside_its_takeover_attempt_does_not_block_the_takeover(
    make_fleet, ns
) -> None:
    """Two stopped processes: the leader, and a follower SIGSTOPped inside its takeover attempt
    (simulated: an OFD lock on byte 3 held by a stopped process). Another follower runs: the
    wedged leader must still be taken over after max(3 x refresh_interval, 2 s) + a poll."""
    from alternator_shm.fleet import layout, segment

    ready_r, ready_w = os.pipe()
    leader = Child(_lead, ns, ready_w)
    holder: Child | None = None
    try:
        assert read_byte(ready_r, 20) == b"L"
        path = os.path.join(os.path.realpath(segment.DEFAULT_SHM_DIR),
                            segment.base_name(ns) + ".lock")
        holder = Child(_hold_byte_then_stop, path, layout.LOCK_TAKEOVER, ready_w)
        assert read_byte(ready_r, 10) == b"H"
        me = make_fleet(refresh=lambda: NODES, refresh_interval=0.05, idle_refresh_interval=0.05)
        me.start()
        os.kill(leader.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert wait_until(lambda: me.is_leader, 6.0, 0.01), (
            f"no takeover {time.monotonic() - stopped_at:.1f}s after the leader stopped")
    finally:
        for child in (leader, holder):
            if child is not None:
                cont_and_kill(child.pid)
                child.kill()
        os.close(ready_r)
        os.close(ready_w)
