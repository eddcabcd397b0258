#!/usr/bin/env python3
"""What fail-soft costs and how fast it reacts, in one process.

1. Per-pick cost of the fast path routing uses on every attempt (``nodes()`` + ``advance()`` +
   ``quarantined()`` + ``record_pick()``): the bare ``SharedFleet``, the ``FailSoftFleet``
   wrapping it (the Helper's default, ``shared="auto"``), and the process-local twin
   (``shared="off"``, the same path a process takes after a switch). p50 / p99 of ``--picks``
   timed picks after a warm-up; timer overhead included.
2. Switch time: from a first call on a namespace whose lock file another uid owns (needs root;
   skipped otherwise) to its answer from the local twin, and the rejoin delay after the foreign
   file is removed (``rejoin_interval`` 0.2 s here; 30 s by default).

Usage: ``python scripts/bench_failsoft.py [--picks N] [--out benchmarks/failsoft.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from alternator_shm.fleet import SharedFleet, cleanup, segment
from alternator_shm.fleet.failsoft import FailSoftFleet

NODES = [f"http://127.0.0.{i}:8000" for i in range(1, 5)]


def _time_picks(fleet: Any, picks: int) -> list[int]:
    clock = time.perf_counter_ns
    nodes_of, advance = fleet.nodes, fleet.advance
    quarantined, record = fleet.quarantined, fleet.record_pick

    def pick() -> None:
        nodes = nodes_of()
        node = nodes[advance() % len(nodes)]
        if node not in quarantined():
            record(node)

    for _ in range(2000):
        pick()
    samples = []
    for _ in range(picks):
        t0 = clock()
        pick()
        samples.append(clock() - t0)
    return samples


def _quantile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def _variant(name: str, make: Callable[[str], Any], picks: int) -> dict[str, Any]:
    ns = f"bench-failsoft-{uuid.uuid4().hex}"
    fleet = make(ns)
    try:
        fleet.wait_for_nodes(10)
        samples = _time_picks(fleet, picks)
    finally:
        fleet.close()
        cleanup(ns)
    return {"variant": name, "p50": _quantile(samples, 0.5), "p99": _quantile(samples, 0.99),
            "mean": statistics.fmean(samples) / 1000.0}


def _switch_and_rejoin() -> dict[str, float] | None:
    if os.geteuid() != 0:
        return None
    ns = f"bench-failsoft-{uuid.uuid4().hex}"
    lock_path = os.path.join(segment.DEFAULT_SHM_DIR, segment.base_name(ns) + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    os.chown(lock_path, 65534, 65534)
    fleet = FailSoftFleet(ns, refresh=lambda: NODES, poll_interval=0.02, rejoin_interval=0.2)
    try:
        t0 = time.perf_counter()
        fleet.wait_for_nodes(10)
        fleet.advance()
        switch = time.perf_counter() - t0
        assert fleet.mode == "local"
        os.unlink(lock_path)
        t1 = time.perf_counter()
        while fleet.mode != "shared" and time.perf_counter() - t1 < 30:
            time.sleep(0.005)
        rejoin = time.perf_counter() - t1
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        fleet.close()
        cleanup(ns)
    return {"switch_ms": switch * 1000, "rejoin_s": rejoin}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=50_000)
    parser.add_argument("--out", default="benchmarks/failsoft.md")
    args = parser.parse_args()
    picks = max(1000, min(args.picks, 1_000_000))
    rows = []
    for _ in range(2):  # interleaved twice: the machine is noisy
        rows.append(_variant("SharedFleet (bare)",
                             lambda ns: SharedFleet(ns, refresh=lambda: NODES), picks))
        rows.append(_variant("FailSoftFleet, shared (Helper default)",
                             lambda ns: FailSoftFleet(ns, refresh=lambda: NODES), picks))
        rows.append(_variant("FailSoftFleet, local twin (shared='off')",
                             lambda ns: FailSoftFleet(ns, shared="off", refresh=lambda: NODES),
                             picks))
    timing = _switch_and_rejoin()
    lines = [
        "# Fail-soft: cost per pick and switch time",
        "",
        f"`python scripts/bench_failsoft.py --picks {picks}` on {platform.machine()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (shared, noisy machine).",
        "",
        "| variant | p50 µs | p99 µs | mean µs |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['p50']:.2f} | {row['p99']:.2f} | "
                     f"{row['mean']:.2f} |")
    lines.append("")
    if timing is None:
        lines.append("Switch / rejoin timing skipped (needs root to chown a file to uid 65534).")
    else:
        lines.append(
            f"Squatted lock file → first pick answered by the local twin (includes its first "
            f"refresh): {timing['switch_ms']:.1f} ms. Foreign file removed → joined the host's "
            f"fleet again: {timing['rejoin_s']:.2f} s with a 0.2 s retry period "
            "(30 s by default)."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
