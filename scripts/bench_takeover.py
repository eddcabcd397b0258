#!/usr/bin/env python3
"""Takeover time after a SIGSTOP of the refresh leader, and the segment's size.

For each ``refresh_interval``: a leader process publishes table A, three follower processes
(table B) wait; the leader is SIGSTOPped and the parent, a pure reader, times how long until the
host's table is B (a follower took over with a newer epoch and published). The expected figure is
``max(3 x refresh_interval, 2 s)`` after the leader's last heartbeat, plus up to one follower
poll (0.2 s). Then the follower that took over is SIGKILLed in turn, and the parent times how
long until another follower leads (a newer epoch): it holds no leader lock (the stopped leader
still does), so only its deputy lock byte tells the others it is gone; expected: one follower
poll, not another heartbeat threshold. The leader is then SIGCONTed (it must stand down:
checked) and killed.

Prints a table and writes ``benchmarks/takeover.md``. Usage:
``python scripts/bench_takeover.py [--rounds N] [--out benchmarks/takeover.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import sys
import time
import uuid

from alternator_shm.fleet import SharedFleet, cleanup, layout, segment

TABLE_A = ("http://127.0.0.1:8000", "http://127.0.0.2:8000")
TABLE_B = ("http://127.0.0.3:8000", "http://127.0.0.4:8000")


def _child(ns: str, table: tuple[str, ...], interval: float) -> None:
    fleet = SharedFleet(ns, refresh=lambda: table, refresh_interval=interval,
                        idle_refresh_interval=interval)
    fleet.start()
    time.sleep(600)
    os._exit(0)


def _spawn(ns: str, table: tuple[str, ...], interval: float) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _child(ns, table, interval)
        finally:
            os._exit(1)
    return pid


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.001)
    return False


def one_round(interval: float) -> tuple[float, float, bool]:
    ns = f"bench-takeover-{uuid.uuid4().hex}"
    reader = SharedFleet(ns)
    pids = [_spawn(ns, TABLE_A, interval)]
    try:
        if not _wait(lambda: reader.nodes() == TABLE_A, 20):
            raise RuntimeError("the first leader never published")
        pids += [_spawn(ns, TABLE_B, interval) for _ in range(3)]
        time.sleep(1.0)  # followers attached and polling
        os.kill(pids[0], signal.SIGSTOP)
        t0 = time.monotonic()
        if not _wait(lambda: reader.nodes() == TABLE_B, 30):
            raise RuntimeError("no takeover within 30 s")
        took = time.monotonic() - t0
        st = reader.stats()
        deputy = st.leader_pid
        if deputy not in pids[1:]:
            raise RuntimeError(f"unexpected takeover leader {deputy}")
        os.kill(deputy, signal.SIGKILL)
        t1 = time.monotonic()
        if not _wait(lambda: reader.stats().leader_epoch > st.leader_epoch
                     and reader.stats().leader_pid not in (0, deputy), 30):
            raise RuntimeError("nobody replaced the killed takeover leader within 30 s")
        replaced = time.monotonic() - t1
        os.kill(pids[0], signal.SIGCONT)
        # the resumed leader must stand down: the table stays B
        stood_down = not _wait(lambda: reader.nodes() != TABLE_B, 1.0)
        return took, replaced, stood_down
    finally:
        for pid in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        cleanup(ns)


def segment_size() -> tuple[int, int]:
    ns = f"bench-takeover-{uuid.uuid4().hex}"
    fleet = SharedFleet(ns)
    try:
        fleet.nodes()
        st = os.stat(os.path.join(segment.DEFAULT_SHM_DIR, segment.base_name(ns)))
        return st.st_size, st.st_blocks * 512
    finally:
        cleanup(ns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/takeover.md")
    args = parser.parse_args()
    rows = []
    for interval in (0.1, 0.5, 1.0):
        times, replaced, ok = [], [], True
        for _ in range(args.rounds):
            took, again, stood_down = one_round(interval)
            times.append(took)
            replaced.append(again)
            ok = ok and stood_down
        expected = max(3 * interval, 2.0)
        rows.append((interval, expected, min(times), statistics.median(times), max(times),
                     statistics.median(replaced), max(replaced), ok))
    size, allocated = segment_size()
    per_node = layout.PAYLOAD_MAX // layout.MAX_NODES - 1  # one "\n" separates nodes
    lines = [
        "# Takeover after a SIGSTOP of the leader, and segment size",
        "",
        f"`python scripts/bench_takeover.py --rounds {args.rounds}` on {platform.machine()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end; 1 leader + 3 followers, default poll 0.2 s.",
        "Takeover: time from SIGSTOP to the host's table coming from a follower (new epoch, "
        "published). Deputy killed: time from the SIGKILL of that takeover leader to another "
        "follower leading (newer epoch).",
        "",
        "| refresh_interval | threshold max(3R, 2 s) | takeover min | median | max "
        "| deputy killed: median | max | old leader stood down |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for interval, expected, lo, med, hi, rmed, rhi, ok in rows:
        lines.append(f"| {interval:g} s | {expected:g} s | {lo:.2f} s | {med:.2f} s | "
                     f"{hi:.2f} s | {rmed:.2f} s | {rhi:.2f} s | {'yes' if ok else 'NO'} |")
    lines += [
        "",
        f"Segment: {size} bytes ({size / 1024:g} KiB) per namespace, {allocated} bytes "
        f"allocated; {layout.MAX_NODES} nodes of up to {per_node} bytes each on average per "
        f"table slot, {layout.HEALTH_CAPACITY} health entries.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
