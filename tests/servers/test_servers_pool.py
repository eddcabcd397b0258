"""``multiprocessing.Pool`` with fork, spawn and forkserver: one fleet for all pool workers.

The recipe: ``Pool(initializer=attach, initargs=(settings,))`` with plain picklable settings
(``apps/pool_work.py``). The pool workers are the test's own children (or the forkserver's),
and the emulated cluster runs in the test process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from typing import Any

import pytest

from servers.servers_harness import (
    APPS,
    FleetEnv,
    check_phase,
    run_phase,
    timed_batches,
    wait_for,
    wait_leader,
)

if str(APPS) not in sys.path:
    # Before any forkserver starts: spawn and forkserver children inherit this sys.path.
    sys.path.insert(0, str(APPS))

import pool_work

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]

PROCESSES = 4
TASKS_PER_BATCH = 8
CALLS_PER_TASK = 25


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_workers(fleet_env: FleetEnv, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(
        PROCESSES, initializer=pool_work.attach, initargs=(fleet_env.settings(),)
    ) as pool:

        def batch(n: int) -> list[dict[str, Any]]:
            args = [(CALLS_PER_TASK, f"b{n}-t{i}") for i in range(TASKS_PER_BATCH)]
            results: list[dict[str, Any]] = pool.starmap_async(
                pool_work.calls, args, chunksize=1
            ).get(timeout=45)
            return results

        def workers() -> set[int]:
            return {p.pid for p in pool._pool if p.is_alive()}  # type: ignore[attr-defined]

        warm = batch(-1)
        assert all(r["failed"] == 0 for r in warm), warm
        leader = wait_leader(fleet_env.namespace)

        first = run_phase(fleet_env, lambda: timed_batches(batch, min_pids=2))
        check_phase(first)
        assert len(first.drive.pids) >= 2 and first.drive.pids <= workers()
        leader = wait_leader(fleet_env.namespace)
        assert leader in workers() and leader != os.getpid()

        # Kill the leader while every worker is inside a task (see pool_work.hold).
        markers = fleet_env.tmp / "busy"
        markers.mkdir()
        holds = [pool.apply_async(pool_work.hold, (2.0, str(markers))) for _ in range(PROCESSES)]
        wait_for(lambda: len(list(markers.iterdir())) >= PROCESSES, 30, "every worker busy")
        assert leader in {int(m.name) for m in markers.iterdir()}
        os.kill(leader, signal.SIGKILL)  # a worker of our own pool
        wait_leader(fleet_env.namespace, exclude=leader)
        del holds  # the dead worker's task is lost; the others just finish

        second = run_phase(fleet_env, lambda: timed_batches(batch))
        check_phase(second)
        assert wait_leader(fleet_env.namespace, exclude=leader) in workers()
        pool.terminate()
        pool.join()
