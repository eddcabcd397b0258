"""Routing's steady-state pick (``fleet.shared.PickSnapshot``, issue 16): the one-call C pick
when the ``_atomic`` extension is built and the kernel wipes the fork mark, else the same steps
in Python. Both must keep every guarantee of the general path: exact round-robin over the
ACTIVE nodes, a new table or a health change seen at the very next pick, picks counted in the
stats, nothing advanced when a word moved, and a forked child never picking through its
parent's snapshot (a kernel-wiped mark, no getpid per pick)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm import _forkmark, routing
from alternator_shm.fleet import SharedFleet, layout
from alternator_shm.fleet.counter import atomic_impl
from alternator_shm.fleet.health import HealthSettings, State
from alternator_shm.routing import Router

N = len(NODES)
_C_PICK = atomic_impl() == "extension" and _forkmark.kernel_wiped
needs_c = pytest.mark.skipif(not _C_PICK, reason="_atomic not built or no MADV_WIPEONFORK")


@pytest.fixture(params=["python", pytest.param("extension", marks=needs_c)])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(_forkmark, "address", None)  # PickPath then binds no C pick
    return str(request.param)


def _router(fleet: SharedFleet) -> Router:
    router = Router(fleet, ())
    router.next_node()  # the first pick starts the fleet (general path),
    router.next_node()  # the second binds the pick path
    assert router._path is not None
    return router


def _expected(fleet: SharedFleet, start: int, count: int, nodes: tuple[str, ...]) -> list[str]:
    return [nodes[(start + i + fleet.rotation()) % len(nodes)] for i in range(count)]


def test_steady_state_is_exact_round_robin_and_counts_picks(make_fleet, impl) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    router = _router(fleet)
    start = fleet.counter
    before = {n: s.picks for n, s in fleet.stats().per_node.items()}
    picks = [router.next_node() for _ in range(40 * N)]
    assert picks == _expected(fleet, start, 40 * N, NODES)
    assert fleet.counter - start == 40 * N
    after = fleet.stats().per_node
    assert {n: after[n].picks - before[n] for n in NODES} == {n: 40 for n in NODES}
    snap = router._path.snap  # type: ignore[union-attr]
    assert snap is not None and (snap.pick is not None) == (impl == "extension")
    # the attempt's (node, generation) is remembered for its outcome report
    assert routing.attempt_generation(picks[-1]) == 0


def test_new_table_is_used_at_the_next_pick(make_fleet, impl) -> None:
    table = [NODES]
    fleet = make_fleet(refresh=lambda: table[0])
    assert fleet.wait_for_nodes(10) == NODES
    router = _router(fleet)
    for _ in range(3):
        router.next_node()
    old = router._path.snap  # type: ignore[union-attr]
    smaller = NODES[:2]
    table[0] = smaller
    assert fleet.refresh_now(10) == smaller
    start = fleet.counter
    picks = [router.next_node() for _ in range(10)]
    assert picks == _expected(fleet, start, 10, smaller)  # no pick from the old table
    assert router._path.snap is not old  # type: ignore[union-attr]


FAST = HealthSettings(active_failure_threshold=2, down_recovery_threshold=1,
                      probe_period=0.05, probe_timeout=2.0)


def test_health_changes_are_seen_at_the_next_pick(make_fleet, impl) -> None:
    sick: set[str] = set()
    fleet = make_fleet(refresh=lambda: NODES, probe=lambda node: node not in sick, health=FAST)
    assert fleet.wait_for_nodes(10) == NODES
    assert wait_until(lambda: all(s == (State.ACTIVE, 0) for s in fleet.health_view().values()),
                      10)
    router = _router(fleet)
    bad = NODES[1]
    sick.add(bad)
    for _ in range(FAST.active_failure_threshold):
        fleet.report_failure(bad, 0)
    assert fleet.health_view()[bad] == (State.DOWN, 1)
    others = tuple(n for n in NODES if n != bad)
    start = fleet.counter
    picks = [router.next_node() for _ in range(30 * len(others))]
    # exact over the ACTIVE nodes: the rotated ACTIVE list, no counter step skipped
    assert picks == _expected(fleet, start, len(picks), others)
    assert Counter(picks) == {n: 30 for n in others}
    sick.clear()  # the probes bring it back: the generation it reports is the new one
    assert wait_until(lambda: fleet.health_view()[bad] == (State.ACTIVE, 1), 10)
    start = fleet.counter
    picks = [router.next_node() for _ in range(4 * N)]
    assert picks == _expected(fleet, start, len(picks), NODES)
    for _ in range(N):
        if router.next_node() == bad:
            break
    assert routing.attempt_generation(bad) == 1  # what its outcome report must carry


def test_a_moved_word_changes_nothing_and_the_next_pick_rebuilds(make_fleet, impl) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    router = _router(fleet)
    router.next_node()
    path = router._path
    assert path is not None and path.snap is not None
    snap = path.snap
    ops = fleet.attachment.ops
    ops.fetch_add(layout.HEALTH_VERSION_OFF, 1)  # as a claim, free or state change would
    counter = fleet.counter
    if snap.pick is not None:
        assert snap.pick() == -1
        assert fleet.counter == counter  # nothing advanced, nothing counted
    assert router.next_node() == _expected(fleet, counter, 1, NODES)[0]
    assert path.snap is not snap and fleet.counter == counter + 1


def test_index_matches_the_unbounded_sum_across_the_counter_wrap(make_fleet, impl) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    router = _router(fleet)
    ops = fleet.attachment.ops
    ops.fetch_add(layout.COUNTER_OFF, (1 << 64) - 3 - fleet.counter)  # 3 picks before the wrap
    positions = [(1 << 64) - 3, (1 << 64) - 2, (1 << 64) - 1, 0, 1, 2]
    picks = [router.next_node() for _ in positions]
    rotation = fleet.rotation()
    assert picks == [NODES[(p + rotation) % N] for p in positions]  # Python's unbounded sum


def test_a_node_without_a_shared_entry_takes_the_general_path(make_fleet, impl,
                                                              monkeypatch) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    health = fleet.attachment.health
    real = health.slot
    monkeypatch.setattr(health, "slot", lambda node, *, create: None if node == NODES[2]
                        else real(node, create=create))
    router = Router(fleet, ())
    start = fleet.counter
    picks = [router.next_node() for _ in range(4 * N)]
    assert picks == _expected(fleet, start, 4 * N, NODES)
    assert router._path is not None and router._path.snap is None


def _child_picks(fleet: SharedFleet, router: Router, count: int) -> dict[str, object]:
    parent_path = router._path
    picks = [router.next_node() for _ in range(count)]
    path = router._path
    return {
        "picks": picks,
        "dropped": path is not parent_path,
        "new_token": path is not None and path.token != parent_path.token,  # type: ignore[union-attr]
    }


def test_forked_child_never_picks_through_the_parents_snapshot(make_fleet, impl) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    router = _router(fleet)
    router.next_node()
    start = fleet.counter
    result = Child(_child_picks, fleet, router, 2 * N).result(timeout=30)
    assert result["dropped"] and result["new_token"]
    # the child's picks continue the shared counter exactly (it re-attached in the child)
    assert result["picks"] == _expected(fleet, start, 2 * N, NODES)
    assert fleet.counter == start + 2 * N
    assert router.next_node() == _expected(fleet, start + 2 * N, 1, NODES)[0]


def test_threads_share_one_snapshot_and_lose_no_pick(make_fleet, impl) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    router = _router(fleet)
    start = fleet.counter
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def work() -> None:
        local = Counter(router.next_node() for _ in range(500 * N))
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert fleet.counter - start == 4 * 500 * N
    assert counts == {n: 2000 for n in NODES}


_RAW_FORK = textwrap.dedent(
    """
    import ctypes, os, sys
    from alternator_shm import _forkmark
    from alternator_shm.fleet import SharedFleet
    import threading
    fleet = SharedFleet(sys.argv[1])  # never started: no thread, so a raw fork is safe
    assert fleet.nodes()  # published by the test's leader
    assert threading.active_count() == 1
    path = fleet.pick_path()
    snap = path.resnap()
    assert snap is not None and snap.pick is not None
    assert snap.pick() >= 0 and path.alive() == path.token
    counter = fleet.counter
    libc_fork = ctypes.PyDLL(None, use_errno=True).fork
    libc_fork.restype = ctypes.c_int
    pid = libc_fork()  # fork() from C: no Python at-fork hook runs in the child
    if pid == 0:
        ok = snap.pick() == -1 and path.alive() != path.token and fleet.counter == counter
        ok = ok and _forkmark.token() not in (0, path.token) and path.alive() != path.token
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert snap.pick() >= 0 and fleet.counter == counter + 1  # the parent's stays valid
    print("ok")
    """
)


@needs_c
def test_c_level_fork_child_sees_a_wiped_mark(make_fleet, ns) -> None:
    fleet = make_fleet(refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    out = subprocess.run([sys.executable, "-c", _RAW_FORK, ns], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr


def _pids() -> list[int]:
    return [_forkmark.getpid(), os.getpid()]


def test_getpid_is_the_process_id_in_every_process() -> None:
    assert _forkmark.getpid() == os.getpid()
    # os.fork (Python's at-fork hooks run), a child of that child, and a thread of a child
    cached, real = Child(_pids).result(timeout=30)
    assert cached == real != os.getpid()
    (cached, real), (g_cached, g_real) = Child(
        lambda: [_pids(), Child(_pids).result(timeout=30)]
    ).result(timeout=30)
    assert cached == real and g_cached == g_real != real

    def from_a_thread() -> list[int]:
        seen: list[list[int]] = []
        t = threading.Thread(target=lambda: seen.append(_pids()))
        t.start()
        t.join()
        return seen[0] + _pids()

    a, b, c, d = Child(from_a_thread).result(timeout=30)
    assert a == b == c == d != os.getpid()
    assert _forkmark.getpid() == os.getpid()  # the parent's cache is untouched


@pytest.mark.skipif(not _forkmark.pid_cached, reason="_pidcache not built or no MADV_WIPEONFORK")
def test_getpid_after_a_fork_from_c_without_python_hooks() -> None:
    # uWSGI forks from C: no at-fork hook of ours runs. PyDLL keeps the GIL across the call.
    libc_fork = ctypes.PyDLL(None).fork
    libc_fork.restype = ctypes.c_int
    assert _forkmark.getpid() == os.getpid()  # cached in the parent
    cached, real = Child(_pids, fork=libc_fork).result(timeout=30)
    assert cached == real != os.getpid()


def test_fork_mark_token_is_per_process() -> None:
    token = _forkmark.token()
    assert token and _forkmark.token() == token and _forkmark.current() == token

    def child() -> tuple[int, int, int]:
        before = _forkmark.current()
        return before, _forkmark.token(), os.getpid()

    # After os.fork, an at-fork hook of ours may already have stored the child's token (asking
    # _forkmark.getpid); a fork from C runs no hook: there the kernel's wipe is all there is.
    # PyDLL keeps the GIL across the call.
    libc_fork = ctypes.PyDLL(None).fork
    libc_fork.restype = ctypes.c_int
    for fork in (os.fork, libc_fork):
        before, child_token, child_pid = Child(child, fork=fork).result(timeout=30)
        assert child_token not in (0, token) and before != token
        if not _forkmark.kernel_wiped:
            assert before == child_token == child_pid
        elif fork is libc_fork:
            assert before == 0  # wiped by the kernel, not by an at-fork hook


def test_without_wipeonfork_the_mark_is_the_pid(ns) -> None:
    code = (
        "import os; from alternator_shm import _forkmark;"
        "print(_forkmark.kernel_wiped, _forkmark.address, _forkmark.token() == os.getpid(),"
        " _forkmark.current is os.getpid, _forkmark.getpid is os.getpid, _forkmark.pid_cached)"
    )
    env = {**os.environ, "ALTERNATOR_SHM_NO_WIPEONFORK": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["False", "None", "True", "True", "True", "False"]


def test_refresh_soon_asks_the_leader_once_and_coalesces(make_fleet) -> None:
    calls: list[float] = []

    def refresh() -> tuple[str, ...]:
        calls.append(0.0)
        return NODES

    # intervals far longer than the test: any refresh after the first comes from a request
    fleet = make_fleet(refresh=refresh, refresh_interval=600, idle_refresh_interval=600,
                       poll_interval=0.05)
    assert fleet.wait_for_nodes(10) == NODES
    assert wait_until(lambda: fleet.stats().refresh_attempts >= 1, 10)
    before = fleet.stats().refresh_attempts
    time.sleep(0.1)  # past one poll interval since that attempt
    assert fleet.refresh_soon()
    assert not fleet.refresh_soon()  # one is pending: coalesced
    assert wait_until(lambda: fleet.stats().refresh_attempts == before + 1, 10)
    assert not fleet.refresh_soon()  # an attempt started less than a poll interval ago
    time.sleep(0.1)
    assert fleet.refresh_soon()
    assert wait_until(lambda: fleet.stats().refresh_attempts == before + 2, 10)
