"""Host-wide load per node (in flight, latency) and ``balancing="adaptive"``, on the emulator.

Evidence comes from the emulated nodes' logs (which node got each attempt) and from the shared
stats (``NodeStats.in_flight`` / ``latency_ms``); the emulator's ``latency`` fault makes a node
slow or hang. No timing is asserted: shares are compared as ratios with wide margins, and
every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
from botocore.config import Config
from test_helper_support import (
    all_api_entries,
    api_counts,
    make_helper,
    module_cluster,
    spawn_context,
    wait_for,
)

from alternator_shm import ConfigurationError, Helper
from alternator_shm.fleet import load as _load

USERS = {"load-key": "load-secret"}
TABLE = "load_table"
KEY = {"p": {"S": "k"}}


cluster = module_cluster(nodes=5, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


#: Generous socket timeouts: on a loaded machine a 2 s connect timeout would fail over attempts
#: (and skew the counts) for reasons that have nothing to do with the nodes.
PATIENT = Config(connect_timeout=30, read_timeout=120)


def _url(node: Any) -> str:
    return str(node.url).rstrip("/")


def _in_flight(h: Helper, node: str | None = None) -> int:
    per_node = h.stats().per_node
    if node is not None:
        return per_node[node].in_flight
    return sum(s.in_flight for s in per_node.values())


def _calls(client: Any, count: int, threads: int) -> None:
    """``count`` GetItem calls spread over ``threads`` threads; every call must succeed."""
    errors: list[BaseException] = []
    per_thread = count // threads

    def run() -> None:
        for _ in range(per_thread):
            try:
                client.get_item(TableName=TABLE, Key=KEY)
            except BaseException as exc:  # reported below
                errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors, errors[:3]


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["adaptiv", "", None, 1, "ROUND_ROBIN"])
def test_balancing_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="balancing"):
        Helper(["127.0.0.1"], balancing=bad)


def test_balancing_values_accepted() -> None:
    for mode in ("round_robin", "adaptive"):
        Helper(["127.0.0.1"], balancing=mode)  # builds nothing until used


# -- in flight and latency -----------------------------------------------------------------------


def test_in_flight_and_latency_are_reported_host_wide(cluster: Any) -> None:
    slow = cluster.nodes[0]
    slow.inject_fault("latency", delay=1.5)
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client(config=PATIENT)
        h.live_nodes()
        stats = h.stats()
        assert all(s.in_flight == 0 and s.latency_ms is None for s in stats.per_node.values())
        # Five calls: exactly one lands on the slow node, which holds it for 1.5 s.
        worker = threading.Thread(target=_calls, args=(client, 5, 5))
        worker.start()
        try:
            assert wait_for(lambda: _in_flight(h, _url(slow)) == 1, 30), h.stats().per_node
        finally:
            worker.join(60)
        stats = h.stats()
        assert all(s.in_flight == 0 for s in stats.per_node.values()), stats.per_node
        slow_ms = stats.per_node[_url(slow)].latency_ms
        assert slow_ms is not None and slow_ms >= 1000.0, stats.per_node
        others = [s.latency_ms for n, s in stats.per_node.items() if n != _url(slow)]
        assert all(ms is not None and ms < slow_ms for ms in others), stats.per_node


def test_async_client_marks_attempts_too(cluster: Any) -> None:
    pytest.importorskip("aiobotocore")
    slow = cluster.nodes[1]
    slow.inject_fault("latency", delay=1.0)
    with make_helper(cluster) as h:
        h.live_nodes()
        seen: list[int] = []

        async def main() -> None:
            async with h.new_async_dynamodb_client(config=PATIENT) as ddb:
                calls = [
                    asyncio.create_task(ddb.get_item(TableName=TABLE, Key=KEY)) for _ in range(5)
                ]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(c.done() for c in calls):
                    seen.append(_in_flight(h, _url(slow)))
                    if seen[-1]:
                        break
                    await asyncio.sleep(0.02)
                await asyncio.gather(*calls)

        asyncio.run(main())
        assert 1 in seen
        stats = h.stats()
        assert all(s.in_flight == 0 for s in stats.per_node.values()), stats.per_node
        assert all(s.latency_ms is not None for s in stats.per_node.values()), stats.per_node


def test_a_live_attempt_stays_counted_beyond_two_epochs(cluster: Any) -> None:
    """Epochs reclaim the counts of dead processes; a live process renews its own."""
    for node in cluster.nodes:
        node.inject_fault("latency", delay=3 * _load.EPOCH_S + 3)
    with make_helper(cluster) as h:
        once = PATIENT.merge(Config(retries={"total_max_attempts": 1}))
        client = h.new_dynamodb_client(config=once)
        h.live_nodes()
        worker = threading.Thread(target=_calls, args=(client, 1, 1))
        worker.start()
        try:
            assert wait_for(lambda: _in_flight(h) == 1, 30)
            started = time.monotonic()
            # Past two full epochs, while the call is still on the wire:
            time.sleep(2 * _load.EPOCH_S + 1)
            still_running = worker.is_alive()
            count = _in_flight(h)
            elapsed = time.monotonic() - started
        finally:
            for node in cluster.nodes:
                node.clear_faults()
            worker.join(60)
        if still_running:
            assert count == 1, (count, elapsed)
        assert _in_flight(h) == 0


def _hang_forever(helper: Helper, ready: Any) -> None:
    """Child: one call against a hanging cluster; the parent SIGKILLs us mid-attempt."""
    client = helper.new_dynamodb_client(
        config=Config(connect_timeout=30, read_timeout=300, retries={"total_max_attempts": 1})
    )
    helper.live_nodes()
    ready.put(os.getpid())
    client.get_item(TableName=TABLE, Key=KEY)


@pytest.mark.slow
def test_sigkill_mid_attempt_leaves_no_in_flight_behind(cluster: Any) -> None:
    ctx = spawn_context()
    for node in cluster.nodes:
        node.inject_fault("latency", delay=120)
    with make_helper(cluster) as h:
        h.live_nodes()
        ready = ctx.Queue()
        children = [ctx.Process(target=_hang_forever, args=(h, ready)) for _ in range(2)]
        for child in children:
            child.start()
        try:
            for _ in children:
                ready.get(timeout=60)
            # Both attempts are on the wire, counted host-wide ...
            assert wait_for(lambda: _in_flight(h) == 2, 30), h.stats().per_node
            for child in children:
                assert child.pid is not None
                os.kill(child.pid, signal.SIGKILL)
                child.join(30)
            assert all(c.exitcode == -signal.SIGKILL for c in children)
            # ... and reclaimed once their epochs pass (2 epochs at most), with no one's help.
            assert wait_for(lambda: _in_flight(h) == 0, 10 * _load.EPOCH_S), h.stats().per_node
        finally:
            for child in children:
                if child.is_alive():
                    child.kill()
                    child.join(10)
            for node in cluster.nodes:
                node.clear_faults()


# -- adaptive balancing --------------------------------------------------------------------------


def test_round_robin_is_unaffected_by_a_slow_node(cluster: Any) -> None:
    cluster.nodes[2].inject_fault("latency", delay=0.06)
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client(config=PATIENT)
        h.live_nodes()
        cluster.clear_logs()
        _calls(client, 100, 4)
    counts = api_counts(cluster, "GetItem")
    assert set(counts.values()) == {20}, counts


def test_adaptive_keeps_exact_round_robin_while_nodes_are_equal(cluster: Any) -> None:
    with make_helper(cluster, balancing="adaptive") as h:
        client = h.new_dynamodb_client(config=PATIENT)
        h.live_nodes()
        _calls(client, 20, 1)  # every node has a latency estimate now
        cluster.clear_logs()
        _calls(client, 201, 1)
    counts = api_counts(cluster, "GetItem")
    assert sum(counts.values()) == 201
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def _share(entries: list[tuple[Any, Any]], url: str) -> float:
    return sum(1 for node, _ in entries if _url(node) == url) / max(1, len(entries))


@pytest.mark.slow
def test_adaptive_avoids_a_slow_node_and_returns_after_recovery(cluster: Any) -> None:
    slow = cluster.nodes[2]
    slow_url = _url(slow)
    slow.inject_fault("latency", delay=0.06)
    with make_helper(cluster, balancing="adaptive") as h:
        client = h.new_dynamodb_client(config=PATIENT)
        h.live_nodes()
        _calls(client, 400, 4)
        entries = all_api_entries(cluster, "GetItem")
        # The slow node gets far less than its fair fifth (in practice ~1%: probes only) ...
        assert _share(entries, slow_url) < 0.08, Counter(_url(n) for n, _ in entries)
        # ... and what it sheds is spread, not piled onto one node: no stampede.
        counts = Counter(_url(n) for n, _ in entries)
        healthy = [counts[_url(n)] for n in cluster.nodes if _url(n) != slow_url]
        assert max(healthy) < 0.45 * len(entries), counts
        assert min(healthy) > 0.10 * len(entries), counts

        # Recovery: the node is fast again; its share comes back (bounded, not timed).
        slow.clear_faults()
        cluster.clear_logs()
        deadline = time.monotonic() + 60
        recovered = False
        while time.monotonic() < deadline and not recovered:
            _calls(client, 100, 4)
            recent = all_api_entries(cluster, "GetItem")[-100:]
            recovered = _share(recent, slow_url) >= 0.12
        assert recovered, Counter(_url(n) for n, _ in all_api_entries(cluster, "GetItem"))


def test_a_process_balancing_alone_reports_and_uses_its_own_load(cluster: Any) -> None:
    """shared="off" (and the fail-soft fallback): the process-local twin has the same figures."""
    slow = cluster.nodes[4]
    slow.inject_fault("latency", delay=0.5)
    with make_helper(cluster, shared="off", balancing="adaptive") as h:
        client = h.new_dynamodb_client(config=PATIENT)
        h.live_nodes()
        _calls(client, 20, 1)
        stats = h.stats()
        assert stats.mode == "local"
        assert all(s.in_flight == 0 for s in stats.per_node.values()), stats.per_node
        assert all(s.latency_ms is not None for s in stats.per_node.values()), stats.per_node
        slow_ms = stats.per_node[_url(slow)].latency_ms
        assert slow_ms is not None and slow_ms >= 400.0
        cluster.clear_logs()
        _calls(client, 50, 1)
    counts = api_counts(cluster, "GetItem")
    assert counts[_url(slow)] < 5, counts  # fair share would be 10
