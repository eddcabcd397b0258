"""FailSoftFleet and its process-local twin, below the Helper: the switch on a SharedStateError
raised *after* a successful attach, the rejoin schedule, fork children, ``shared="off"`` and the
twin's own table / counter / health / refresher rules."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any

import pytest
from _fleet_procs import NODES, Child, wait_until

from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import segment
from alternator_shm.fleet.failsoft import FailSoftFleet
from alternator_shm.fleet.health import HealthSettings, State, Status
from alternator_shm.fleet.standalone import StandaloneFleet

LOGGER = "alternator_shm.fleet.failsoft"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def fleets() -> Any:
    made: list[FailSoftFleet] = []
    pid = os.getpid()

    def make(ns: str, **kwargs: Any) -> FailSoftFleet:
        kwargs.setdefault("poll_interval", 0.02)
        fleet = FailSoftFleet(ns, **kwargs)
        made.append(fleet)
        return fleet

    yield make
    if os.getpid() == pid:
        for fleet in made:
            fleet.close()


def test_a_later_shared_state_error_switches_without_failing_the_call(
    fleets: Any, ns: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    fleet = fleets(ns, refresh=lambda: NODES, rejoin_interval=60)
    assert fleet.wait_for_nodes(10) == NODES
    assert [fleet.advance() for _ in range(3)] == [0, 1, 2]
    assert fleet.mode == "shared"

    def broken() -> int:
        raise SharedStateError("segment /x: injected failure")

    monkeypatch.setattr(fleet._shared, "advance", broken)
    value = fleet.advance()  # answered by the local twin, not raised
    assert isinstance(value, int)
    assert fleet.mode == "local"
    # The twin starts from the host table this process last saw: no gap, no seed fallback.
    assert fleet.nodes() == NODES
    st = fleet.stats()
    assert st.mode == "local" and st.mode_reason == "segment /x: injected failure"
    # the shared refresher is stopped (off the call's path) and gives up the leadership
    assert wait_until(lambda: not fleet._shared.is_leader, 20)
    (warning,) = _warnings(caplog)
    assert "injected failure" in warning and "fix:" in warning
    assert [fleet.advance() for _ in range(3)] == [value + 1, value + 2, value + 3]
    assert len(_warnings(caplog)) == 1


def test_a_raw_os_error_of_shared_memory_also_switches(
    fleets: Any, ns: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A syscall failure the segment code does not translate (ENOLCK from the lock) is still a
    shared-memory problem: local mode, not a failed call."""
    caplog.set_level(logging.INFO, logger="alternator_shm")

    def no_locks(self: Any, byte: int, *, exclusive: bool = True) -> bool:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(segment.LockFile, "try_lock", no_locks)
    fleet = fleets(ns, refresh=lambda: NODES, rejoin_interval=60)
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.advance() == 0
    st = fleet.stats()
    assert st.mode == "local" and os.strerror(errno.ENOLCK) in (st.mode_reason or "")
    (warning,) = _warnings(caplog)
    assert "fix:" in warning


