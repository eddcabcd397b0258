#!/usr/bin/env python3
"""Side by side, in ONE run: plain boto3 pinned to one node, alternator-shm, and ScyllaDB's PyPI
client ``alternator-client``, on the emulator with SigV4 enforced (nodes in their own processes).

Sections (each prints a table; all are written to ``benchmarks/compare.md`` with PNG plots):

1. fleet spread: 4 processes with uneven work (1x..4x calls) over 5 nodes, per-node requests;
2. ``/localnodes`` polls made by 8 processes in the same time;
3. client CPU per call (``time.process_time`` in a client process of its own, so a slow server
   cannot hide client cost and the emulator's control server, which runs in this process, does
   not add to it; and the calling thread's ``time.thread_time``), sync and async, interleaved
   rounds, median;
3b. client instructions per call (callgrind, the calling thread only, when valgrind is
   installed): repeatable within 0.5 %, where CPU time on a shared 2-core VM swings 20 % round
   to round; user-space only (system calls are not counted);
4. per-call pick cost (``next_node()``, in a process of its own), p50 / p99;
5. request header bytes per PutItem, with and without header optimisation;
6. a node killed under load: failed calls and attempts sent to the dead node;
7. RSS added per worker process, and the shared segment size;
8. one slow node (+60 ms): p50 / p99 / mean call latency and the slow node's share, for
   ``balancing="round_robin"`` and ``"adaptive"`` and the peer (``bench_adaptive.run_phase``).

Needs the extra ``alternator-shm[bench]`` (matplotlib and the peer client) and ``[async]``.

Usage::

    python scripts/bench_compare.py [--quick] [--out benchmarks/compare.md]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore
from _bench_clients import KEY, TABLE, USERS, Target, make_async_client, make_client, table

from alternator_shm import Helper, __version__
from alternator_shm import fleet as _fleet
from alternator_shm.emulator import Cluster

ITEM = {"p": {"S": "some-partition-key"}, "v": {"S": "x" * 100}}
OUT_DIR = Path(__file__).resolve().parent.parent / "benchmarks"

SYNC_KINDS = ("plain", "ours", "ours+opt", "peer", "peer+opt")
CPU_KINDS = ("plain", "ours", "ours+opt", "peer")
LABELS = {
    "plain": "plain boto3 (one node)",
    "ours": "alternator-shm",
    "ours+opt": "alternator-shm, optimize_headers",
    "peer": "alternator-client 2.0.2",
    "peer+opt": "alternator-client, header optimization",
}


def api_counts(cluster: Cluster) -> dict[str, int]:
    return {
        n.url: sum(1 for e in n.log if e.method == "POST" and e.operation is not None)
        for n in cluster.nodes
    }


def polls(cluster: Cluster) -> int:
    return sum(1 for n in cluster.nodes for e in n.log if e.path.startswith("/localnodes"))


# -- child processes ----------------------------------------------------------------------------


def _child_calls(kind: str, t: Target, calls: int, go: Any, out: Any) -> None:
    client, close = make_client(kind, t)
    go.wait(60)
    failed = 0
    for _ in range(calls):
        try:
            client.get_item(TableName=TABLE, Key=KEY)
        except Exception:
            failed += 1
    close()
    out.put(failed)


def _child_paced(kind: str, t: Target, seconds: float, go: Any, out: Any) -> None:
    client, close = make_client(kind, t)
    go.wait(60)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.get_item(TableName=TABLE, Key=KEY)
        time.sleep(0.05)
    close()
    out.put(0)


def run_children(target: Callable[..., None], jobs: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*job, go, out)) for job in jobs]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every child build its client (and join the fleet)
    go.set()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    return results


# -- sections -----------------------------------------------------------------------------------


def fleet_spread(cluster: Cluster, fresh: Callable[[], Target], scale: int) -> list[list[str]]:
    rows = []
    # Not multiples of the 5 nodes: each process's own round-robin would then be even too.
    work = [scale * (i + 1) + i + 1 for i in range(4)]
    for kind in ("plain", "ours", "peer"):
        t = fresh()
        cluster.clear_logs()
        failed = sum(run_children(_child_calls, [(kind, t, n) for n in work]))
        counts = api_counts(cluster)
        rows.append(
            [LABELS[kind], str(sum(counts.values())), str(max(counts.values())),
             str(min(counts.values())), str(max(counts.values()) - min(counts.values())),
             str(failed)]
        )
    return rows


def localnodes_polls(
    cluster: Cluster, fresh: Callable[[], Target], seconds: float
) -> list[list[str]]:
    rows = []
    for kind, seeds in (("ours", 5), ("peer", 5), ("peer", 1)):
        t = fresh()
        t.seeds = t.seeds[:seeds]
        cluster.clear_logs()
        run_children(_child_paced, [(kind, t, seconds) for _ in range(8)])
        label = f"{LABELS[kind]}, {seeds} seed{'s' if seeds > 1 else ''}"
        rows.append([label, "8", f"{seconds:.0f}", str(polls(cluster))])
    return rows


def _cpu_run(client: Any, calls: int) -> tuple[float, float]:
    """(process CPU, calling thread CPU) in µs per GetItem over ``calls`` calls."""
    get_item = client.get_item
    cpu, own = time.process_time(), time.thread_time()
    for _ in range(calls):
        get_item(TableName=TABLE, Key=KEY)
    return ((time.process_time() - cpu) / calls * 1e6, (time.thread_time() - own) / calls * 1e6)


def _child_cpu_sync(t: Target, rounds: int, calls: int, out: Any) -> None:
    # A process of its own: the emulator's control server (which logs every request the
    # nodes serve) runs in the benchmark's parent, and its CPU must not count as the client's.
    clients = {kind: make_client(kind, t) for kind in CPU_KINDS}
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in clients}
    try:
        for client, _ in clients.values():
            _cpu_run(client, 100)
        for r in range(rounds):
            order = list(clients) if r % 2 == 0 else list(reversed(clients))
            for kind in order:
                results[kind].append(_cpu_run(clients[kind][0], calls))
    finally:
        for _, close in clients.values():
            close()
    out.put(results)


def _child_cpu_async(t: Target, rounds: int, calls: int, out: Any) -> None:
    async def main() -> dict[str, list[tuple[float, float]]]:
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "ours": [], "peer": []}
        async with contextlib.AsyncExitStack() as stack:
            clients = {
                k: await stack.enter_async_context(make_async_client(k, t)) for k in results
            }

            async def run(client: Any, n: int) -> tuple[float, float]:
                cpu, own = time.process_time(), time.thread_time()
                for _ in range(n):
                    await client.get_item(TableName=TABLE, Key=KEY)
                return ((time.process_time() - cpu) / n * 1e6,
                        (time.thread_time() - own) / n * 1e6)

            for client in clients.values():
                await run(client, 50)
            for r in range(rounds):
                order = list(clients) if r % 2 == 0 else list(reversed(clients))
                for kind in order:
                    results[kind].append(await run(clients[kind], calls))
        return results

    out.put(asyncio.run(main()))


def _in_child(target: Callable[..., None], *args: Any) -> Any:
    """Run ``target(*args, out)`` in a spawned process; its one result."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    try:
        return out.get(timeout=900)
    finally:
        proc.join(60)


