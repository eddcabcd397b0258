"""The clients the benchmark scripts compare, built the same way everywhere, and the markdown
table they write.

Imports nothing heavy at module level (each client kind imports its own library when it is
built), so a process measuring one kind's memory carries only that kind's code: spawned
children re-run their parent's main module, and this one is what they need.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

USERS = {"benchkey": "bench-secret"}
TABLE = "bench_table"
KEY = {"p": {"S": "some-partition-key"}}


class Target:
    """Everything a child process needs to build a client of one kind (picklable)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.seeds = list(cluster.seeds)
        self.port = cluster.port
        self.urls = [n.url for n in cluster.nodes]
        self.key, self.secret = cluster.credentials
        self.namespace = namespace


def make_client(kind: str, t: Target, **helper_options: Any) -> tuple[Any, Callable[[], None]]:
    """(client, close) for ``kind``: plain, ours, ours+opt, peer or peer+opt."""
    if kind == "plain":
        import boto3

        client = boto3.session.Session().client(
            "dynamodb",
            endpoint_url=t.urls[0],
            region_name="alternator",
            aws_access_key_id=t.key,
            aws_secret_access_key=t.secret,
        )
        return client, client.close
    if kind.startswith("ours"):
        from alternator_shm import Helper

        helper = Helper(
            t.seeds,
            port=t.port,
            credentials=(t.key, t.secret),
            namespace=t.namespace,
            optimize_headers=kind == "ours+opt",
            **helper_options,
        )
        client = helper.new_dynamodb_client()
        helper.live_nodes()
        return client, helper.close
    import alternator

    config = alternator.Config(
        seed_hosts=t.seeds,
        port=t.port,
        header_optimization=alternator.config.HeaderOptimizationConfig(
            enabled=kind == "peer+opt"
        ),
    )
    peer = alternator.create_client(
        config,
        auth=alternator.config.Auth.static_credentials(t.key, t.secret),
    )
    return peer, lambda: alternator.close_client(peer)


@contextlib.asynccontextmanager
async def make_async_client(kind: str, t: Target) -> AsyncIterator[Any]:
    """An async client of ``kind`` (plain, ours or peer), closed on exit."""
    if kind == "plain":
        from aiobotocore.session import get_session

        async with get_session().create_client(
            "dynamodb",
            endpoint_url=t.urls[0],
            region_name="alternator",
            aws_access_key_id=t.key,
            aws_secret_access_key=t.secret,
        ) as client:
            yield client
    elif kind == "ours":
        from alternator_shm import Helper

        helper = Helper(t.seeds, port=t.port, credentials=(t.key, t.secret), namespace=t.namespace)
        helper.live_nodes()
        try:
            async with helper.new_async_dynamodb_client() as client:
                yield client
        finally:
            helper.close()
    else:
        import alternator
        from alternator.async_client import AsyncAlternatorClient

        config = alternator.Config(seed_hosts=t.seeds, port=t.port)
        auth = alternator.config.Auth.static_credentials(t.key, t.secret)
        async with AsyncAlternatorClient(config, auth=auth) as client:
            yield client


def rss_main() -> None:
    """``python -c 'from _bench_clients import rss_main; rss_main()' KIND TARGET_JSON``: build
    one client in a clean interpreter, make 50 GetItems, print the resident set in KiB."""
    kind, target = sys.argv[1], sys.argv[2]
    t = Target.__new__(Target)
    t.__dict__.update(json.loads(target))
    client, close = make_client(kind, t)
    for _ in range(50):
        client.get_item(TableName=TABLE, Key=KEY)
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    close()
    print(rss)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
