#!/usr/bin/env python3
"""One slow node: call latency with ``balancing="round_robin"``, ``"adaptive"`` and the PyPI
``alternator-client``, in ONE run, plus the all-healthy baseline; and per-node shares over time
while the slow node recovers.

Setup: 5 emulated nodes, each in its own process (``process_per_node=True``), null backend,
SigV4 enforced; one node gets the emulator's ``latency`` fault (+60 ms on every API request).
Load: 4 processes x 8 threads of GetItem, each call timed in the client (``perf_counter``).
Configurations are interleaved over ``--rounds`` rounds, so the machine's load drifts evenly
over all of them; percentiles are over every call of every round.

Goal (issue 15): adaptive p99 <= 0.5 x round-robin p99, and <= 1.2 x the all-healthy p99.

Writes ``benchmarks/adaptive.md`` (tables) and ``benchmarks/adaptive.png`` (latency bars and
shares over time). Needs ``alternator-shm[bench]`` (matplotlib, alternator-client).

Usage::

    python scripts/bench_adaptive.py [--seconds 6] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_clients import KEY, TABLE, USERS, Target, make_client, table

from alternator_shm import __version__
from alternator_shm import fleet as _fleet
from alternator_shm.emulator import Cluster

OUT_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
PROCESSES = 4
THREADS = 8
SLOW_DELAY = 0.06

CONFIGS = {
    "healthy": ("ours", "round_robin", False, "all healthy, round_robin"),
    "healthy-adaptive": ("ours", "adaptive", False, "all healthy, adaptive"),
    "round_robin": ("ours", "round_robin", True, "slow node, round_robin"),
    "adaptive": ("ours", "adaptive", True, "slow node, adaptive"),
    "peer": ("peer", "", True, "slow node, alternator-client 2.0.2"),
}


def _child(
    kind: str, balancing: str, t: Target, seconds: float, threads: int, go: Any, out: Any
) -> None:
    options = {"balancing": balancing} if kind == "ours" else {}
    client, close = make_client(kind, t, **options)
    for _ in range(10):  # warm up: connections, and the latency estimates
        client.get_item(TableName=TABLE, Key=KEY)
    out.put(("ready", os.getpid()))
    go.wait(120)
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def run() -> None:
        mine: list[float] = []
        deadline = time.monotonic() + seconds
        clock = time.perf_counter
        while time.monotonic() < deadline:
            t0 = clock()
            try:
                client.get_item(TableName=TABLE, Key=KEY)
            except Exception:
                failures[0] += 1
                continue
            mine.append((clock() - t0) * 1000.0)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join(seconds + 120)
    close()
    out.put(("done", latencies, failures[0]))


def run_phase(
    cluster: Cluster,
    config: str,
    seconds: float,
    recover_at: float | None = None,
    processes: int = PROCESSES,
    threads: int = THREADS,
) -> tuple[list[float], int, list[tuple[float, str]], float]:
    """Run one configuration; returns (latencies ms, failures, (time, node) log, go time)."""
    kind, balancing, slow, _ = CONFIGS[config]
    t = Target(cluster, f"bench-{uuid.uuid4().hex[:12]}")
    slow_node = cluster.nodes[2]
    slow_node.clear_faults()
    if slow:
        slow_node.inject_fault("latency", delay=SLOW_DELAY)
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(kind, balancing, t, seconds, threads, go, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            assert out.get(timeout=180)[0] == "ready"
        cluster.clear_logs()
        started = time.time()
        go.set()
        if recover_at is not None:
            time.sleep(recover_at)
            slow_node.clear_faults()
        latencies: list[float] = []
        failures = 0
        for _ in procs:
            _, lat, failed = out.get(timeout=seconds + 300)
            latencies.extend(lat)
            failures += failed
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        slow_node.clear_faults()
        _fleet.cleanup(t.namespace)
    log = [
        (e.time, n.url.rstrip("/"))
        for n in cluster.nodes
        for e in n.log
        if e.method == "POST" and e.operation is not None
    ]
    return latencies, failures, log, started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def shares_over_time(
    log: list[tuple[float, str]], nodes: list[str], started: float, bucket: float
) -> tuple[list[float], dict[str, list[float]]]:
    buckets: dict[int, Counter[str]] = {}
    for stamp, node in log:
        b = int((stamp - started) // bucket)
        if b >= 0:
            buckets.setdefault(b, Counter())[node] += 1
    xs = sorted(buckets)
    shares = {
        n: [buckets[b][n] / max(1, sum(buckets[b].values())) for b in xs] for n in nodes
    }
    return [(b + 0.5) * bucket for b in xs], shares


def plot(
    path: Path,
    stats: dict[str, tuple[float, float]],
    timeline: tuple[list[float], dict[str, list[float]]],
    slow: str,
    recover_at: float,
    shape: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    labels = [CONFIGS[c][3] for c in stats]
    p50 = [v[0] for v in stats.values()]
    p99 = [v[1] for v in stats.values()]
    ys = range(len(labels))
    left.barh([y - 0.2 for y in ys], p50, height=0.4, label="p50", color="#9ec5f0")
    left.barh([y + 0.2 for y in ys], p99, height=0.4, label="p99", color="#3b7dd8")
    left.set_yticks(list(ys), labels)
    left.invert_yaxis()
    left.set_xlabel("call latency (ms)")
    left.set_title(f"One node +{SLOW_DELAY * 1000:.0f} ms, {shape}")
    left.legend()
    for y, (a, b) in enumerate(zip(p50, p99, strict=True)):
        left.text(b, y + 0.2, f" {b:.1f}", va="center", fontsize=8)
        left.text(a, y - 0.2, f" {a:.1f}", va="center", fontsize=8)
    xs, shares = timeline
    for node, values in shares.items():
        style = {"linewidth": 2.5, "color": "black"} if node == slow else {"linewidth": 1}
        right.plot(xs, [v * 100 for v in values], label=node.split("//")[1], **style)
    right.axvline(recover_at, color="grey", linestyle="--")
    right.text(recover_at, 0.03, " slow node recovers", color="grey",
               transform=right.get_xaxis_transform())
    right.set_xlabel("seconds")
    right.set_ylabel("share of requests (%)")
    right.set_title("adaptive: per-node share over time")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s phases, one round")
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--threads", type=int, default=THREADS, help="per process")
    parser.add_argument("--out", default=str(OUT_DIR / "adaptive.md"))
    args = parser.parse_args()
    shape = f"{args.processes} processes x {args.threads} threads"
    seconds, rounds = (3.0, 1) if args.quick else (args.seconds, args.rounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    order = ["healthy", "round_robin", "adaptive", "peer", "healthy-adaptive"]
    lat: dict[str, list[float]] = {c: [] for c in order}
    fails: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {c: Counter() for c in order}
    with Cluster(nodes=5, users=USERS, backend="null", process_per_node=True) as cluster:
        nodes = [n.url.rstrip("/") for n in cluster.nodes]
        slow = nodes[2]
        for r in range(rounds):
            for config in order if r % 2 == 0 else list(reversed(order)):
                values, failed, log, _ = run_phase(
                    cluster, config, seconds, None, args.processes, args.threads
                )
                lat[config].extend(values)
                fails[config] += failed
                counts[config].update(node for _, node in log)
                print(f"round {r + 1} {config:17} calls {len(values):6} "
                      f"p50 {pct(values, 0.5):6.1f} ms  p99 {pct(values, 0.99):6.1f} ms",
                      flush=True)
        recover_at = max(4.0, seconds)
        _, _, log, started = run_phase(
            cluster, "adaptive", 2 * recover_at, recover_at, args.processes, args.threads
        )
        timeline = shares_over_time(log, nodes, started, 1.0)

    stats = {c: (pct(lat[c], 0.5), pct(lat[c], 0.99)) for c in order}
    healthy_p99 = stats["healthy"][1]
    rows = []
    for c in order:
        total = sum(counts[c].values())
        rows.append([
            CONFIGS[c][3], str(len(lat[c])), f"{stats[c][0]:.1f}", f"{stats[c][1]:.1f}",
            f"{stats[c][1] / healthy_p99:.2f}", f"{100 * counts[c][slow] / max(1, total):.1f}%",
            str(fails[c]),
        ])
    rr_p99, ad_p99 = stats["round_robin"][1], stats["adaptive"][1]
    verdict = [
        f"adaptive p99 / round_robin p99 = {ad_p99 / rr_p99:.2f} (goal <= 0.5): "
        f"{'met' if ad_p99 <= 0.5 * rr_p99 else 'MISSED'}",
        f"adaptive p99 / all-healthy p99 = {ad_p99 / healthy_p99:.2f} (goal <= 1.2): "
        f"{'met' if ad_p99 <= 1.2 * healthy_p99 else 'MISSED'}",
    ]
    xs, shares = timeline
    share_rows = [
        [f"{x:.1f}"] + [f"{100 * shares[n][i]:.0f}%" for n in nodes] for i, x in enumerate(xs)
    ]
    text = "\n".join([
        "# One slow node: round_robin vs adaptive vs alternator-client",
        "",
        f"alternator-shm {__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (shared with other work: figures are relative).",
        f"5 emulated nodes (process per node, null backend, SigV4 enforced); node 3 +"
        f"{SLOW_DELAY * 1000:.0f} ms; {shape} of GetItem; "
        f"{rounds} interleaved round(s) of {seconds:.0f} s per configuration.",
        f"Machine load average at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "Command: `python scripts/bench_adaptive.py "
        + (" ".join(sys.argv[1:]) or "(defaults)") + "`",
        "",
        table(["configuration", "calls", "p50 ms", "p99 ms", "p99 / healthy p99",
               "slow node share", "failed"], rows),
        "",
        *[f"- {v}" for v in verdict],
        "",
        f"## adaptive: per-node share per second (slow node recovers at {recover_at:.0f} s)",
        "",
        table(["t (s)"] + [n.split("//")[1] + (" (slow)" if n == slow else "") for n in nodes],
              share_rows),
        "",
        "![latency and shares](adaptive.png)",
        "",
    ])
    out.write_text(text)
    plot(out.with_suffix(".png"), stats, timeline, slow, recover_at, shape)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
