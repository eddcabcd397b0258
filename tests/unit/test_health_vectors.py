"""Replays the cross-language conformance vectors (tests/unit/vectors, from the public spec):

* every row of ``node-health-transitions.tsv`` through the pure machine AND through the shared
  entries (the status word a segment holds), with generations captured as routing does;
* every row of ``endpoint-order.tsv`` through the endpoint canonicalisation;
* ``defaults.tsv``'s HEALTH-REQ-001 rows against :class:`HealthSettings`' defaults.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from alternator_shm.endpoints import canonical_endpoint, canonical_order, representative_order
from alternator_shm.errors import ConfigurationError
from alternator_shm.fleet import layout
from alternator_shm.fleet.counter import LocalWords
from alternator_shm.fleet.health import (
    Health,
    HealthSettings,
    Observation,
    State,
    Status,
    initial_status,
    transition,
)

VECTORS = Path(__file__).resolve().parent / "vectors"


def _rows(name: str) -> list[list[str]]:
    with open(VECTORS / name, newline="") as f:
        return [r for r in csv.reader(f, delimiter="\t") if r and not r[0].startswith("#")]


HEALTH_ROWS = _rows("node-health-transitions.tsv")
ORDER_ROWS = _rows("endpoint-order.tsv")


def make_health(settings: HealthSettings | None) -> Health:
    words = memoryview(bytearray(layout.SLOTS_OFF)).cast("Q")
    return Health(words, LocalWords(words), settings)  # the local twin's own ops


def _settings(row: list[str]) -> HealthSettings:
    return HealthSettings(
        active_failure_threshold=int(row[2]),
        down_recovery_threshold=int(row[3]),
        quarantine_promotion_threshold=int(row[4]),
        quarantine_failure_threshold=int(row[5]),
    )


def test_every_transition_row_is_replayed() -> None:
    assert len(HEALTH_ROWS) == 16  # the file as published; a truncated copy must not pass


@pytest.mark.parametrize("row", HEALTH_ROWS, ids=[r[0] for r in HEALTH_ROWS])
def test_transition_vector_pure(row: list[str]) -> None:
    settings = _settings(row)
    st = initial_status(State[row[1]], settings)
    for name in row[6].split(","):
        new = transition(st, Observation(name), settings)
        st = st if new is None else new
    assert (st.state.name, st.failures, st.successes, st.generation) == (
        row[7], int(row[8]), int(row[9]), int(row[10])
    )


@pytest.mark.parametrize("row", HEALTH_ROWS, ids=[r[0] for r in HEALTH_ROWS])
def test_transition_vector_shared(row: list[str]) -> None:
    """The same rows through a shared entry: admission, CAS updates, captured generations."""
    settings = _settings(row)
    health = make_health(settings)
    node = "http://node1.example.com:8043"
    health.admit([node])
    assert health.status(node) == Status(State.QUARANTINED)  # admission quarantine
    if row[1] == "ACTIVE":
        health.observe(node, Observation.PROBE_SUCCESS)  # the direct validation of admission
    assert health.status(node) == initial_status(State[row[1]], settings)
    for name in row[6].split(","):
        obs = Observation(name)
        # Traffic reports the generation routing captured for the attempt: the current one.
        generation = health.view((node,))[node][1] if obs.is_traffic else None
        health.observe(node, obs, generation)
    st = health.status(node)
    assert (st.state.name, st.failures, st.successes, st.generation) == (
        row[7], int(row[8]), int(row[9]), int(row[10])
    )
    assert health.view((node,))[node] == (st.state, st.generation)


def test_stale_generation_is_rejected() -> None:
    settings = HealthSettings(active_failure_threshold=1, down_recovery_threshold=1)
    health = make_health(settings)
    node = "http://a:8000"
    health.admit([node])
    health.observe(node, Observation.PROBE_SUCCESS)
    gen0 = health.view((node,))[node][1]
    assert health.report_failure(node, gen0) == Status(State.DOWN, 1, 0, 1)
    health.observe(node, Observation.PROBE_SUCCESS)  # recovery quarantine
    health.observe(node, Observation.PROBE_SUCCESS)  # validated: ACTIVE, generation 1
    assert health.status(node) == Status(State.ACTIVE, 0, 10, 1)
    # A late failure from an attempt routed in generation 0 cannot take it down again ...
    assert health.report_failure(node, gen0) is None
    assert health.status(node) == Status(State.ACTIVE, 0, 10, 1)
    # ... nor can a late success change its counters.
    health.report_failure(node, 1)  # threshold 1: down again, generation 2
    assert health.report_success(node, 1) is None
    assert health.status(node).state is State.DOWN


def test_health_off_is_all_active_and_reports_change_nothing() -> None:
    health = make_health(None)
    node = "http://a:8000"
    health.admit([node])
    assert health.view((node,)) == {}
    for _ in range(20):
        assert health.report_failure(node) is None
    assert health.status(node).state is State.ACTIVE


def test_history_is_kept_for_departed_nodes() -> None:
    settings = HealthSettings(active_failure_threshold=1)
    health = make_health(settings)
    a, b = "http://a:8000", "http://b:8000"
    health.admit([a, b])
    health.observe(a, Observation.PROBE_SUCCESS)
    health.report_failure(a, 0)
    assert health.collect((b,)) == 0  # a left the table; its DOWN history stays
    health.admit([a, b])  # ... and is revealed when it comes back
    assert health.status(a).state is State.DOWN


def test_explicit_and_default_port_share_one_record() -> None:
    health = make_health(HealthSettings())
    health.admit(["http://a:80"])
    health.observe("http://A", Observation.PROBE_SUCCESS)
    assert health.status("http://a:80").state is State.ACTIVE


# -- defaults ------------------------------------------------------------------------

_DEFAULT_FIELDS = {
    "active_failure_threshold": ("active_failure_threshold", 1),
    "down_recovery_threshold": ("down_recovery_threshold", 1),
    "quarantine_promotion_threshold": ("quarantine_promotion_threshold", 1),
    "quarantine_failure_threshold": ("quarantine_failure_threshold", 1),
    "background_probe_period_ms": ("probe_period", 1000),
    "probe_concurrency": ("probe_concurrency", 1),
    "probe_timeout_ms": ("probe_timeout", 1000),
}


def test_defaults_match_defaults_tsv() -> None:
    rows = [r for r in _rows("defaults.tsv") if r[0] == "HEALTH-REQ-001"]
    defaults = HealthSettings()
    checked = 0
    for _req, setting, value in rows:
        if setting == "health_disabled":
            # node_health=True is the Helper's default (see test_node_health_option).
            assert value == "false"
            continue
        field, scale = _DEFAULT_FIELDS[setting]
        assert getattr(defaults, field) * scale == int(value), setting
        checked += 1
    assert checked == len(_DEFAULT_FIELDS)


def test_settings_are_normalised_and_validated() -> None:
    s = HealthSettings(active_failure_threshold=0, down_recovery_threshold=-5)
    assert (s.active_failure_threshold, s.down_recovery_threshold) == (1, 1)
    for bad in (
        {"probe_period": 0},
        {"probe_timeout": -1},
        {"probe_concurrency": 0},
        {"probe_concurrency": 65},
        {"active_failure_threshold": 1.5},
        {"active_failure_threshold": True},
        {"quarantine_failure_threshold": 70000},
    ):
        with pytest.raises(ConfigurationError):
            HealthSettings(**bad)  # type: ignore[arg-type]


# -- endpoint order ------------------------------------------------------------------------


def test_every_order_row_is_replayed() -> None:
    assert len(ORDER_ROWS) == 7


@pytest.mark.parametrize("row", ORDER_ROWS, ids=[r[0] for r in ORDER_ROWS])
def test_endpoint_order_vector(row: list[str]) -> None:
    endpoints = row[1].split(",")
    assert canonical_order(endpoints) == row[2].split(",")
    assert representative_order(endpoints) == row[3].split(",")


@pytest.mark.parametrize("bad", ["", "a.example", "//a", "http://", "http://a:99999"])
def test_not_an_endpoint(bad: str) -> None:
    with pytest.raises(ValueError):
        canonical_endpoint(bad)


def test_traffic_success_suppresses_one_quarantine_probe() -> None:
    health = make_health(HealthSettings())
    node = "http://a:8000"
    health.admit([node])
    period = 1_000
    assert health.probe_due([node], 10, period) == [(node, State.QUARANTINED)]  # admission
    health.mark_probed(node, 10)
    health.report_success(node, 0)  # a call reached it: one probe fewer
    assert health.status(node) == Status(State.QUARANTINED, 0, 1, 0, suppressed=True)
    assert health.probe_due([node], 10 + period, period) == []  # suppressed once ...
    assert not health.status(node).suppressed
    assert health.probe_due([node], 10 + 2 * period, period) == [(node, State.QUARANTINED)]
    # A traffic failure clears a pending suppression.
    health.report_success(node, 0)
    health.report_failure(node, 0)
    assert health.status(node) == Status(State.QUARANTINED, 1, 0, 0)
    assert health.probe_due([node], 10 + 3 * period, period) == [(node, State.QUARANTINED)]


# -- one canonical endpoint for health, routing and affinity (endpoints.py) -----------------------


def test_affinity_uses_the_one_canonical_endpoint() -> None:
    from alternator_shm import affinity
    from alternator_shm.affinity import _plan

    assert affinity.canonical_endpoint is _plan.canonical_endpoint is canonical_endpoint


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("http://a:80", "http://a"),
        ("HTTP://A:80", "http://a"),
        ("http://a:080", "http://a"),  # the port's value counts, not its spelling
        ("https://B:443/x", "https://b"),
        ("https://b:80", "https://b:80"),  # 80 is the default of http only
        ("http://b:443", "http://b:443"),
        ("http://user:pw@Host.Example:8000/p?q#f", "http://host.example:8000"),
        ("http://[2001:DB8::1]:80", "http://[2001:db8::1]"),
        ("http://[2001:db8::1]:8043", "http://[2001:db8::1]:8043"),
        ("  http://A:80\n", "http://a"),  # surrounding white space, as URL parsers drop it
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
)
def test_canonical_default_port_and_case(given: str, canonical: str) -> None:
    assert canonical_endpoint(given) == canonical
    # Whatever the path (plain spelling or urlsplit), the same identity.
    assert canonical_endpoint(given.strip().upper().replace("HTTP", "http", 1)) == canonical


@pytest.mark.parametrize(
    "bad", ["http://bücher.example", "http://BÜCHER.example:80", "http://a b:80", "http://a\x7fb"]
)
def test_host_must_be_printable_ascii(bad: str) -> None:
    # The spec folds ASCII case only and sorts ASCII bytes: an internationalized name is given
    # in its IDNA form. Before, "BÜCHER" was Unicode-folded, canonical_order raised
    # UnicodeEncodeError and the affinity ring sorted it by UTF-8 instead.
    with pytest.raises(ValueError, match="ASCII"):
        canonical_endpoint(bad)
    with pytest.raises(ValueError):
        canonical_order([bad, "http://a"])


def test_ring_and_canonical_order_agree() -> None:
    from alternator_shm.affinity import Ring

    given = ["HTTP://B:80", "http://a:8080", "http://bücher.example", "http://[::1]", "http://b"]
    ring = Ring(given)
    valid = [g for g in given if g.isascii()]
    assert list(ring.keys) == canonical_order(valid)
    assert list(ring.nodes) == representative_order(valid)
