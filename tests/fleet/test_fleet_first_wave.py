"""The first wave of a process (issue 8, item 11): every thread that starts before the first
table waits for it (up to one deadline), so 20 threads starting together split exactly instead
of landing on the bootstrap seed."""

from __future__ import annotations

import threading
import time
from collections import Counter

from _fleet_procs import NODES

from alternator_shm.routing import Router

SEED = "http://127.0.0.99:8000"


def test_twenty_threads_starting_before_the_first_table_split_exactly(make_fleet) -> None:
    def slow_first_refresh() -> tuple[str, ...]:
        time.sleep(0.5)  # the table arrives while the whole wave is already waiting
        return NODES

    fleet = make_fleet(refresh=slow_first_refresh)
    router = Router(fleet, [SEED], first_table_timeout=10.0)
    barrier = threading.Barrier(20)
    chosen: list[str] = []

    def first_call() -> None:
        barrier.wait(10)
        chosen.append(router.next_node())

    threads = [threading.Thread(target=first_call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    counts = Counter(chosen)
    assert SEED not in counts, counts
    assert len(chosen) == 20
    assert max(counts.values()) - min(counts.values()) <= 1 and set(counts) == set(NODES)


def test_once_the_first_wait_failed_later_calls_go_to_the_seed_at_once(make_fleet) -> None:
    def down() -> tuple[str, ...]:
        raise ConnectionError("no seed answers")

    fleet = make_fleet(refresh=down)
    router = Router(fleet, [SEED], first_table_timeout=10.0)
    assert router.next_node() == SEED  # the first wait ends when the first refresh fails
    t0 = time.monotonic()
    assert [router.next_node() for _ in range(5)] == [SEED] * 5
    assert time.monotonic() - t0 < 1.0
