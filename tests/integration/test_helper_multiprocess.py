"""Helpers in several processes share one node table, one counter and one view of health.

Children are started with ``spawn`` and receive the Helper pickled, as a spawn or forkserver
pool would; what they did is read back from the emulator's logs and the shared stats.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_helper_support import (
    all_api_entries,
    api_counts,
    make_helper,
    module_cluster,
    node_urls,
    spawn_context,
    wait_for,
    worker_get_items,
    worker_load_until,
)

from alternator_shm.emulator import Cluster

USERS = {"mp-key": "mp-secret"}
TABLE = "mp_table"


cluster = module_cluster(nodes=5, users=USERS, backend="null")


def _collect(results: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        out.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    return out


def test_two_processes_share_one_table_and_one_counter(cluster: Any) -> None:
    ctx = spawn_context()
    # Not a multiple of 5: two private counters would each give node 0 one extra call (a
    # spread of 2); one shared counter keeps it <= 1.
    calls = 151
    with make_helper(cluster) as h:
        start, results = ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=worker_get_items, args=(h, TABLE, calls, start, results, i))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        try:
            # Wait until both children attached (their first table read is done), then go.
            assert wait_for(lambda: h.stats().leader_pid is not None, 30)
            cluster.clear_logs()
            start.set()
            reports = _collect(results, 2, 60)
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        assert [p.exitcode for p in procs] == [0, 0]
        assert all(r["failures"] == 0 for r in reports)
        # One table (same segment, same nodes) ...
        assert reports[0]["segment"] == reports[1]["segment"] == h.stats().segment_name
        assert reports[0]["nodes"] == reports[1]["nodes"]
        assert sorted(reports[0]["nodes"]) == node_urls(cluster)
        # ... and one counter: 302 calls from two processes spread exactly over 5 nodes.
        counts = api_counts(cluster, "GetItem")
        assert sum(counts.values()) == 2 * calls
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        assert h.stats().picks == 2 * calls
    assert all(e.auth_ok for _, e in all_api_entries(cluster))


@pytest.mark.slow
def test_node_killed_under_load_fails_no_call_and_all_processes_avoid_it() -> None:
    """Kill a node under load from 2 processes x 2 threads plus 2 local threads.

    The killed node stays listed by ``/localnodes`` for 3 s (``failure_detect_delay``), so only
    the *shared* health keeps traffic off it: its failures count host-wide, so after
    ``active_failure_threshold`` (10) of them, from whichever processes, it is DOWN and no
    process picks it again; no call fails (connection errors are retried on another node).
    """
    ctx = spawn_context()
    with (
        Cluster(nodes=5, users=USERS, backend="null", failure_detect_delay=3.0) as c,
        make_helper(c) as h,
    ):
        stop, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
        procs = [
            ctx.Process(target=worker_load_until, args=(h, TABLE, 2, stop, ready, results, i))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        local_failures: list[str] = []
        local_calls = [0, 0]
        local_stop = threading.Event()
        client = h.new_dynamodb_client()

        def run(slot: int) -> None:
            deadline = time.monotonic() + 50
            while not local_stop.is_set() and time.monotonic() < deadline:
                try:
                    client.get_item(TableName=TABLE, Key={"p": {"S": f"local-{slot}"}})
                    local_calls[slot] += 1
                except Exception as exc:
                    local_failures.append(repr(exc))

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
        try:
            _collect(ready, 2, 60)
            for t in threads:
                t.start()
            time.sleep(0.5)
            victim = c.nodes[2]
            url = victim.url
            victim.kill()
            assert wait_for(lambda: url in h.stats().per_node
                            and h.stats().per_node[url].state == "down", 5.0)
            before = h.stats().per_node[url]
            time.sleep(1.0)  # load continues; the victim is still listed by /localnodes
            after = h.stats().per_node.get(url)
            assert url in h.live_nodes()
        finally:
            stop.set()
            local_stop.set()
            for t in threads:
                t.join(30)
            reports = _collect(results, 2, 60)
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        assert [p.exitcode for p in procs] == [0, 0]
        assert local_failures == []
        assert [r["failures"] for r in reports] == [[], []]
        assert all(r["calls"] > 0 for r in reports) and all(local_calls)
        # Nobody picked the victim after it went down ...
        assert after is not None and after.state == "down" and after.quarantined
        assert after.picks == before.picks
        # ... which took the threshold's failures, plus attempts already in flight then.
        concurrency = 2 * 2 + 2
        assert 10 <= after.failures <= 10 + concurrency, after
