"""Prometheus metrics and OpenTelemetry span attributes, read from the host's shared state.

**Prometheus.** :class:`AlternatorCollector` is a custom prometheus_client collector that reads
every namespace's segment of this user in ``/dev/shm`` at scrape time. Because the segment
already aggregates every attempt of every process on the host, the collector gives host-wide
figures from whichever process serves ``/metrics``; that is also why it works under
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), where per-process custom
collectors cannot be merged: register it next to the ``MultiProcessCollector``.

Metric names and labels are part of the public API (the README's metrics table):

==========================================================  =======  =========================
name                                                        type     labels
==========================================================  =======  =========================
``alternator_shm_node_picks_total``                          counter  namespace, node
``alternator_shm_node_failures_total``                       counter  namespace, node
``alternator_shm_node_state``                                gauge    namespace, node, state
``alternator_shm_node_in_flight``                            gauge    namespace, node
``alternator_shm_node_latency_seconds``                      gauge    namespace, node
``alternator_shm_leader_pid``                                gauge    namespace
``alternator_shm_table_generation``                          gauge    namespace
``alternator_shm_refresh_age_seconds``                       gauge    namespace
``alternator_shm_refresh_failures_total``                    counter  namespace
==========================================================  =======  =========================

``node_state`` has one sample per state (``active``, ``quarantined``, ``down``), 1 for the
node's current state and 0 for the others, the usual encoding of an enum. A namespace without a
leader has no ``leader_pid`` sample; one that never refreshed has no ``refresh_age_seconds``.

**OpenTelemetry.** :func:`annotate_attempt` is called by the routing hooks on every attempt.
With ``opentelemetry-instrumentation-botocore`` (or its aiobotocore twin) active, the current
span is the call's span, and it gets the node actually used: ``server.address`` and
``server.port`` (the standard attributes, which the instrumentation first sets from the
client's placeholder endpoint), plus ``alternator_shm.attempt_count`` and
``alternator_shm.nodes_tried``. Without OpenTelemetry installed, it does nothing.

Installed with the extra ``alternator-shm[metrics]`` (prometheus_client).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from alternator_shm.fleet import FleetStats, list_fleets
from alternator_shm.fleet import segment as _segment

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["STATES", "AlternatorCollector", "annotate_attempt", "exposition"]

#: Node states as NodeStats.state reports them (API.md).
STATES = ("active", "quarantined", "down")


def _state(node: Any) -> str:
    state = getattr(node, "state", None)
    if isinstance(state, str):
        return state
    return "quarantined" if node.quarantined else "active"


class AlternatorCollector:
    """A prometheus_client collector of every alternator-shm namespace of this user.

    Args:
        shm_dir: where the segments live (``/dev/shm``; tests use their own directory).
        fleets: a callable returning the :class:`~alternator_shm.FleetStats` to expose,
            instead of reading ``shm_dir`` (for embedding; rarely needed).

    Register it once per process that serves ``/metrics``::

        from prometheus_client import REGISTRY
        REGISTRY.register(AlternatorCollector())
    """

    def __init__(
        self,
        shm_dir: str = _segment.DEFAULT_SHM_DIR,
        *,
        fleets: Callable[[], Iterable[FleetStats]] | None = None,
    ) -> None:
        self._fleets = fleets if fleets is not None else (lambda: list_fleets(shm_dir))

    def describe(self) -> list[Metric]:
        # Declaring nothing keeps registration free of a /dev/shm scan (no describe-time
        # collect), while the names stay fixed by the API.
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        picks = CounterMetricFamily(
            "alternator_shm_node_picks",
            "Request attempts routed to the node by every process of the host.",
            labels=("namespace", "node"),
        )
        failures = CounterMetricFamily(
            "alternator_shm_node_failures",
            "Connection-level failures of attempts to the node, host-wide.",
            labels=("namespace", "node"),
        )
        state = GaugeMetricFamily(
            "alternator_shm_node_state",
            "1 for the node's current health state (active, quarantined, down), else 0.",
            labels=("namespace", "node", "state"),
        )
        in_flight = GaugeMetricFamily(
            "alternator_shm_node_in_flight",
            "Attempts now outstanding on the node, host-wide.",
            labels=("namespace", "node"),
        )
        latency = GaugeMetricFamily(
            "alternator_shm_node_latency_seconds",
            "Recent mean attempt latency of the node, host-wide (absent before an answer).",
            labels=("namespace", "node"),
        )
        leader = GaugeMetricFamily(
            "alternator_shm_leader_pid",
            "Pid of the process refreshing the node table (absent: no leader).",
            labels=("namespace",),
        )
        generation = GaugeMetricFamily(
            "alternator_shm_table_generation",
            "Version of the published node table.",
            labels=("namespace",),
        )
        age = GaugeMetricFamily(
            "alternator_shm_refresh_age_seconds",
            "Seconds since the node table was last refreshed successfully.",
            labels=("namespace",),
        )
        refresh_failures = CounterMetricFamily(
            "alternator_shm_refresh_failures",
            "Failed /localnodes refresh attempts.",
            labels=("namespace",),
        )
        for fleet in self._fleets():
            if fleet.problem is not None:
                continue  # an unreadable segment (``status`` shows why) has no figures
            ns = fleet.namespace
            for node, ns_stats in fleet.per_node.items():
                picks.add_metric((ns, node), float(ns_stats.picks))
                failures.add_metric((ns, node), float(ns_stats.failures))
                current = _state(ns_stats)
                for name in STATES:
                    state.add_metric((ns, node, name), 1.0 if name == current else 0.0)
                flying = getattr(ns_stats, "in_flight", None)
                if flying is not None:
                    in_flight.add_metric((ns, node), float(flying))
                latency_ms = getattr(ns_stats, "latency_ms", None)
                if latency_ms is not None:
                    latency.add_metric((ns, node), latency_ms / 1000.0)
            if fleet.leader_pid is not None:
                leader.add_metric((ns,), float(fleet.leader_pid))
            generation.add_metric((ns,), float(fleet.generation))
            if fleet.last_refresh_age_s is not None:
                age.add_metric((ns,), fleet.last_refresh_age_s)
            refresh_failures.add_metric(
                (ns,), float(max(0, fleet.refresh_attempts - fleet.refreshes))
            )
        yield from (
            picks, failures, state, in_flight, latency, leader, generation, age, refresh_failures
        )


def exposition(fleets: Iterable[FleetStats]) -> str:
    """The Prometheus text exposition format of ``fleets`` (``status --format prometheus``).

    Raises:
        ImportError: prometheus_client is not installed (extra ``alternator-shm[metrics]``).
    """
    from prometheus_client import CollectorRegistry, generate_latest

    frozen = list(fleets)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AlternatorCollector(fleets=lambda: frozen))
    return generate_latest(registry).decode("utf-8")


# -- OpenTelemetry ---------------------------------------------------------------------------

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - OpenTelemetry is optional
    _trace = None  # type: ignore[assignment]


def annotate_attempt(node: str, tried: Sequence[str]) -> None:
    """Record the node of this attempt on the current span (no-op without OpenTelemetry).

    ``tried`` is every node of the call so far, this attempt's included.
    """
    if _trace is None:
        return
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    parts = urlsplit(node)
    if parts.hostname is not None:
        span.set_attribute("server.address", parts.hostname)
    if parts.port is not None:
        span.set_attribute("server.port", parts.port)
    span.set_attribute("alternator_shm.attempt_count", len(tried))
    span.set_attribute("alternator_shm.nodes_tried", list(tried))
