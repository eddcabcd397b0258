"""Probe timing of a recovery sequence (ours; the transitions stay the spec's).

Before: every probe of a DOWN or quarantined node waited a whole ``probe_period``, so a node
restarted after a DOWN needed ``down_recovery_threshold`` periods to reach recovery quarantine
and one more for its validation probe (~4 periods). Now the probes that follow a DOWN node's
first successful probe are ``recovery_probe_interval`` apart; any failure ends the sequence.
"""

from __future__ import annotations

import dataclasses

import pytest
from test_health_vectors import make_health

from alternator_shm.errors import ConfigurationError
from alternator_shm.fleet.health import (
    Health,
    HealthSettings,
    Observation,
    State,
    Status,
    in_recovery,
    probe_interval,
)

S = 1_000_000_000  # ns per second
PERIOD = 10 * S
NODE = "http://a:8000"


def test_default_spacing_is_a_short_share_of_the_period() -> None:
    assert HealthSettings().recovery_spacing == 1.0  # default 30 s period: capped at 1 s
    assert HealthSettings(probe_period=2.0).recovery_spacing == pytest.approx(0.2)
    # the default is derived, not baked in: replace() derives it again
    assert dataclasses.replace(HealthSettings(), probe_period=2.0).recovery_spacing == \
        pytest.approx(0.2)
    dataclasses.replace(HealthSettings(), probe_period=0.5)  # no "at most probe_period" error
    assert HealthSettings(probe_period=2.0, recovery_probe_interval=0.5).recovery_spacing == 0.5
    # The resolved value is what the namespace identity sees: None and the default are equal.
    from alternator_shm._options import _health_text

    assert _health_text(HealthSettings(recovery_probe_interval=1.0)) == \
        _health_text(HealthSettings())


@pytest.mark.parametrize("bad", [0, -1, "1", True, 31.0])
def test_spacing_is_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="recovery_probe_interval"):
        HealthSettings(recovery_probe_interval=bad)  # type: ignore[arg-type]


def test_interval_rule() -> None:
    t = HealthSettings(probe_period=10.0, recovery_probe_interval=0.5)
    assert probe_interval(Status(State.DOWN, 10, 0, 1), t) == 10.0  # no success yet
    assert probe_interval(Status(State.DOWN, 10, 1, 1), t) == 0.5  # sequence under way
    assert probe_interval(Status(State.QUARANTINED, 0, 0, 1, recovering=True), t) == 0.5
    assert probe_interval(Status(State.QUARANTINED, 0, 0, 0), t) == 10.0  # admission
    assert not in_recovery(Status(State.ACTIVE, 0, 10, 1))


def _down(settings: HealthSettings) -> Health:
    health = make_health(settings)
    health.admit([NODE])
    health.observe(NODE, Observation.PROBE_SUCCESS)
    for _ in range(settings.active_failure_threshold):
        health.report_failure(NODE, 0)
    assert health.status(NODE) == Status(State.DOWN, 10, 0, 1)
    return health


def _probe(health: Health, now: int, ok: bool) -> None:
    assert health.probe_due([NODE], now, PERIOD) != [], f"not due at {now / S}s"
    health.mark_probed(NODE, now)
    health.observe(NODE, Observation.PROBE_SUCCESS if ok else Observation.PROBE_FAILURE)


def test_recovery_sequence_is_paced_short_with_the_spec_transitions() -> None:
    settings = HealthSettings(probe_period=10.0, recovery_probe_interval=0.5)
    h = _down(settings)
    t = 100 * S
    _probe(h, t, ok=False)  # still dead: the next probe waits a whole period
    assert h.probe_due([NODE], t + PERIOD - 1, PERIOD) == []
    t += PERIOD
    _probe(h, t, ok=True)  # it serves again: 1 of 3 recovery probes
    assert h.status(NODE) == Status(State.DOWN, 10, 1, 1)
    assert h.probe_due([NODE], t + S // 2 - 1, PERIOD) == []
    t += S // 2
    _probe(h, t, ok=True)
    t += S // 2
    _probe(h, t, ok=True)  # 3 of 3: recovery quarantine, validation due after the spacing
    assert h.status(NODE) == Status(State.QUARANTINED, 0, 0, 1, recovering=True)
    assert h.probe_due([NODE], t + S // 2, PERIOD) == [(NODE, State.QUARANTINED)]
    t += S // 2
    _probe(h, t, ok=True)  # the direct validation probe
    assert h.status(NODE) == Status(State.ACTIVE, 0, 10, 1)
    # ACTIVE 1.5 s after the first successful probe; every probe waited a period before.
    assert t - (100 * S + PERIOD) == 3 * S // 2


def test_a_failed_probe_ends_the_sequence() -> None:
    settings = HealthSettings(probe_period=10.0, recovery_probe_interval=0.5)
    h = _down(settings)
    t = 100 * S
    _probe(h, t, ok=True)
    t += S // 2
    _probe(h, t, ok=False)  # flapping: successes reset (spec), next probe a period later
    assert h.status(NODE) == Status(State.DOWN, 10, 0, 1)
    assert h.probe_due([NODE], t + PERIOD - 1, PERIOD) == []
    for _ in range(3):
        t += PERIOD if h.status(NODE).successes == 0 else S // 2
        _probe(h, t, ok=True)
    assert h.status(NODE).recovering
    t += S // 2
    _probe(h, t, ok=False)  # the validation fails: still quarantined (spec), paced a period
    assert h.status(NODE) == Status(State.QUARANTINED, 0, 0, 1)
    assert h.probe_due([NODE], t + PERIOD - 1, PERIOD) == []
    assert h.probe_due([NODE], t + PERIOD, PERIOD) == [(NODE, State.QUARANTINED)]


def test_traffic_failure_in_recovery_quarantine_ends_the_sequence() -> None:
    settings = HealthSettings(probe_period=10.0, recovery_probe_interval=0.5,
                              down_recovery_threshold=1)
    h = _down(settings)
    _probe(h, 100 * S, ok=True)
    assert h.status(NODE).recovering
    h.report_failure(NODE, 1)
    st = h.status(NODE)
    assert (st.state, st.failures, st.recovering) == (State.QUARANTINED, 1, False)
