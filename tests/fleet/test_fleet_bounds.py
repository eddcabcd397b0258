"""Bounds that must hold whatever another process does (issue 8, items 9 and 10): the flock
counter lock held by a SIGSTOPped process or re-entered from a signal handler, the refresh
interval served as asked down to 0.1 s, and stamps from the future."""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import threading
import time

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.fleet import SharedFleet, layout
from alternator_shm.fleet.counter import FlockWords

# -- item 9: the flock counter lock ----------------------------------------------------------------


def _publish_flock(make_fleet) -> SharedFleet:
    leader = make_fleet(refresh=lambda: NODES, counter_backend="flock")
    assert leader.wait_for_nodes(10) == NODES
    assert leader.stats().counter_backend == "flock"
    return leader


def _hold_and_stop(ns: str, ready_w: int) -> None:
    fleet = SharedFleet(ns)
    ops = fleet.attachment.ops
    assert isinstance(ops, FlockWords)
    with ops.critical():
        os.write(ready_w, b"!")
        os.kill(os.getpid(), signal.SIGSTOP)  # stopped inside the critical section
        time.sleep(60)


def test_sigstopped_holder_of_the_counter_lock_does_not_freeze_advance(make_fleet, ns) -> None:
    leader = _publish_flock(make_fleet)
    ready_r, ready_w = os.pipe()
    holder = Child(_hold_and_stop, ns, ready_w)
    try:
        assert os.read(ready_r, 1) == b"!"
        assert wait_until(lambda: _state(holder.pid) == "T", 10)
        done = threading.Event()
        values: list[int] = []

        def pick() -> None:
            for _ in range(20):
                values.append(leader.advance())
            done.set()

        t0 = time.monotonic()
        threading.Thread(target=pick, daemon=True).start()
        assert done.wait(15), "advance() froze behind a stopped lock holder"
        elapsed = time.monotonic() - t0
        assert elapsed < 5.0, elapsed  # one bounded wait, then local picks without waiting
        assert leader.stats().local_picks == 20
        t1 = time.monotonic()
        leader.record_pick(NODES[0])  # stats and health: dropped, never raised, never stuck
        leader.report_failure(NODES[1])
        assert time.monotonic() - t1 < 5.0
        assert len(set(values)) == 20  # the local fallback still rotates
        os.kill(holder.pid, signal.SIGKILL)
        os.waitpid(holder.pid, 0)
        before = leader.counter
        assert wait_until(lambda: (leader.advance(), leader.counter > before)[1], 5)
    finally:
        os.kill(holder.pid, signal.SIGCONT) if _state(holder.pid) else None
        holder.kill()
        os.close(ready_r)
        os.close(ready_w)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3].decode()


def _signal_inside_the_section(ns: str) -> dict[str, int]:
    fleet = SharedFleet(ns)
    ops = fleet.attachment.ops
    assert isinstance(ops, FlockWords)
    got: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: got.append(fleet.advance()))
    t0 = time.monotonic()
    with ops.critical():
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs in this thread, in here
        for _ in range(100):
            if got:
                break
            time.sleep(0.001)
    return {"picked": len(got), "ms": int((time.monotonic() - t0) * 1000),
            "local": fleet.stats().local_picks}


def test_signal_handler_advancing_inside_the_section_does_not_deadlock(make_fleet, ns) -> None:
    _publish_flock(make_fleet)
    result = Child(_signal_inside_the_section, ns).result(timeout=30)
    assert result["picked"] == 1 and result["local"] == 1, result


# -- item 10: the refresh interval and future stamps -----------------------------------------------


def _traffic(fleet: SharedFleet, stop: threading.Event) -> None:
    while not stop.is_set():
        fleet.advance()
        time.sleep(0.005)


@pytest.mark.parametrize("interval", [0.1, 0.25])
def test_refresh_interval_is_served_as_asked(make_fleet, interval) -> None:
    calls: list[float] = []

    def refresh() -> tuple[str, ...]:
        calls.append(time.monotonic())
        return NODES

    fleet = make_fleet(refresh=refresh, refresh_interval=interval, idle_refresh_interval=100,
                       poll_interval=0.2)
    assert fleet.wait_for_nodes(10) == NODES
    stop = threading.Event()
    threading.Thread(target=_traffic, args=(fleet, stop), daemon=True).start()
    try:
        assert wait_until(lambda: len(calls) >= 3 + int(3.0 / interval), 30)
    finally:
        stop.set()
    gaps = [b - a for a, b in itertools.pairwise(calls[2:])]
    median = statistics.median(gaps)
    assert 0.9 * interval <= median <= 1.1 * interval, (median, gaps)


@pytest.mark.parametrize("stamp", ["LAST_SUCCESS_OFF", "LAST_ATTEMPT_OFF"])
def test_a_stamp_from_the_future_does_not_stop_refreshes(make_fleet, stamp) -> None:
    calls: list[float] = []
    mode = {"fail": stamp == "LAST_ATTEMPT_OFF"}

    def refresh() -> tuple[str, ...]:
        calls.append(time.monotonic())
        if mode["fail"] and len(calls) > 1:
            raise ConnectionError("down")  # so the backoff (LAST_ATTEMPT) schedules the next
        return NODES

    fleet = make_fleet(refresh=refresh, refresh_interval=0.05, idle_refresh_interval=0.05,
                       backoff_initial=0.05, backoff_max=0.05)
    assert fleet.wait_for_nodes(10) == NODES
    assert wait_until(lambda: len(calls) >= 3, 10)
    words = fleet.attachment.seg.words
    for _ in range(3):  # the leader may overwrite it once while we write
        words[layout.word_index(getattr(layout, stamp))] = time.monotonic_ns() + 3600 * 10**9
        time.sleep(0.01)
    n = len(calls)
    assert wait_until(lambda: len(calls) >= n + 3, 10), "refreshes stopped"


def test_a_heartbeat_from_the_future_counts_as_wedged(make_fleet, ns) -> None:
    """A leader whose heartbeat reads as 'in the future' is not trusted forever: it is
    replaced like a wedged one (here: the header is forged while the leader is stopped)."""
    ready_r, ready_w = os.pipe()
    from _fleet_procs import cont_and_kill, read_byte
    from test_fleet_fencing import CHILD_TABLE, _lead

    leader = Child(_lead, ns, ready_w, CHILD_TABLE)
    try:
        assert read_byte(ready_r, 20) == b"L"
        me = make_fleet(refresh=lambda: NODES)
        me.start()
        os.kill(leader.pid, signal.SIGSTOP)
        words = me.attachment.seg.words
        words[layout.word_index(layout.HEARTBEAT_OFF)] = time.monotonic_ns() + 3600 * 10**9
        assert wait_until(lambda: me.is_leader, 10, 0.01)
        assert me.stats().leader_mode == "takeover"
    finally:
        cont_and_kill(leader.pid)
        leader.kill()
        os.close(ready_r)
        os.close(ready_w)