def test_two_fleets_of_one_namespace_warn_once(
    fleets: Any, ns: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    shm_dir = str(tmp_path / "missing")
    for _ in range(2):
        fleet = fleets(ns, shm_dir=shm_dir, refresh=lambda: NODES, rejoin_interval=60)
        assert fleet.wait_for_nodes(10) == NODES
        assert fleet.mode == "local"
    assert len(_warnings(caplog)) == 1


def test_required_propagates(fleets: Any, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = fleets(ns, shared="required", refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES

    def broken() -> int:
        raise SharedStateError("injected")

    monkeypatch.setattr(fleet._shared, "advance", broken)
    with pytest.raises(SharedStateError):
        fleet.advance()
    assert fleet.mode == "shared"


def test_bad_mode_is_refused(ns: str) -> None:
    with pytest.raises(ValueError, match="shared must be"):
        FailSoftFleet(ns, shared="sometimes")


def test_off_creates_nothing(fleets: Any, ns: str, tmp_path: Any) -> None:
    fleet = fleets(ns, shared="off", shm_dir=str(tmp_path), refresh=lambda: NODES)
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.refresh_now() == NODES
    fleet.advance()
    fleet.report_failure(NODES[0])
    st = fleet.stats()
    assert st.per_node[NODES[0]].failures == 1
    assert st.mode == "local" and "off" in (st.mode_reason or "")
    fleet.close()
    assert os.listdir(tmp_path) == []


def test_rejoins_when_the_cause_goes_away(
    fleets: Any, ns: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")
    shm_dir = str(tmp_path / "shm")  # missing: every attach fails
    fleet = fleets(ns, shm_dir=shm_dir, refresh=lambda: NODES, rejoin_interval=0.05)
    fleet.start()
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.mode == "local" and "does not exist" in (fleet.stats().mode_reason or "")
    assert "mount a tmpfs" in _warnings(caplog)[0]
    assert fleet._standalone.is_leader
    os.mkdir(shm_dir)
    assert wait_until(lambda: fleet.mode == "shared", 20)
    assert wait_until(lambda: fleet.is_leader, 20)  # the shared refresher runs now ...
    assert not fleet._standalone.is_leader  # ... and the local one stopped
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.stats().mode == "shared" and fleet.stats().segment_name
    assert len(_warnings(caplog)) == 1


def test_switches_back_only_once_the_fresh_segment_has_a_table(
    fleets: Any, ns: str, tmp_path: Any
) -> None:
    def slow_refresh() -> tuple[str, ...]:
        time.sleep(0.3)
        return NODES

    shm_dir = str(tmp_path / "shm")
    fleet = fleets(ns, shm_dir=shm_dir, refresh=slow_refresh, rejoin_interval=0.05)
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.mode == "local"
    os.mkdir(shm_dir)
    assert wait_until(lambda: fleet.mode == "shared", 20, interval=0.001)
    assert fleet.nodes() == NODES  # never an empty table right after the switch


def test_rejoin_schedule_backs_off_to_the_cap(ns: str) -> None:
    fleet = FailSoftFleet(ns, shared="auto", rejoin_interval=1.0, rejoin_max=4.0)
    fleet._alone = fleet._standalone
    delays: list[float] = []
    outcomes = iter([False, False, False, False, True])

    class Stop:
        def wait(self, delay: float) -> bool:
            delays.append(delay)
            return False

    fleet._try_rejoin = lambda: next(outcomes)  # type: ignore[method-assign]
    fleet._rejoin_loop(Stop())  # type: ignore[arg-type]
    expected = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(delays) == len(expected)
    for got, want in zip(delays, expected, strict=True):
        assert want * 0.9 <= got <= want * 1.1


def _child_in_local_mode(fleet: FailSoftFleet) -> dict[str, Any]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger(LOGGER).addHandler(Keep(logging.INFO))
    fleet.start()
    nodes = fleet.wait_for_nodes(10)
    picks = [fleet.advance() for _ in range(4)]
    return {
        "nodes": nodes,
        "picks": picks,
        "mode": fleet.stats().mode,
        "warnings": sum(1 for r in records if r.levelno >= logging.WARNING),
        "leads": fleet._standalone.is_leader,
    }


def test_fork_child_retries_then_balances_alone_without_a_second_warning(
    fleets: Any, ns: str, tmp_path: Any
) -> None:
    fleet = fleets(ns, shm_dir=str(tmp_path / "missing"), refresh=lambda: NODES,
                   rejoin_interval=60)
    assert fleet.wait_for_nodes(10) == NODES
    assert fleet.mode == "local"
    got = Child(_child_in_local_mode, fleet).result(timeout=30)
    assert got["nodes"] == NODES and got["mode"] == "local"
    assert got["picks"] == sorted(got["picks"]) and len(set(got["picks"])) == 4
    assert got["warnings"] == 0  # the parent already said it
    assert got["leads"]  # the child runs its own refresher


# -- the local twin itself ------------------------------------------------------------------------


def test_twin_counter_is_exact_across_threads(ns: str) -> None:
    twin = StandaloneFleet(ns)
    seen: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        mine = [twin.advance() for _ in range(2000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == list(range(8000))


#: Short periods so the twin's probes run within a test.
FAST = HealthSettings(probe_period=0.05, probe_timeout=1.0)


def _states(twin: StandaloneFleet) -> dict[str, str]:
    return {n: st.state for n, st in twin.stats().per_node.items()}


def test_twin_runs_the_spec_health_machine(ns: str) -> None:
    """Issue 11: the twin used to quarantine a node on ONE failure until a probe or 2 s passed;
    it now runs the shared fleet's machine: admission, thresholds, DOWN, generations."""
    healthy = set(NODES)
    twin = StandaloneFleet(ns, refresh=lambda: NODES, probe=lambda n: n in healthy,
                           health=FAST, poll_interval=0.02)
    try:
        assert twin.wait_for_nodes(10) == NODES
        # The first table waited for its admission probes: every node ACTIVE.
        assert set(_states(twin).values()) == {"active"}
        twin.report_failure(NODES[1], 0)  # one failure sidelines nothing ...
        assert twin.quarantined() == {}
        healthy.discard(NODES[1])
        for _ in range(FAST.active_failure_threshold - 1):
            twin.report_failure(NODES[1], 0)
        # ... the 10th in a row takes it DOWN: out of routing, generation 1.
        assert twin.node_status(NODES[1]) == Status(State.DOWN, 10, 0, 1)
        assert twin.quarantined() == {NODES[1]: 1}
        assert twin.health_view_of(NODES)[NODES[1]] == (State.DOWN, 1)
        assert twin.report_success(NODES[1], 0) is None  # a late answer: stale, ignored
        time.sleep(0.3)  # its probes fail meanwhile: still DOWN
        assert twin.node_status(NODES[1]).state is State.DOWN
        healthy.add(NODES[1])
        assert wait_until(lambda: _states(twin)[NODES[1]] == "active", 10)
        st = twin.stats().per_node[NODES[1]]
        assert (st.generation, st.failures, st.consecutive_failures) == (1, 10, 0)
    finally:
        twin.close()


def test_twin_probes_again_after_close_and_start(ns: str) -> None:
    """A second local episode (close on rejoin, start on the next switch) still probes."""
    healthy = set(NODES)
    twin = StandaloneFleet(ns, refresh=lambda: NODES, probe=lambda n: n in healthy,
                           health=FAST, poll_interval=0.02)
    try:
        assert twin.wait_for_nodes(10) == NODES
        twin.close()
        healthy.discard(NODES[2])
        for _ in range(FAST.active_failure_threshold):
            twin.report_failure(NODES[2], 0)
        assert twin.node_status(NODES[2]).state is State.DOWN
        twin.start()
        healthy.add(NODES[2])
        assert wait_until(lambda: _states(twin)[NODES[2]] == "active", 10)
    finally:
        twin.close()


def test_twin_without_probe_promotes_by_traffic_only(ns: str) -> None:
    twin = StandaloneFleet(ns, refresh=lambda: NODES, health=FAST, poll_interval=0.02)
    try:
        assert twin.wait_for_nodes(10) == NODES
        assert set(_states(twin).values()) == {"quarantined"}  # admission, nobody to probe
        for _ in range(FAST.quarantine_promotion_threshold):
            twin.report_success(NODES[0], 0)
        assert twin.node_status(NODES[0]).state is State.ACTIVE
        assert set(twin.quarantined()) == set(NODES[1:])
    finally:
        twin.close()


def test_twin_health_off_keeps_every_node_active(ns: str) -> None:
    twin = StandaloneFleet(ns, refresh=lambda: NODES, probe=lambda n: False)
    assert twin.refresh_now() == NODES
    for _ in range(20):
        twin.report_failure(NODES[0])
    assert twin.quarantined() == {} and twin.health_view_of(NODES) == {}
    st = twin.stats()
    assert not st.node_health and st.per_node[NODES[0]].failures == 20


def test_twin_refresh_failures_keep_the_table_and_are_visible(ns: str) -> None:
    answers: list[Any] = [list(NODES)]

    def refresh() -> list[str]:
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    twin = StandaloneFleet(ns, refresh=refresh, poll_interval=0.02, refresh_interval=0.02,
                           backoff_initial=0.02, backoff_max=0.05)
    try:
        assert twin.wait_for_nodes(10) == NODES
        answers.append(OSError("node unreachable"))
        twin.advance()  # traffic: refresh_interval applies
        assert wait_until(lambda: twin.stats().consecutive_refresh_failures >= 2, 10)
        st = twin.stats()
        assert st.nodes == NODES and "node unreachable" in (st.last_refresh_error or "")
        with pytest.raises(OSError):
            twin.refresh_now()
        answers.append(["not a url with spaces"])
        with pytest.raises(ValueError):
            twin.refresh_now()
        answers.append(list(NODES[:2]))
        assert twin.refresh_now() == NODES[:2]
        st = twin.stats()
        assert st.nodes == NODES[:2] and st.generation == 2
        assert st.consecutive_refresh_failures == 0 and st.last_refresh_error is None
        assert st.mode == "local" and st.is_leader and st.leader_pid == os.getpid()
    finally:
        twin.close()


def test_twin_wait_returns_early_when_the_first_refresh_fails(ns: str) -> None:
    def refresh() -> list[str]:
        raise OSError("refused")

    twin = StandaloneFleet(ns, refresh=refresh, poll_interval=0.02)
    try:
        started = time.monotonic()
        assert twin.wait_for_nodes(30) == ()
        assert time.monotonic() - started < 25
    finally:
        twin.close()


def test_twin_keeps_health_of_nodes_that_leave_and_come_back(ns: str) -> None:
    """Spec: removed and rediscovered endpoints retain their history (as in the segment)."""
    current = [list(NODES)]
    twin = StandaloneFleet(ns, refresh=lambda: current[0], health=FAST)
    assert twin.refresh_now() == NODES
    for _ in range(FAST.quarantine_failure_threshold):
        twin.report_failure(NODES[3], 0)
    assert twin.node_status(NODES[3]).state is State.DOWN
    current[0] = list(NODES[:3])
    assert twin.refresh_now() == NODES[:3]
    current[0] = list(NODES)
    assert twin.refresh_now() == NODES
    assert twin.health_view_of(NODES)[NODES[3]] == (State.DOWN, 1)  # not a fresh admission
    assert twin.stats().per_node[NODES[3]].failures == 3


class _Noted(list[str]):
    """A refresh result with a note, as discovery returns (scope, or why it is empty)."""

    def __init__(self, nodes: tuple[str, ...], note: str) -> None:
        super().__init__(nodes)
        self.note = note


def test_twin_keeps_notes_and_empty_verdicts_like_the_shared_table(ns: str) -> None:
    answers = [_Noted(NODES, "scope datacenter 'dc1'")]
    twin = StandaloneFleet(ns, refresh=lambda: answers[-1])
    assert twin.refresh_now() == NODES
    assert twin.table_note() == "scope datacenter 'dc1'" and twin.empty_reason() is None
    answers.append(_Noted((), "no live node in datacenter 'dc1' (fallback=False)"))
    assert twin.refresh_now() == ()
    assert twin.empty_reason() == "no live node in datacenter 'dc1' (fallback=False)"
    started = time.monotonic()
    assert twin.wait_for_nodes(30) == ()  # a verdict is an answer: no waiting
    assert time.monotonic() - started < 25
    twin.close()
    answers.append(_Noted((), ""))
    with pytest.raises(ValueError):  # empty without a reason is not a table
        twin.refresh_now()
    fleet = FailSoftFleet(ns, shared="off", refresh=lambda: answers[1])
    assert fleet.refresh_now() == ()
    assert fleet.empty_reason() is not None and fleet.table_note().startswith("no live node")
