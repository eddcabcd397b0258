#!/usr/bin/env python3
"""Many hosts, by simulation: N hosts x M worker processes against one K-node cluster.

What one host does is measured by the other benchmarks; what 1,000 hosts do together is
simulated here, from the same rules the library follows:

* **alternator-shm**: one round-robin counter per host (every process of the host advances it),
  one ``/localnodes`` poller per host (every ``refresh_interval`` while the host sends traffic);
  each host starts its rotation at ``rotation`` (``zero``: every host at the table's first node,
  ``random``: a per-segment random offset).
* **per-process clients** (ScyllaDB's PyPI client, and any client without shared state): one
  counter and one poller per process.

Calls arrive as a Poisson process per worker. Reported per scenario: the cluster-wide per-node
imbalance in 1-second windows ((max - min) / mean, median and p99 over the windows) and over the
whole run, ``/localnodes`` requests per second reaching the cluster, and how long after a node
joins until every host (or process) routes to it.

Usage::

    python scripts/sim_many_hosts.py [--nodes 12] [--seconds 60] [--out benchmarks/many_hosts.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from alternator_shm.cli import _numbers

OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "many_hosts.md"


def simulate(
    hosts: int,
    procs: int,
    nodes: int,
    rate: float,
    seconds: int,
    shared: bool,
    rotation: str,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """(window imbalance median, window imbalance p99, whole-run imbalance)."""
    counters = hosts if shared else hosts * procs
    if rotation == "random":
        position = rng.integers(0, nodes, size=counters)
    else:
        position = np.zeros(counters, dtype=np.int64)
    totals = np.zeros(nodes, dtype=np.int64)
    window_imbalance = []
    # Per second: every process's calls (Poisson); a host's calls advance its one counter.
    for _ in range(seconds):
        calls = rng.poisson(rate, size=(hosts, procs))
        per_counter = calls.sum(axis=1) if shared else calls.reshape(-1)
        # A counter advanced c times from position p sends floor(c/K) to every node plus one
        # more to each of the next (c mod K) nodes.
        full, extra = np.divmod(per_counter, nodes)
        window = np.full(nodes, int(full.sum()), dtype=np.int64)
        starts = position % nodes
        for offset in range(1, nodes):
            hit = extra >= offset
            np.add.at(window, (starts[hit] + offset - 1) % nodes, 1)
        position = position + per_counter
        totals += window
        mean = window.mean()
        if mean > 0:
            window_imbalance.append((window.max() - window.min()) / mean)
    whole = (totals.max() - totals.min()) / totals.mean()
    ordered = sorted(window_imbalance)
    return (
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        float(whole),
    )


def join_delay(pollers: int, interval: float, rng: np.random.Generator) -> float:
    """Seconds until the last poller has seen a node that joined at a random instant."""
    phases = rng.uniform(0.0, interval, size=pollers)
    return float(phases.max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=_numbers.integer(1, 1000), default=12, help="cluster nodes")
    parser.add_argument("--seconds", type=_numbers.integer(2, 86400), default=60,
                        help="simulated seconds (at least 2)")
    parser.add_argument("--refresh", type=_numbers.seconds(0.01, 3600), default=1.0,
                        help="refresh_interval, s")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    rng = np.random.default_rng(20261130)
    header = (
        "| hosts x procs | calls/s per proc | client | rotation | window imbalance p50 | "
        "window p99 | whole run | /localnodes per s | node seen by all after |\n"
        "|---|---:|---|---|---:|---:|---:|---:|---:|"
    )
    rows = []
    print(header)
    for hosts, procs in ((10, 8), (100, 8), (1000, 8)):
        for rate in (1.0, 20.0):
            for label, shared, rotation in (
                ("alternator-shm", True, "zero"),
                ("alternator-shm", True, "random"),
                ("per-process", False, "random"),
            ):
                med, p99, whole = simulate(
                    hosts, procs, args.nodes, rate, args.seconds, shared, rotation, rng
                )
                pollers = hosts if shared else hosts * procs
                row = (
                    f"| {hosts} x {procs} | {rate:g} | {label} | {rotation} | {med:.3f} | "
                    f"{p99:.3f} | {whole:.4f} | {pollers / args.refresh:,.0f} | "
                    f"{join_delay(pollers, args.refresh, rng):.2f} s |"
                )
                rows.append(row)
                print(row, flush=True)
    text = "\n".join(
        [
            "# Many hosts (simulation, `scripts/sim_many_hosts.py`)",
            "",
            f"Command: `python scripts/sim_many_hosts.py --nodes {args.nodes} --seconds "
            f"{args.seconds} --refresh {args.refresh:g}`; run {time.strftime('%Y-%m-%d')}.",
            "",
            f"{args.nodes} nodes; calls arrive as a Poisson process per worker process; "
            "imbalance = (max - min) / mean requests per node, per 1-second window and over "
            "the whole run. `/localnodes per s` is the discovery load on the cluster while all "
            "hosts send traffic (idle hosts poll every `idle_refresh_interval`, 60 s). `node "
            "seen by all after` is when the last poller saw a node that joined (refresh phases "
            "are independent).",
            "",
            header,
            *rows,
            "",
        ]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
