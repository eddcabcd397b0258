#!/usr/bin/env python3
"""Per-pick latency of the shared fleet: ``advance()`` + index into ``nodes()``, the fast path
routing uses on every request attempt.

For each counter backend and 1, 2 and 8 processes (forked, released together through a pipe),
every process times each pick with ``perf_counter_ns`` and reports its samples; the parent
prints p50 / p99 / p99.9 and writes ``benchmarks/pick.md``. Timer overhead (~60-100 ns) is
included. Usage: ``python scripts/bench_pick.py [--picks N] [--out benchmarks/pick.md]``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import sys
import time
import uuid
from array import array

from alternator_shm.fleet import SharedFleet, cleanup
from alternator_shm.fleet.counter import atomic_available

NODES = [f"http://127.0.0.{i}:8000" for i in range(1, 5)]


def _worker(ns: str, picks: int, go_r: int, out_w: int) -> None:
    fleet = SharedFleet(ns)
    fleet.nodes()  # attach before the clock starts
    samples = array("q", bytes(8 * picks))
    clock = time.perf_counter_ns
    advance, nodes_of = fleet.advance, fleet.nodes
    for _ in range(1000):  # warm up
        nodes = nodes_of()
        nodes[advance() % len(nodes)]
    os.read(go_r, 1)
    for i in range(picks):
        t0 = clock()
        nodes = nodes_of()
        nodes[advance() % len(nodes)]
        samples[i] = clock() - t0
    data = pickle.dumps(samples.tobytes())
    with os.fdopen(out_w, "wb") as f:
        f.write(data)


def run(backend: str, procs: int, picks: int) -> dict[str, float]:
    ns = f"bench-pick-{uuid.uuid4().hex}"
    leader = SharedFleet(ns, refresh=lambda: NODES, counter_backend=backend,
                         idle_refresh_interval=3600, refresh_interval=3600)
    try:
        leader.wait_for_nodes(10)
        assert leader.stats().counter_backend == backend
        leader.close()  # no refresher thread competing for the CPUs
        go_r, go_w = os.pipe()
        children = []
        for _ in range(procs):
            out_r, out_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(out_r)
                    _worker(ns, picks, go_r, out_w)
                except BaseException:
                    code = 1
                os._exit(code)
            os.close(out_w)
            children.append((pid, out_r))
        time.sleep(0.2)
        start = leader.counter
        t0 = time.perf_counter()
        os.write(go_w, b"x" * procs)
        merged = array("q")
        for pid, out_r in children:
            with os.fdopen(out_r, "rb") as f:
                merged.frombytes(pickle.loads(f.read()))
            os.waitpid(pid, 0)
        wall = time.perf_counter() - t0
        os.close(go_r)
        os.close(go_w)
        assert leader.counter - start == procs * picks, "lost or duplicated increments"
    finally:
        leader.close()
        cleanup(ns)
    ordered = sorted(merged)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000.0

    return {"p50": pct(0.50), "p99": pct(0.99), "p99.9": pct(0.999),
            "max": ordered[-1] / 1000.0, "throughput": procs * picks / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=100_000, help="picks per process")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..",
                                                      "benchmarks", "pick.md"))
    args = parser.parse_args()
    backends = (["atomic"] if atomic_available() else []) + ["flock"]
    rows = []
    header = ("| backend | procs | p50 µs | p99 µs | p99.9 µs | max µs | picks/s (all) |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
    print(header)
    for backend in backends:
        for procs in (1, 2, 8):
            r = run(backend, procs, args.picks)
            row = (f"| {backend} | {procs} | {r['p50']:.2f} | {r['p99']:.2f} | "
                   f"{r['p99.9']:.2f} | {r['max']:.0f} | {r['throughput']:,.0f} |")
            rows.append(row)
            print(row, flush=True)
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    text = "\n".join([
        "# Pick latency (`scripts/bench_pick.py`)",
        "",
        "One pick = `fleet.nodes()` + `fleet.advance()` + index, timed per call with",
        "`time.perf_counter_ns()` (timer overhead included), in N forked processes released",
        f"together, {args.picks:,} picks each; the counter is checked to equal N x picks.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.platform()}; load average at the end: {load}.",
        "",
        "Goals (issue 3): p50 <= 1.5 µs for one process on the lock-free backend; p99.9 <= 50 µs",
        "with 8 processes on 2 cores.",
        "",
        header,
        *rows,
        "",
        "With more processes than cores the tail is dominated by preemption (a process",
        "descheduled between its two clock reads), not by the counter; the flock backend's tail",
        "also includes waiting for a preempted lock holder.",
        "",
    ])
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
