"""The shared round-robin counter: exact distribution across processes and threads, every
backend, every multiprocessing start method, and a holder SIGKILLed inside the fallback lock."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.fleet import SharedFleet
from alternator_shm.fleet.counter import FlockWords, atomic_available

BACKENDS = [
    pytest.param("atomic", marks=pytest.mark.skipif(not atomic_available(), reason="no libatomic")),
    "flock",
]


def _publish(make_fleet: Callable[..., SharedFleet], backend: str) -> SharedFleet:
    leader = make_fleet(refresh=lambda: NODES, counter_backend=backend)
    assert leader.wait_for_nodes(10) == NODES
    assert leader.stats().counter_backend == backend
    return leader


def _picker(ns: str, picks: int, go_r: int) -> dict[str, int]:
    fleet = SharedFleet(ns)
    nodes = fleet.nodes()
    os.read(go_r, 1)  # start together
    counts: Counter[str] = Counter()
    for _ in range(picks):
        counts[nodes[fleet.advance() % len(nodes)]] += 1
    return dict(counts)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_distribution_16_procs_x_50k(make_fleet, ns, backend) -> None:
    leader = _publish(make_fleet, backend)
    start = leader.counter
    go_r, go_w = os.pipe()
    children = [Child(_picker, ns, 50_000, go_r) for _ in range(16)]
    os.write(go_w, b"x" * 16)
    total: Counter[str] = Counter()
    for child in children:
        total.update(child.result(timeout=55))
    os.close(go_r)
    os.close(go_w)
    assert leader.counter - start == 16 * 50_000
    # the counter started at `start`, so node i gets exactly 200k picks whatever `start` was
    assert dict(total) == {n: 200_000 for n in NODES}


def _threaded_picker(ns: str, threads: int, picks: int) -> dict[str, int]:
    fleet = SharedFleet(ns)
    nodes = fleet.nodes()
    results: list[Counter[str]] = [Counter() for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def work(counts: Counter[str]) -> None:
        barrier.wait(10)
        for _ in range(picks):
            counts[nodes[fleet.advance() % len(nodes)]] += 1

    workers = [threading.Thread(target=work, args=(c,)) for c in results]
    for t in workers:
        t.start()
    for t in workers:
        t.join(50)
    return dict(sum(results, Counter()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_distribution_4_procs_x_8_threads(make_fleet, ns, backend) -> None:
    leader = _publish(make_fleet, backend)
    start = leader.counter
    children = [Child(_threaded_picker, ns, 8, 4_000) for _ in range(4)]
    total: Counter[str] = Counter()
    for child in children:
        total.update(child.result(timeout=55))
    assert leader.counter - start == 4 * 8 * 4_000
    assert dict(total) == {n: 32_000 for n in NODES}


# -- multiprocessing pools -----------------------------------------------------------------------

_pool_fleet: SharedFleet | None = None


def _pool_init(ns: str) -> None:
    global _pool_fleet
    _pool_fleet = SharedFleet(ns)


def _pool_task(picks: int) -> tuple[int, dict[str, int]]:
    assert _pool_fleet is not None
    nodes = _pool_fleet.nodes()
    counts: Counter[str] = Counter()
    for _ in range(picks):
        counts[nodes[_pool_fleet.advance() % len(nodes)]] += 1
    return os.getpid(), dict(counts)


@pytest.mark.slow
def test_pools_fork_spawn_forkserver_share_one_counter(make_fleet, ns) -> None:
    leader = _publish(make_fleet, "atomic" if atomic_available() else "flock")
    start = leader.counter
    pools = [
        multiprocessing.get_context(method).Pool(2, initializer=_pool_init, initargs=(ns,))
        for method in ("fork", "spawn", "forkserver")
    ]
    try:
        pending = [pool.map_async(_pool_task, [5_000] * 4) for pool in pools]
        results = [r.get(timeout=50) for r in pending]
    finally:
        for pool in pools:
            pool.terminate()
            pool.join()
    total: Counter[str] = Counter()
    pids = set()
    for per_pool in results:
        for pid, counts in per_pool:
            pids.add(pid)
            total.update(counts)
    assert len(pids) >= 3  # really several processes of several pools
    assert leader.counter - start == 3 * 4 * 5_000
    assert dict(total) == {n: 15_000 for n in NODES}


# -- a holder killed inside the flock critical section --------------------------------------


def _hold_counter_lock(ns: str, ready_w: int) -> None:
    fleet = SharedFleet(ns)
    ops = fleet.attachment.ops
    assert isinstance(ops, FlockWords)
    with ops.critical():
        os.write(ready_w, b"!")
        time.sleep(60)  # SIGKILLed in here


def test_sigkill_inside_flock_lock_does_not_block_others(make_fleet, ns) -> None:
    leader = _publish(make_fleet, "flock")
    ready_r, ready_w = os.pipe()
    holder = Child(_hold_counter_lock, ns, ready_w)
    try:
        assert os.read(ready_r, 1) == b"!"
        # while it holds the lock, our increment must wait (proves the lock is really held)
        done = threading.Event()
        before = leader.counter
        t = threading.Thread(target=lambda: (leader.advance(), done.set()), daemon=True)
        t.start()
        assert not done.wait(0.3)
        os.kill(holder.pid, signal.SIGKILL)
        assert done.wait(10), "the counter stayed locked after its holder was SIGKILLed"
        for _ in range(10):
            leader.advance()
        assert leader.counter == before + 11
    finally:
        holder.kill()
        os.close(ready_r)
        os.close(ready_w)
    assert wait_until(lambda: leader.counter == before + 11, 1)
