#!/usr/bin/env python3
"""Key-route affinity, measured: same-key concentration, key spread, and the cost of a plan.

1. ``--procs`` spawned processes make conditional puts on one key through one Helper namespace
   (``key_route_affinity="rmw"``); the emulator's per-node logs say where they landed.
2. ``--keys`` different keys, one unconditional put each, ``"any_write"``: puts per node.
3. The same spread computed offline over ``--offline-keys`` keys (no network), for 3/5/10 nodes.
4. Client CPU per qualifying call for the affinity steps alone (classify + hash, and the
   seeded plan over n nodes), median of several timeit rounds.

Usage::

    python scripts/affinity_spread.py [--nodes 5] [--procs 4] [--puts 100] [--keys 1000]
        [--out benchmarks/affinity.md]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import sys
import time
import timeit
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from alternator_shm import Helper
from alternator_shm import fleet as _fleet
from alternator_shm.affinity import Affinity, Ring, Target, hash_key, seeded_order
from alternator_shm.emulator import Cluster

USERS = {"aff-key": "aff-secret"}
TABLE = "aff_table"


def _helper(cluster: Cluster, **options: Any) -> Helper:
    return Helper(
        cluster.seeds,
        port=cluster.port,
        credentials=("aff-key", "aff-secret"),
        namespace=f"bench-{uuid.uuid4().hex}",
        refresh_interval=0.2,
        **options,
    )


def _puts_per_node(cluster: Cluster) -> Counter[str]:
    return Counter(
        {
            n.url: sum(1 for e in n.log if e.method == "POST" and e.operation == "PutItem")
            for n in cluster.nodes
        }
    )


def _worker(helper: Helper, key: str, puts: int, start: Any, done: Any) -> None:
    client = helper.new_dynamodb_client()
    helper.live_nodes()
    start.wait(60)
    failures = 0
    for i in range(puts):
        try:
            client.put_item(
                TableName=TABLE,
                Item={"p": {"S": key}, "i": {"N": str(i)}},
                ConditionExpression="attribute_not_exists(never_set)",
            )
        except Exception:
            failures += 1
    done.put(failures)
    helper.close()


def same_key(cluster: Cluster, procs: int, puts: int) -> tuple[Counter[str], int]:
    ctx = multiprocessing.get_context("spawn")
    helper = _helper(cluster, key_route_affinity="rmw", partition_keys={TABLE: "p"})
    try:
        helper.live_nodes()
        start, done = ctx.Event(), ctx.Queue()
        children = [
            ctx.Process(target=_worker, args=(helper, "hot-key", puts, start, done))
            for _ in range(procs)
        ]
        for child in children:
            child.start()
        time.sleep(3.0)  # let every child attach before counting
        cluster.clear_logs()
        start.set()
        failures = sum(done.get(timeout=300) for _ in children)
        for child in children:
            child.join(30)
        return _puts_per_node(cluster), failures
    finally:
        helper.close()
        with contextlib.suppress(Exception):
            _fleet.cleanup(helper.namespace)


def many_keys(cluster: Cluster, keys: int) -> Counter[str]:
    helper = _helper(cluster, key_route_affinity="any_write", partition_keys={TABLE: "p"})
    try:
        client = helper.new_dynamodb_client()
        helper.live_nodes()
        cluster.clear_logs()
        for i in range(keys):
            client.put_item(TableName=TABLE, Item={"p": {"S": f"user-{i}"}})
        return _puts_per_node(cluster)
    finally:
        helper.close()
        with contextlib.suppress(Exception):
            _fleet.cleanup(helper.namespace)


def offline_spread(nodes: int, keys: int) -> Counter[str]:
    ring = Ring([f"http://10.0.0.{i}:8000" for i in range(1, nodes + 1)])
    return Counter(seeded_order(hash_key({"S": f"user-{i}"}) or 0, ring, 1)[0] for i in range(keys))


def _us(stmt: Any, number: int = 2000, rounds: int = 5) -> float:
    return statistics.median(timeit.repeat(stmt, number=number, repeat=rounds)) / number * 1e6


def costs() -> list[tuple[str, float]]:
    affinity = Affinity("rmw", {TABLE: "p"})
    params = {
        "TableName": TABLE,
        "Item": {"p": {"S": "user-12345"}, "v": {"N": "1"}},
        "ConditionExpression": "attribute_not_exists(p)",
    }
    out = [("classify + hash (per call)", _us(lambda: affinity.target("PutItem", params)))]
    target = affinity.target("PutItem", params)
    assert target is not None
    for n in (3, 5, 10, 50):
        nodes = tuple(f"http://10.0.0.{i}:8000" for i in range(1, n + 1))
        affinity.plan(target, nodes)  # ring cached, as in steady state
        out.append((f"seeded plan + first node, {n} nodes",
                    _us(lambda nodes=nodes: affinity.plan(target, nodes)[0])))
        out.append((f"seeded plan, all {n} nodes",
                    _us(lambda nodes=nodes: list(affinity.plan(target, nodes)), number=200)))
    batch = Target(tuple(hash_key({"S": f"k{i}"}) or 0 for i in range(25)), batch=True)
    nodes5 = tuple(f"http://10.0.0.{i}:8000" for i in range(1, 6))
    out.append(("BatchWriteItem vote, 25 items, 5 nodes",
                _us(lambda: affinity.plan(batch, nodes5), number=200)))
    return out


def _row(counts: Counter[str]) -> str:
    values = [counts[k] for k in sorted(counts)]
    total = sum(values)
    return (f"{' / '.join(str(v) for v in values)} | {min(values)}-{max(values)} | "
            f"{max(values) / total:.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--puts", type=int, default=100)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--offline-keys", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/affinity.md"))
    args = parser.parse_args()

    with Cluster(nodes=args.nodes, users=USERS, backend="null") as cluster:
        concentrated, failures = same_key(cluster, args.procs, args.puts)
        spread = many_keys(cluster, args.keys)
    lines = [
        "# Key-route affinity: concentration, spread, cost",
        "",
        f"`python scripts/affinity_spread.py --nodes {args.nodes} --procs {args.procs} "
        f"--puts {args.puts} --keys {args.keys}` on Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end, emulator `null` backend, {args.nodes} nodes.",
        "",
        "| workload | puts per node | min-max | busiest node's share |",
        "|---|---|---|---|",
        f"| {args.procs} processes x {args.puts} conditional puts, one key (`rmw`) | "
        f"{_row(concentrated)} |",
        f"| {args.keys} keys, one put each (`any_write`) | {_row(spread)} |",
    ]
    for n in (3, 5, 10):
        lines.append(f"| offline: {args.offline_keys} keys over {n} nodes (no network) | "
                     f"{_row(offline_spread(n, args.offline_keys))} |")
    lines += [
        "",
        f"Failed puts: {failures}. Ideal share of one node for spread keys: "
        f"{1 / args.nodes:.1%}.",
        "",
        "| affinity step (client CPU) | µs per call (median) |",
        "|---|---|",
    ]
    lines += [f"| {name} | {us:.1f} |" for name, us in costs()]
    lines += ["", "CPU figures scale with machine load (see the load average above)."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