def _cpu_rows(path: str, labels: dict[str, str],
              results: dict[str, list[tuple[float, float]]]) -> list[list[str]]:
    base = statistics.median(p for p, _ in results["plain"])
    rows = []
    for kind, values in results.items():
        proc = statistics.median(p for p, _ in values)
        own = statistics.median(o for _, o in values)
        rows.append([path, labels[kind], f"{proc:,.0f}", f"{own:,.0f}", f"{proc / base:.3f}"])
    return rows


def cpu_per_call(fresh: Callable[[], Target], rounds: int, calls: int) -> list[list[str]]:
    sync = _in_child(_child_cpu_sync, fresh(), rounds, calls)
    labels = {"plain": "plain aiobotocore (one node)", "ours": "alternator-shm async",
              "peer": "alternator-client async"}
    asyn = _in_child(_child_cpu_async, fresh(), rounds, calls // 2)
    return _cpu_rows("sync", LABELS, sync) + _cpu_rows("async", labels, asyn)


# The measured loop runs inside exec(): callgrind collects only while the calling thread is in
# CPython's builtin_exec (--toggle-collect), so start-up, imports, client creation and warm-up
# are left out, and so are other threads (a refresher poll would land in one run, not another).
_MEASURED_LOOP = "for _ in range(n):\n    step()"
_CALLGRIND_CALLS = 100


def _callgrind_child(path: str, kind: str, target: str, calls: int) -> None:
    """Body of ``bench_compare.py --callgrind-child``: one client, ``calls`` GetItems."""
    t = Target.__new__(Target)
    t.__dict__.update(json.loads(target))
    if path == "sync":
        client, close = make_client(kind, t)
        for _ in range(20):
            client.get_item(TableName=TABLE, Key=KEY)

        def step() -> None:
            client.get_item(TableName=TABLE, Key=KEY)

        exec(_MEASURED_LOOP, {"step": step, "n": calls})
        close()
        return
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    aclient = loop.run_until_complete(stack.enter_async_context(make_async_client(kind, t)))

    async def run(n: int) -> None:
        for _ in range(n):
            await aclient.get_item(TableName=TABLE, Key=KEY)

    loop.run_until_complete(run(20))
    exec("loop.run_until_complete(run(n))", {"loop": loop, "run": run, "n": calls})
    loop.run_until_complete(stack.aclose())
    loop.close()


def _callgrind_one(path: str, kind: str, t: Target) -> int | None:
    """Instructions the calling thread executes per GetItem (callgrind), or None on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=builtin_exec",
               f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, __file__,
               "--callgrind-child", path, kind, json.dumps(vars(t)), str(_CALLGRIND_CALLS)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        print(f"callgrind {path} {kind} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return int(match.group(1)) // _CALLGRIND_CALLS


def instructions_per_call(fresh: Callable[[], Target]) -> list[list[str]] | None:
    """Section 3b: repeatable (run to run within 0.5 %), unlike CPU time on a shared VM; blind
    to system calls (user-space instructions only). None when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        return None
    jobs = [("sync", k) for k in CPU_KINDS] + [("async", k) for k in ("plain", "ours", "peer")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(pool.map(lambda job: _callgrind_one(job[0], job[1], fresh()), jobs))
    async_labels = {"plain": "plain aiobotocore (one node)", "ours": "alternator-shm async",
                    "peer": "alternator-client async"}
    base = {path: counts[jobs.index((path, "plain"))] for path in ("sync", "async")}
    rows = []
    for (path, kind), count in zip(jobs, counts, strict=True):
        label = LABELS[kind] if path == "sync" else async_labels[kind]
        ref = base[path]
        ratio = f"{count / ref:.3f}" if count and ref else "-"
        rows.append([path, label, f"{count / 1e6:.2f}" if count else "failed", ratio])
    return rows


def _child_pick(t: Target, picks: int, out: Any) -> None:
    import alternator

    ours = Helper(t.seeds, port=t.port, credentials=(t.key, t.secret), namespace=t.namespace)
    ours.live_nodes()
    peer = alternator.Helper(alternator.Config(seed_hosts=t.seeds, port=t.port))
    peer.start()
    rows = []
    try:
        for label, fn in (("alternator-shm Helper.next_node()", ours.next_node),
                          ("alternator-client Helper.next_node()", peer.next_node)):
            for _ in range(2000):
                fn()
            samples = []
            clock = time.perf_counter_ns
            for _ in range(picks):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
            samples.sort()
            rows.append([label, f"{samples[len(samples) // 2] / 1000:.2f}",
                         f"{samples[int(len(samples) * 0.99)] / 1000:.2f}"])
    finally:
        ours.close()
        peer.stop()
    out.put(rows)


def pick_cost(fresh: Callable[[], Target], picks: int) -> list[list[str]]:
    rows: list[list[str]] = _in_child(_child_pick, fresh(), picks)
    return rows


def header_bytes(cluster: Cluster, fresh: Callable[[], Target]) -> list[list[str]]:
    rows = []
    for kind in SYNC_KINDS:
        t = fresh()
        client, close = make_client(kind, t)
        cluster.clear_logs()
        client.put_item(TableName=TABLE, Item=ITEM)
        close()
        entries = [e for n in cluster.nodes for e in n.log if e.operation == "PutItem"]
        entry = entries[-1]
        rows.append([LABELS[kind], str(entry.header_bytes), str(len(entry.headers)),
                     "yes" if entry.auth_ok else "no"])
    return rows


def _kill_run(kind: str, t: Target, victim: Any, seconds: float) -> list[str]:
    dead_host = victim.url.split("://", 1)[1].rstrip("/")
    client, close = make_client(kind, t)
    killed = threading.Event()
    lock = threading.Lock()
    tally = {"ok": 0, "failed": 0, "to_dead": 0}

    def count(request: Any, **kwargs: Any) -> None:
        if killed.is_set() and dead_host in request.url:
            with lock:
                tally["to_dead"] += 1

    client.meta.events.register_first("before-send.dynamodb", count)
    deadline = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < deadline:
            try:
                client.get_item(TableName=TABLE, Key=KEY)
                outcome = "ok"
            except Exception:
                outcome = "failed"
            with lock:
                tally[outcome] += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    time.sleep(seconds / 3)
    victim.kill()
    killed.set()
    for th in threads:
        th.join(120)
    close()
    victim.restart()
    time.sleep(1.0)
    return [LABELS[kind], str(tally["ok"] + tally["failed"]), str(tally["failed"]),
            str(tally["to_dead"])]


def node_killed(cluster: Cluster, fresh: Callable[[], Target], seconds: float) -> list[list[str]]:
    victim = cluster.nodes[1]
    return [_kill_run(kind, fresh(), victim, seconds) for kind in ("plain", "ours", "peer")]


def rss(fresh: Callable[[], Target]) -> tuple[list[list[str]], int]:
    """Resident set of a worker after 50 calls, each client in a clean interpreter that
    imports only its own library (a spawned child would first re-run this script, whose
    imports, the emulator's included, would count for every kind alike)."""
    rows = []
    base = 0
    segment = 0
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from _bench_clients import rss_main; rss_main()")
    for kind in ("plain", "ours", "peer"):
        t = fresh()
        values = []
        for _ in range(3):
            done = subprocess.run(
                [sys.executable, "-c", code, str(Path(__file__).resolve().parent), kind,
                 json.dumps(vars(t))],
                capture_output=True, text=True, timeout=120, check=True,
            )
            values.append(int(done.stdout.split()[-1]))
        kib = int(statistics.median(values))
        if kind == "plain":
            base = kib
        rows.append([LABELS[kind], f"{kib / 1024:.1f}", f"{(kib - base) / 1024:+.1f}"])
        if kind == "ours":
            for stats in _fleet.list_fleets():
                if stats.namespace == t.namespace:
                    segment = stats.segment_size
    return rows, segment


def slow_node(cluster: Cluster, seconds: float, rounds: int) -> list[list[str]]:
    """One node +60 ms (the emulator's ``latency`` fault): per-call latency for our client
    with ``balancing="round_robin"`` and ``"adaptive"`` and for the peer, 2 processes x 2
    threads (a light load: on 2 cores a heavy one is CPU-bound and hides the slow node).
    The configurations run in ``rounds`` rounds, the order reversed every other round, so the
    machine's drift falls on all of them; percentiles are over every call of every round."""
    from bench_adaptive import CONFIGS, pct, run_phase

    slow = cluster.nodes[2].url.rstrip("/")
    order = ["healthy", "round_robin", "adaptive", "peer"]
    latencies: dict[str, list[float]] = {c: [] for c in order}
    failures = dict.fromkeys(order, 0)
    to_slow = dict.fromkeys(order, 0)
    total = dict.fromkeys(order, 0)
    for r in range(rounds):
        for config in order if r % 2 == 0 else order[::-1]:
            values, failed, log, _ = run_phase(cluster, config, seconds, None, 2, 2)
            latencies[config] += values
            failures[config] += failed
            to_slow[config] += sum(1 for _, node in log if node == slow)
            total[config] += len(log)
    rows = []
    for config in order:
        values = latencies[config]
        rows.append([CONFIGS[config][3], str(len(values)), f"{pct(values, 0.5):.1f}",
                     f"{pct(values, 0.99):.1f}", f"{statistics.fmean(values):.1f}",
                     f"{100 * to_slow[config] / max(1, total[config]):.1f}%",
                     str(failures[config])])
    return rows


SUMMARY_BEGIN = "<!-- bench_compare summary: begin -->"
SUMMARY_END = "<!-- bench_compare summary: end -->"
NONE = "\N{EN DASH}"  # does not apply


def summary(
    spread: list[list[str]],
    polls: list[list[str]],
    cpu: list[list[str]],
    instructions: list[list[str]] | None,
    picks: list[list[str]],
    heads: list[list[str]],
    killed: list[list[str]],
    rss_rows: list[list[str]],
    segment: int,
    slow: list[list[str]],
) -> str:
    """The one table the README shows, from this run's sections (same wording every run)."""

    def pick(rows: list[list[str]], label: str, col: int, path: str | None = None) -> str:
        for row in rows:
            if (path is None or row[0] == path) and label in row[: 2 if path else 1]:
                return row[col]
        return "-"

    ours, opt, peer = LABELS["ours"], LABELS["ours+opt"], LABELS["peer"]
    rows = [
        [f"per-node spread, 4 processes, uneven work, {spread[0][1]} calls (max - min)",
         spread[0][4], f"**{spread[1][4]}**", spread[2][4]],
        [f"`/localnodes` polls, 8 processes, {polls[0][2]} s of calls, 5 seeds", NONE,
         f"**{polls[0][3]}**", f"{polls[1][3]} ({polls[2][3]} given 1 seed)"],
    ]
    if instructions is not None:
        rows += [
            ["client instructions per sync GetItem, vs plain boto3 (callgrind)", "1.000",
             f"{pick(instructions, ours, 3, 'sync')} ({pick(instructions, opt, 3, 'sync')} "
             "with `optimize_headers`)", pick(instructions, peer, 3, "sync")],
            ["client instructions per async GetItem, vs plain aiobotocore", "1.000",
             pick(instructions, "alternator-shm async", 3, "async"),
             pick(instructions, "alternator-client async", 3, "async")],
        ]
    rows += [
        ["client CPU time per sync call, vs plain boto3 (`process_time`; noisy, see 3)", "1.000",
         f"{pick(cpu, ours, 4, 'sync')} ({pick(cpu, opt, 4, 'sync')} with `optimize_headers`)",
         pick(cpu, peer, 4, "sync")],
        ["client CPU time per async call, vs plain aiobotocore", "1.000",
         pick(cpu, "alternator-shm async", 4, "async"),
         pick(cpu, "alternator-client async", 4, "async")],
        ["`next_node()` p50", NONE, f"{picks[0][1]} µs", f"{picks[1][1]} µs"],
        ["request header bytes per PutItem", pick(heads, LABELS["plain"], 1),
         f"{pick(heads, ours, 1)} (**{pick(heads, opt, 1)}** with `optimize_headers`)",
         pick(heads, peer, 1)],
        ["a node killed under load: failed calls / attempts to the dead node",
         f"{killed[0][2]} / {killed[0][3]} (another node)", f"{killed[1][2]} / {killed[1][3]}",
         f"{killed[2][2]} / {killed[2][3]}"],
        ["RSS per worker process, vs plain boto3", NONE, f"{rss_rows[1][2]} MiB",
         f"{rss_rows[2][2]} MiB"],
        ["one slow node (+60 ms), light load: p99 / mean ms", NONE,
         f"{slow[2][3]} / {slow[2][4]} with `balancing=\"adaptive\"` ({slow[1][3]} / "
         f"{slow[1][4]} round-robin)", f"{slow[3][3]} / {slow[3][4]}"],
        ["shared memory per namespace (host-wide)", NONE, f"{segment / 1024:.0f} KiB", NONE],
    ]
    return table(["measure", "plain boto3 (one node)", "alternator-shm", peer], rows)


# -- output -----------------------------------------------------------------------------------


def plot(path: Path, title: str, labels: list[str], values: list[float], unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(labels)))
    ax.barh(labels, values, color="#3b7dd8")
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.1f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--out", default=str(OUT_DIR / "compare.md"))
    parser.add_argument("--update-readme", action="store_true",
                        help="also replace the summary table in README.md")
    parser.add_argument("--callgrind-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.update_readme and Path(args.out).resolve() != (OUT_DIR / "compare.md").resolve():
        parser.error("--update-readme writes the README's copy of benchmarks/compare.md: "
                     "give no --out with it")
    if args.callgrind_child:
        path, kind, target, calls = args.callgrind_child
        _callgrind_child(path, kind, target, int(calls))
        return 0
    scale = 50 if args.quick else 400
    rounds, calls = (2, 200) if args.quick else (8, 600)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    namespaces: list[str] = []
    sections: list[str] = []

    def emit(title: str, text: str) -> None:
        print(f"\n## {title}\n\n{text}", flush=True)
        sections.append(f"## {title}\n\n{text}\n")

    with Cluster(nodes=5, users=USERS, backend="null", process_per_node=True) as cluster:

        def fresh() -> Target:
            ns = f"bench-{uuid.uuid4().hex[:12]}"
            namespaces.append(ns)
            return Target(cluster, ns)

        try:
            spread = fleet_spread(cluster, fresh, scale)
            emit("1. Fleet spread: 4 processes, uneven work (1x..4x), 5 nodes",
                 table(["client", "requests", "max/node", "min/node", "max - min",
                        "failed"], spread))
            plot(out.parent / "compare_spread.png", "Per-node spread (max - min requests)",
                 [r[0] for r in spread], [float(r[4]) for r in spread], "requests")
            polls_rows = localnodes_polls(cluster, fresh, 5.0 if args.quick else 10.0)
            emit("2. /localnodes polls: 8 processes, one call per 50 ms each",
                 table(["client", "processes", "seconds of calls", "polls"], polls_rows)
                 + "\n\nPolls counted from the children's start (each builds its client, "
                 "then waits 2 s for the others) to their end. alternator-client asks every "
                 "seed on each refresh, so its count grows with the seeds; ours polls once per "
                 "host whatever the seeds.")
            plot(out.parent / "compare_polls.png", "/localnodes polls (8 processes)",
                 [r[0] for r in polls_rows], [float(r[3]) for r in polls_rows], "polls")
            cpu = cpu_per_call(fresh, rounds, calls)
            emit("3. Client CPU per call (median of interleaved rounds, in a client process "
                 "of its own)",
                 table(["path", "client", "process CPU µs/call", "calling thread µs/call",
                        "process CPU vs plain"], cpu))
            plot(out.parent / "compare_cpu.png", "Client CPU per GetItem",
                 [f"{r[0]}: {r[1]}" for r in cpu], [float(r[2].replace(",", "")) for r in cpu],
                 "µs of CPU per call")
            instructions = instructions_per_call(fresh)
            emit("3b. Client instructions per call (callgrind, calling thread, "
                 f"{_CALLGRIND_CALLS} GetItems after 20 warm-up calls)",
                 table(["path", "client", "million instructions per call", "vs plain"],
                       instructions) if instructions is not None
                 else "Skipped: valgrind is not installed.")
            picks = pick_cost(fresh, 20000 if args.quick else 100000)
            emit("4. Pick cost (next_node)", table(["call", "p50 µs", "p99 µs"], picks))
            heads = header_bytes(cluster, fresh)
            emit("5. Request header bytes (one PutItem)",
                 table(["client", "header bytes", "headers", "signature ok"], heads))
            plot(out.parent / "compare_headers.png", "Request header bytes per PutItem",
                 [r[0] for r in heads], [float(r[1]) for r in heads], "bytes")
            killed = node_killed(cluster, fresh, 3.0 if args.quick else 6.0)
            emit("6. A node killed under load (4 threads)",
                 table(["client", "calls", "failed", "attempts to the dead node"], killed))
            rss_rows, segment = rss(fresh)
            emit("7. Memory per worker process",
                 table(["client", "RSS MiB", "vs plain"], rss_rows)
                 + f"\n\nShared segment per namespace: {segment / 1024:.0f} KiB.")
            slow = slow_node(cluster, 3.0 if args.quick else 6.0, 1 if args.quick else 2)
            emit("8. One slow node (+60 ms), 2 processes x 2 threads, interleaved rounds",
                 table(["configuration", "calls", "p50 ms", "p99 ms", "mean ms",
                        "slow node share", "failed"], slow))
        finally:
            for ns in namespaces:
                with contextlib.suppress(Exception):
                    _fleet.cleanup(ns)
    import alternator

    command = "python scripts/bench_compare.py" + (" --quick" if args.quick else "")
    meta = (
        f"Run {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC (`{command}`); "
        f"alternator-shm {__version__}, "
        f"alternator-client {getattr(alternator, '__version__', '2.0.2')}, boto3 "
        f"{boto3.__version__}, botocore {botocore.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()} x {os.cpu_count()} CPUs, "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}. "
        "Emulator: 5 nodes, null backend, SigV4 enforced, one process per node."
    )
    brief = f"{meta}\n\n" + summary(spread, polls_rows, cpu, instructions, picks, heads,
                                     killed, rss_rows, segment, slow)
    out.write_text(
        "# alternator-shm vs plain boto3 vs alternator-client\n\n"
        f"Command: `{command}`\n\n## Summary\n\n{SUMMARY_BEGIN}\n{brief}\n"
        f"{SUMMARY_END}\n\n" + "\n".join(sections)
    )
    print(f"\n## Summary\n\n{brief}\n\nwrote {out}")
    if args.update_readme:
        readme = OUT_DIR.parent / "README.md"
        text = readme.read_text()
        start, end = text.index(SUMMARY_BEGIN), text.index(SUMMARY_END)
        readme.write_text(f"{text[:start]}{SUMMARY_BEGIN}\n{brief}\n{text[end:]}")
        print(f"updated the summary in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
