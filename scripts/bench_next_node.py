#!/usr/bin/env python3
"""``Helper.next_node()`` against the PyPI peer's, on the emulator (one process).

The public pick: the shared counter's fetch-add, the table read, the health view and the pick
record, through every layer (Helper, Router, fail-soft wrapper, SharedFleet). Each call is timed
with ``perf_counter_ns`` (timer overhead ~60-100 ns included), ``--calls`` calls per round,
``--rounds`` rounds alternating ours and the peer's; prints p50 / p99 of each round and the
median of the rounds' p50, and writes ``benchmarks/next_node.md``. Run it with
``PYTHONPATH`` pointing at another checkout to measure a before/after pair.

Usage: ``python scripts/bench_next_node.py [--calls 100000] [--rounds 3] [--out PATH]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import alternator

from alternator_shm import Helper
from alternator_shm.emulator import Cluster
from alternator_shm.fleet import cleanup

try:
    from alternator_shm.fleet.counter import atomic_impl
except ImportError:  # an older checkout measured for "before" (libatomic was its only path)

    def atomic_impl() -> str | None:
        return "libatomic"


def _measure(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(2000):
        fn()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/next_node.md")
    args = parser.parse_args()
    ns = f"bench-next-{uuid.uuid4().hex[:12]}"
    rows: list[list[str]] = []
    p50s: dict[str, list[float]] = {"ours": [], "peer": []}
    with Cluster(nodes=5, backend="null") as cluster:
        ours = Helper(list(cluster.seeds), port=cluster.port, credentials=cluster.credentials,
                      namespace=ns)
        ours.live_nodes()
        backend = ours.stats().counter_backend
        peer = alternator.Helper(alternator.Config(seed_hosts=list(cluster.seeds),
                                                   port=cluster.port))
        peer.start()
        try:
            for r in range(args.rounds):
                for kind, fn in (("ours", ours.next_node), ("peer", peer.next_node)):
                    p50, p99 = _measure(fn, args.calls)
                    p50s[kind].append(p50)
                    rows.append([str(r + 1), kind, f"{p50:.2f}", f"{p99:.2f}"])
                    print(rows[-1], flush=True)
        finally:
            ours.close()
            peer.stop()
            cleanup(ns)
    lines = ["| round | Helper.next_node() of | p50 µs | p99 µs |", "|---:|---|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    summary = (f"Median of the rounds' p50: ours {statistics.median(p50s['ours']):.2f} µs, "
               f"alternator-client 2.0.2 {statistics.median(p50s['peer']):.2f} µs "
               f"(ratio {statistics.median(p50s['ours']) / statistics.median(p50s['peer']):.2f}).")
    print(summary)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        "# `Helper.next_node()` (`scripts/bench_next_node.py`)\n\n"
        f"Command: `python scripts/bench_next_node.py --calls {args.calls} --rounds "
        f"{args.rounds}`. Counter backend: {backend} ({atomic_impl() or 'flock'}).\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; load average at the end: {load}.\n\n"
        + "\n".join(lines) + "\n\n" + summary + "\n"
    )
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
