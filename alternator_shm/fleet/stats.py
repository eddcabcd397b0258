"""Snapshots of a segment for ``status``, ``Helper.stats()`` and tests.

Built from the segment alone (plus F_GETLK on the lock file), so ``alternator-shm status`` can
describe namespaces that no process of its own has attached, without creating anything.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass, field

from alternator_shm.fleet import health, layout, load, segment, table
from alternator_shm.fleet.refresher import read_error

__all__ = ["FleetStats", "NodeStats", "snapshot"]

_W = layout.word_index


@dataclass(frozen=True)
class NodeStats:
    """Shared counters of one node of the table."""

    picks: int
    failures: int
    quarantined: bool
    quarantined_since_ns: int = 0  # monotonic ns of the failure that quarantined it, 0 if not
    #: attempts now outstanding on the node, host-wide (fleet/load.py)
    in_flight: int = 0
    #: recent mean attempt latency, host-wide, in ms (smoothed); None before the first answer
    latency_ms: float | None = None


@dataclass(frozen=True)
class FleetStats:
    """One namespace's shared state at one instant."""

    namespace: str
    segment_name: str
    leader_pid: int | None
    generation: int
    nodes: tuple[str, ...]
    picks: int  # the shared round-robin counter
    per_node: dict[str, NodeStats] = field(default_factory=dict)
    last_refresh_age_s: float | None = None
    consecutive_refresh_failures: int = 0
    refreshes: int = 0
    counter_backend: str = ""
    refresh_attempts: int = 0
    last_refresh_error: str | None = None
    leader_heartbeat_age_s: float | None = None
    leader_since_age_s: float | None = None
    is_leader: bool = False  # this process leads
    health_slots_used: int = 0
    health_capacity: int = layout.HEALTH_CAPACITY
    health_overflow: int = 0
    segment_size: int = layout.TOTAL_SIZE
    shm_dir: str = segment.DEFAULT_SHM_DIR


def _age(now: int, stamp: int) -> float | None:
    return None if stamp == 0 else max(0.0, (now - stamp) / 1e9)


def _leader_pid(shm_dir: str, base: str, words: memoryview, self_leads: bool) -> int | None:
    """The leader by F_GETLK (authoritative: the kernel holds the lock for a live process).

    F_GETLK reports 0 for a holder in another pid namespace; then the header's pid is the best
    we have. The header alone is never trusted: a dead leader's pid may have been reused.
    """
    if self_leads:
        return os.getpid()
    holder = segment.leader_pid_from_lock(shm_dir, base)
    if holder is None:
        return None
    if holder == 0:
        header_pid = int(words[_W(layout.LEADER_PID_OFF)])
        return header_pid or None
    return holder


def snapshot(
    *,
    namespace: str | None,
    base: str,
    shm_dir: str,
    mm: mmap.mmap,
    words: memoryview,
    self_leads: bool = False,
) -> FleetStats:
    """Read everything ``status`` shows from a (possibly read-only) mapping."""
    now = time.monotonic_ns()
    read = table.read_published(mm, words)
    w, nodes = read if read is not None else (int(words[_W(layout.PUBLISH_OFF)]), ())
    counters = health.node_counters(words, nodes)
    loads = load.node_loads(words, nodes)
    per_node = {
        n: NodeStats(
            c.picks,
            c.failures,
            c.quarantined_since_ns != 0,
            c.quarantined_since_ns,
            in_flight=loads[n].in_flight,
            latency_ms=loads[n].latency_ms,
        )
        for n, c in counters.items()
    }
    backend = layout.BACKEND_NAMES.get(segment.backend_code(words), "unknown")
    return FleetStats(
        namespace=namespace if namespace is not None else segment.read_namespace(mm, words),
        segment_name="/" + base,
        leader_pid=_leader_pid(shm_dir, base, words, self_leads),
        generation=w >> 1,
        nodes=nodes,
        picks=int(words[_W(layout.COUNTER_OFF)]),
        per_node=per_node,
        last_refresh_age_s=_age(now, int(words[_W(layout.LAST_SUCCESS_OFF)])),
        consecutive_refresh_failures=int(words[_W(layout.FAILURES_OFF)]),
        refreshes=int(words[_W(layout.REFRESHES_OFF)]),
        counter_backend=backend,
        refresh_attempts=int(words[_W(layout.ATTEMPTS_OFF)]),
        last_refresh_error=read_error(mm, words),
        leader_heartbeat_age_s=_age(now, int(words[_W(layout.HEARTBEAT_OFF)])),
        leader_since_age_s=_age(now, int(words[_W(layout.LEADER_SINCE_OFF)])),
        is_leader=self_leads,
        health_slots_used=health.slots_used(words),
        health_overflow=int(words[_W(layout.HEALTH_OVERFLOW_OFF)]),
        shm_dir=shm_dir,
    )
