"""Issue 8 item 10: a failure recorded while another process claims the node's health entry
must not be lost. Written so that it also runs on the code before node health (where it
failed: the claimer zeroed the entry's fields with plain stores after its claim)."""

from __future__ import annotations

import copy
from typing import Any

from _fleet_procs import NODES

from alternator_shm.fleet import health, layout


class _InjectAfterClaim:
    """Wraps a fleet's atomic ops: right after a health key is claimed (CAS from 0), another
    process-like party records one traffic failure for the node -- the window between the claim
    and whatever the claimer does next (issue 8 item 10)."""

    def __init__(self, ops: Any, inject: Any) -> None:
        self._ops = ops
        self._inject = inject
        self.name = ops.name

    def fetch_add(self, offset: int, delta: int = 1) -> int:
        return int(self._ops.fetch_add(offset, delta))

    def advance(self) -> int:
        return int(self._ops.advance())

    def compare_exchange(self, offset: int, expected: int, desired: int) -> bool:
        ok = bool(self._ops.compare_exchange(offset, expected, desired))
        is_key = offset >= layout.HEALTH_OFF and (offset - layout.HEALTH_OFF) % (
            layout.HEALTH_ENTRY
        ) == layout.H_KEY
        if ok and is_key and expected == 0 and self._inject is not None:
            inject, self._inject = self._inject, None
            inject()
        return ok


def test_failure_recorded_while_a_slot_is_claimed_is_kept(make_fleet) -> None:
    """Failed before the fix: the claimer zeroed the entry's fields with plain stores after
    its claim, erasing a failure recorded in between (failures read 0)."""
    settings = getattr(health, "HealthSettings", None)
    fleet = make_fleet(health=settings()) if settings is not None else make_fleet()
    claimer = fleet.attachment.health
    other = copy.copy(claimer)  # a second process's view of the same entries
    other._slots = {}
    node = NODES[1]
    claimer._ops = _InjectAfterClaim(claimer._ops, lambda: other.report_failure(node))
    assert claimer.slot(node, create=True) is not None
    counters = health.node_counters(fleet.attachment.seg.words, (node,))[node]
    assert counters.failures == 1
    if hasattr(counters, "consecutive_failures"):
        assert counters.consecutive_failures == 1  # the health streak kept it too
