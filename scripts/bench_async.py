#!/usr/bin/env python3
"""Async throughput: alternator-shm's async client versus plain aiobotocore pinned to one node.

Both run in the same process and the same run, on the emulator's null backend with SigV4
enforced and every node in its own process (``process_per_node``), so the servers do not share
our GIL. Rounds are interleaved (plain, ours, plain, ...) so machine noise hits both alike; the
median calls/s and client CPU per call over the rounds are reported, and their ratio.

Each round keeps ``--concurrency`` GetItem calls in flight until ``--calls`` are done.

Usage::

    python scripts/bench_async.py [--rounds 5] [--calls 2000] [--concurrency 32]
                                  [--out benchmarks/async.md]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiobotocore
from aiobotocore.session import get_session

from alternator_shm import Helper, __version__
from alternator_shm import fleet as _fleet
from alternator_shm.emulator import Cluster

USERS = {"bench-key": "bench-secret"}
TABLE = "bench_table"
KEY = {"p": {"S": "some-partition-key"}}


async def _drive(client: Any, calls: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) for ``calls`` GetItems, ``concurrency`` in flight."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.get_item(TableName=TABLE, Key=KEY)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - wall, time.process_time() - cpu


Runs = dict[str, list[tuple[float, float]]]


async def _bench(cluster: Cluster, args: argparse.Namespace) -> Runs:
    key, secret = cluster.credentials
    helper = Helper(
        list(cluster.seeds),
        port=cluster.port,
        credentials=(key, secret),
        namespace=f"bench-{uuid.uuid4().hex}",
    )
    results: Runs = {"plain": [], "ours": []}
    try:
        helper.live_nodes()
        plain_ctx = get_session().create_client(
            "dynamodb",
            endpoint_url=cluster.nodes[0].url,
            region_name="alternator",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )
        async with plain_ctx as plain, helper.new_async_dynamodb_client() as ours:
            clients = {"plain": plain, "ours": ours}
            for client in clients.values():  # warm up: connections, caches
                await _drive(client, 200, args.concurrency)
            for _ in range(args.rounds):
                for name, client in clients.items():
                    results[name].append(await _drive(client, args.calls, args.concurrency))
    finally:
        helper.close()
        _fleet.cleanup(helper.namespace)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per client per round")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--nodes", type=int, default=3, help="emulated nodes")
    parser.add_argument("--out", default="benchmarks/async.md", help="markdown results file")
    args = parser.parse_args()
    with Cluster(nodes=args.nodes, users=USERS, backend="null", process_per_node=True) as cluster:
        results = asyncio.run(_bench(cluster, args))
    rows = []
    summary: dict[str, tuple[float, float]] = {}
    for name, runs in results.items():
        rate = statistics.median(args.calls / wall for wall, _ in runs)
        cpu_us = statistics.median(cpu / args.calls * 1e6 for _, cpu in runs)
        summary[name] = (rate, cpu_us)
    plain_rate, plain_cpu = summary["plain"]
    for name, label in (("plain", "plain aiobotocore, one node"), ("ours", "alternator-shm async")):
        rate, cpu_us = summary[name]
        rows.append(
            f"| {label} | {rate:,.0f} | {rate / plain_rate:.3f} | {cpu_us:,.0f} | "
            f"{cpu_us / plain_cpu:.3f} |"
        )
    header = [
        "| client | calls/s (median) | ratio | client CPU µs/call | CPU ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    table = "\n".join(header + rows)
    meta = (
        f"{time.strftime('%Y-%m-%d')}, alternator-shm {__version__}, aiobotocore "
        f"{aiobotocore.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} x {_cpus()} CPUs; {args.nodes} emulated nodes (null backend, "
        f"SigV4 enforced, one process each), {args.rounds} interleaved rounds x {args.calls} "
        f"GetItem calls, {args.concurrency} in flight."
    )
    print(table)
    print(meta)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Async client throughput\n\n"
        f"Command: `python scripts/bench_async.py --rounds {args.rounds} --calls {args.calls} "
        f"--concurrency {args.concurrency}`\n\n{meta}\n\n{table}\n"
    )
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
