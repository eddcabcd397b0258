"""Prometheus collector and OpenTelemetry node attributes, on the emulator with SigV4 enforced.

The collector output is parsed with prometheus_client's own parser; spans come from the
OpenTelemetry SDK's in-memory exporter with the real botocore / aiobotocore instrumentation.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from test_helper_support import all_api_entries, create_table, make_helper, module_cluster

from alternator_shm.emulator import Cluster
from alternator_shm.metrics import AlternatorCollector, exposition

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

USERS = {f"user{secrets.token_hex(4)}": secrets.token_hex(16)}


cluster = module_cluster(nodes=3, users=USERS, backend="moto")
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture(scope="module")
def table(cluster: Any) -> str:
    return create_table(cluster, "m")


def _samples(text: str, namespace: str) -> dict[str, list[Any]]:
    """Samples of our namespace, by sample name."""
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("namespace") == namespace:
                out.setdefault(sample.name, []).append(sample)
    return out


def test_collector_reports_host_wide_figures(cluster: Any, table: str) -> None:
    with make_helper(cluster) as h:
        ddb = h.new_dynamodb_client()
        for i in range(30):
            ddb.get_item(TableName=table, Key={"p": {"S": f"k{i}"}})
        registry = prometheus_client.CollectorRegistry()
        registry.register(AlternatorCollector())
        text = prometheus_client.generate_latest(registry).decode()
        stats = h.stats()
        samples = _samples(text, h.namespace)
        picks = {s.labels["node"]: s.value for s in samples["alternator_shm_node_picks_total"]}
        assert picks == {n: float(ns.picks) for n, ns in stats.per_node.items()}
        assert sum(picks.values()) == float(stats.picks) >= 30
        assert set(picks) == set(h.live_nodes())
        failures = samples["alternator_shm_node_failures_total"]
        assert {s.value for s in failures} == {0.0}
        states = samples["alternator_shm_node_state"]
        assert len(states) == 3 * len(picks)  # one sample per state per node
        current = {s.labels["node"]: s.labels["state"] for s in states if s.value == 1.0}
        assert current == {n: "active" for n in picks}
        (leader,) = samples["alternator_shm_leader_pid"]
        assert leader.value == float(os.getpid())  # this process refreshes
        (generation,) = samples["alternator_shm_table_generation"]
        assert generation.value == float(stats.generation) >= 1
        (age,) = samples["alternator_shm_refresh_age_seconds"]
        assert 0.0 <= age.value < 60.0
        (refresh_failures,) = samples["alternator_shm_refresh_failures_total"]
        assert refresh_failures.value == 0.0
        # Host-wide load (fleet/load.py): nothing in flight now, a latency per answered node.
        flying = samples["alternator_shm_node_in_flight"]
        assert {s.labels["node"] for s in flying} == set(picks)
        assert {s.value for s in flying} == {0.0}
        latency = {
            s.labels["node"]: s.value for s in samples["alternator_shm_node_latency_seconds"]
        }
        assert set(latency) == set(picks) and all(0.0 < v < 60.0 for v in latency.values())
        # The CLI's text rendering is the same collector.
        assert _samples(exposition([stats]), h.namespace).keys() == samples.keys()


def test_collector_counts_failures_and_quarantine(cluster: Any, table: str) -> None:
    with Cluster(nodes=2, users=USERS, backend="null") as small, make_helper(small) as h:
        h.live_nodes()
        small.nodes[0].kill()
        ddb = h.new_dynamodb_client()
        for i in range(4):
            ddb.get_item(TableName=table, Key={"p": {"S": f"k{i}"}})
        dead = small.nodes[0].url.rstrip("/")
        text = exposition([h.stats()])
        samples = _samples(text, h.namespace)
        failures = {
            s.labels["node"]: s.value for s in samples["alternator_shm_node_failures_total"]
        }
        if dead in failures:  # discovery may already have dropped the dead node
            assert failures[dead] >= 1.0
            state = {
                s.labels["state"]
                for s in samples["alternator_shm_node_state"]
                if s.labels["node"] == dead and s.value == 1.0
            }
            assert state != {"active"}


# -- OpenTelemetry ----------------------------------------------------------------------------

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")


@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _check_span(span: Any, cluster: Any, retries: int) -> None:
    attributes = dict(span.attributes)
    tried = list(attributes["alternator_shm.nodes_tried"])
    assert attributes["alternator_shm.attempt_count"] == retries + 1 == len(tried)
    assert len(set(tried)) == len(tried)
    # The node that answered last is the span's server, not the client's placeholder.
    node, entry = all_api_entries(cluster, "GetItem")[-1]
    assert entry.status == 200
    assert attributes["server.address"] == node.ip
    assert attributes["server.port"] == cluster.port
    assert tried[-1] == node.url.rstrip("/")


def test_botocore_span_carries_the_node_used(cluster: Any, table: str, spans: Any) -> None:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    provider, exporter = spans
    cluster.nodes[0].inject_fault("internal_error")
    cluster.nodes[1].inject_fault("internal_error")
    instrumentor = BotocoreInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with make_helper(cluster) as h:
            h.live_nodes()
            answer = h.new_dynamodb_client().get_item(TableName=table, Key={"p": {"S": "o"}})
    finally:
        instrumentor.uninstrument()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "DynamoDB.GetItem"]
    _check_span(span, cluster, answer["ResponseMetadata"]["RetryAttempts"])


def test_aiobotocore_span_carries_the_node_used(cluster: Any, table: str, spans: Any) -> None:
    pytest.importorskip("aiobotocore")
    from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor

    provider, exporter = spans
    cluster.nodes[0].inject_fault("internal_error")
    cluster.nodes[1].inject_fault("internal_error")
    instrumentor = AiobotocoreInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with make_helper(cluster) as h:
            h.live_nodes()

            async def main() -> Any:
                async with h.new_async_dynamodb_client() as ddb:
                    return await ddb.get_item(TableName=table, Key={"p": {"S": "o"}})

            answer = asyncio.run(main())
    finally:
        instrumentor.uninstrument()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "DynamoDB.GetItem"]
    _check_span(span, cluster, answer["ResponseMetadata"]["RetryAttempts"])
