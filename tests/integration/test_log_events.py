"""Log records carry stable structured fields: ``record.event`` and ``record.node``."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from test_helper_support import make_helper, module_cluster, wait_for

from alternator_shm.fleet import SharedFleet, cleanup
from alternator_shm.fleet.events import EVENTS

USERS = {"ev-key": "ev-secret"}


cluster = module_cluster(nodes=3, users=USERS, backend="null")


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any]]:
    return [(r.event, r.node) for r in caplog.records if hasattr(r, "event")]  # type: ignore[attr-defined]


def test_every_record_with_an_event_uses_a_documented_name_and_has_a_node_field(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="alternator_shm")
    bad = cluster.nodes[1]
    bad.inject_fault("reset", count=1)
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client()
        h.live_nodes()
        for _ in range(6):
            client.get_item(TableName="t", Key={"p": {"S": "k"}})
        assert wait_for(lambda: h.stats().leader_pid is not None, 10)
    events = _events(caplog)
    names = [e for e, _ in events]
    assert "leader_elected" in names and "table_published" in names
    assert ("node_failed", str(bad.url).rstrip("/")) in events
    assert all(name in EVENTS for name in names)
    for record in caplog.records:
        if hasattr(record, "event"):
            assert hasattr(record, "node")
            if record.event == "node_failed":  # type: ignore[attr-defined]
                assert record.error  # type: ignore[attr-defined]


def test_refresh_failure_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alternator_shm")

    def refresh() -> list[str]:
        raise OSError("no route to seed")

    ns = f"t-{uuid.uuid4().hex}"
    fleet = SharedFleet(ns, refresh=refresh, refresh_interval=0.05, poll_interval=0.05)
    try:
        fleet.start()
        assert wait_for(lambda: any(e == "refresh_failed" for e, _ in _events(caplog)), 30)
    finally:
        fleet.close()
        cleanup(ns)
    record = next(r for r in caplog.records if getattr(r, "event", None) == "refresh_failed")
    assert record.node is None  # type: ignore[attr-defined]
    assert record.failures >= 1 and "no route to seed" in record.error  # type: ignore[attr-defined]
