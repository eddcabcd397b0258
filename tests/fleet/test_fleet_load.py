"""fleet/load.py on a real segment, with a controlled clock: epochs, renewal, sweep, latency."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from alternator_shm.fleet import SharedFleet, cleanup, layout
from alternator_shm.fleet import load as _load

NODE = "http://127.0.0.1:8000"
EPOCH = int(_load.EPOCH_S * 1e9)


class Clock:
    def __init__(self) -> None:
        self.now = 1000 * EPOCH + 1

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def fleet(tmp_path: object) -> Iterator[SharedFleet]:
    ns = f"t-{uuid.uuid4().hex}"
    f = SharedFleet(ns)
    try:
        yield f
    finally:
        f.close()
        cleanup(ns)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_load.time, "monotonic_ns", c)
    return c


def test_layout_is_compact() -> None:
    # Two words per node (16 KiB for 1024 nodes); the whole segment stays within 256 KiB.
    assert layout.LOAD_SIZE == layout.HEALTH_CAPACITY * 16
    assert layout.LOAD_OFF + layout.LOAD_SIZE == layout.TOTAL_SIZE <= 256 * 1024


def test_counts_of_a_vanished_process_expire_after_two_epochs(
    fleet: SharedFleet, clock: Clock
) -> None:
    a = fleet.begin_attempt(NODE)
    b = fleet.begin_attempt(NODE)
    assert fleet.node_load(NODE)[0] == 2
    fleet.end_attempt(a, answered=True)
    assert fleet.node_load(NODE)[0] == 1
    # "Crash": b never ends and nobody renews it (as if its process had died).
    fleet._load_of(fleet.attachment)._outstanding.discard(b)
    clock.now += EPOCH
    assert fleet.node_load(NODE)[0] == 1  # the previous epoch still counts
    clock.now += EPOCH
    assert fleet.node_load(NODE)[0] == 0  # two epochs later: reclaimed
    # A late end of the expired attempt never drives a count below zero.
    fleet.end_attempt(b, answered=False)
    c = fleet.begin_attempt(NODE)
    assert fleet.node_load(NODE)[0] == 1
    fleet.end_attempt(c, answered=False)
    assert fleet.node_load(NODE)[0] == 0


def test_renewal_moves_live_attempts_into_the_current_epoch(
    fleet: SharedFleet, clock: Clock
) -> None:
    a = fleet.begin_attempt(NODE)
    load = fleet._load_of(fleet.attachment)
    for _ in range(5):
        clock.now += EPOCH
        _renew_once(load)  # what the renewer thread does every half epoch
        assert fleet.node_load(NODE)[0] == 1
    fleet.end_attempt(a, answered=True)
    assert fleet.node_load(NODE)[0] == 0


def _renew_once(load: _load.Load) -> None:
    epoch = _load._epoch(_load.time.monotonic_ns())
    with load._lock:
        for a in [a for a in load._outstanding if a.epoch < epoch]:
            if load._add(a.index, epoch, +1):
                load._add(a.index, a.epoch, -1)
                a.epoch = epoch


def test_sweep_clears_halves_with_old_tags(fleet: SharedFleet, clock: Clock) -> None:
    fleet.begin_attempt(NODE)  # leaked
    index = fleet.attachment.health.slot(NODE, create=False)
    assert index is not None
    word = layout.word_index(layout.load_offset(index) + layout.L_IN_FLIGHT)
    assert fleet.attachment.seg.words[word] != 0
    clock.now += 5 * EPOCH
    fleet.begin_attempt("http://127.0.0.2:8000")  # first attempt of a new epoch sweeps
    assert fleet.attachment.seg.words[word] == 0


def test_latency_is_smoothed_clipped_and_decays(fleet: SharedFleet, clock: Clock) -> None:
    assert fleet.node_load(NODE)[1] is None

    def answer(ns: int) -> None:
        a = fleet.begin_attempt(NODE)
        clock.now += ns
        fleet.end_attempt(a, answered=True)

    # Warm-up: a cold first answer (new connection) does not brand the node slow: the first
    # WARMUP samples keep their minimum, and routing treats the node as unknown until then.
    answer(200_000_000)
    load = fleet._load_of(fleet.attachment)
    index = fleet.attachment.health.slot(NODE, create=False)
    assert index is not None
    assert load.latency_ms(index, decay=False) == pytest.approx(200.0, rel=0.01)  # stats
    assert fleet.node_load(NODE)[1] is None  # routing: unknown, neutral
    for _ in range(_load.WARMUP - 1):
        answer(2_000_000)
    assert fleet.node_load(NODE)[1] == pytest.approx(2.0, rel=0.01)
    # One 500 ms hiccup moves the estimate by a clipped amount only.
    answer(500_000_000)
    ms = load.latency_ms(index, decay=False)
    assert ms is not None and ms < 6.0
    # A node that stays slow is recognised within a few answers.
    for _ in range(8):
        answer(60_000_000)
    ms = load.latency_ms(index, decay=False)
    assert ms is not None and ms > 40.0
    # Unanswered attempts add no sample; for routing the estimate halves every DECAY_S.
    routing_ms = fleet.node_load(NODE)[1]
    clock.now += int(2 * _load.DECAY_S * 1e9)
    later = fleet.node_load(NODE)[1]
    assert routing_ms is not None and later is not None
    assert later == pytest.approx(routing_ms / 4, rel=0.05)
    assert load.latency_ms(index, decay=False) == pytest.approx(ms)  # stats: no decay


def test_fork_child_does_not_renew_the_parents_attempts(fleet: SharedFleet) -> None:
    import os

    a = fleet.begin_attempt(NODE)
    load = fleet._load_of(fleet.attachment)
    assert load.outstanding() == 1
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0 if load.outstanding() == 0 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fleet.end_attempt(a, answered=False)
    assert load.outstanding() == 0


def test_local_load_twin_has_the_same_contract(clock: Clock) -> None:
    local = _load.LocalLoad()
    assert local.node_load(NODE) == (0, None)
    a = local.begin_attempt(NODE)
    b = local.begin_attempt(NODE)
    assert local.node_load(NODE)[0] == 2
    clock.now += 3_000_000
    local.end_attempt(a, answered=True)
    local.end_attempt(b, answered=False)
    assert local.node_load(NODE) == (0, None)  # warming up
    for _ in range(_load.WARMUP - 1):
        c = local.begin_attempt(NODE)
        clock.now += 3_000_000
        local.end_attempt(c, answered=True)
    flying, ms = local.node_load(NODE)
    assert flying == 0 and ms == pytest.approx(3.0, rel=0.01)
    assert local.node_loads((NODE,))[NODE] == _load.NodeLoad(0, pytest.approx(3.0, rel=0.01))
