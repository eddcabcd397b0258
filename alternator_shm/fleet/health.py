"""Per-node health shared by every process: picks, failures and quarantine.

The segment holds ``HEALTH_CAPACITY`` entries of 64 bytes. An entry belongs to the node whose
64-bit hash is in its key word; any process claims a free entry with a compare-and-swap of the
key from 0, so no lock is needed (the flock backend emulates the CAS under its lock). The
*lowest* index holding a key is canonical: a process that claims an entry and then sees the same
key at a lower index gives its own back, so concurrent claimers converge on one entry.

Policy when every entry is taken: a node without an entry is *untracked* — its picks and
failures are not counted in shared memory (``HEALTH_OVERFLOW`` counts such events) and a failure
quarantines it in the reporting process only, for ``local_quarantine_s``. The leader frees the
entries of nodes that left the table whenever it publishes a new generation, so the table can
churn forever; only more than ``HEALTH_CAPACITY`` nodes *at once* overflows.

Counters are diagnostics: when an entry is recycled, a process racing on the old owner may add
one stray count. Quarantine changes bump ``HEALTH_VERSION`` so :meth:`Health.quarantined` (called
on every pick) is a single load while nothing changes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from alternator_shm.fleet import events as _events
from alternator_shm.fleet import layout
from alternator_shm.fleet.counter import SharedWords

__all__ = ["Health", "NodeCounters", "node_counters", "node_key"]

log = logging.getLogger("alternator_shm.fleet.health")

_BASE = layout.HEALTH_OFF // 8
_STRIDE = layout.HEALTH_ENTRY // 8
_CAP = layout.HEALTH_CAPACITY
_VERSION = layout.word_index(layout.HEALTH_VERSION_OFF)


def node_key(node: str) -> int:
    """64-bit key of a node; never 0 (0 marks a free entry)."""
    k = int.from_bytes(hashlib.blake2b(node.encode("utf-8"), digest_size=8).digest(), "little")
    return k or 1


def _word(index: int, field: int) -> int:
    return _BASE + index * _STRIDE + field // 8


def _offset(index: int, field: int) -> int:
    return layout.health_offset(index) + field


def _keys(words: memoryview) -> list[int]:
    return list(words[_BASE + layout.H_KEY // 8 : _BASE + _CAP * _STRIDE : _STRIDE].tolist())


@dataclass(frozen=True)
class NodeCounters:
    picks: int
    failures: int
    quarantined_since_ns: int  # 0 = not quarantined


def node_counters(words: memoryview, nodes: tuple[str, ...]) -> dict[str, NodeCounters]:
    """Counters of the table's nodes (read-only; works on a read-only mapping)."""
    keys = _keys(words)
    index: dict[int, int] = {}
    for i, k in enumerate(keys):
        if k and k not in index:
            index[k] = i
    result: dict[str, NodeCounters] = {}
    for node in nodes:
        j = index.get(node_key(node))
        if j is None:
            result[node] = NodeCounters(0, 0, 0)
        else:
            result[node] = NodeCounters(
                int(words[_word(j, layout.H_PICKS)]),
                int(words[_word(j, layout.H_FAILURES)]),
                int(words[_word(j, layout.H_QUARANTINED)]),
            )
    return result


def slots_used(words: memoryview) -> int:
    return sum(1 for k in _keys(words) if k)


class Health:
    """One process's view of the shared health entries of one segment."""

    def __init__(self, words: memoryview, ops: SharedWords, local_quarantine_s: float) -> None:
        self._words = words
        self._ops = ops
        self._slots: dict[str, tuple[int, int]] = {}  # node -> (key, entry index)
        self._qcache: tuple[int, object, dict[str, int]] = (-1, None, {})
        self._local: dict[str, int] = {}  # untracked nodes quarantined in this process only
        self._local_ns = int(local_quarantine_s * 1e9)
        self._warned_full = False

    # -- entries ---------------------------------------------------------------------------------

    def slot(self, node: str, *, create: bool) -> int | None:
        """Entry index of ``node``; claims a free one if ``create``. None if untracked."""
        cached = self._slots.get(node)
        if cached is not None and self._words[_word(cached[1], layout.H_KEY)] == cached[0]:
            return cached[1]
        key = cached[0] if cached is not None else node_key(node)
        for _ in range(8):
            keys = _keys(self._words)
            if key in keys:
                i = keys.index(key)
                break
            if not create:
                return None
            try:
                free = keys.index(0)
            except ValueError:
                self._overflow(node)
                return None
            if not self._ops.compare_exchange(_offset(free, layout.H_KEY), 0, key):
                continue  # somebody else took it (maybe for this very node): look again
            # Fresh entry: clear what a previous owner (or a racing stale writer) left.
            for f in (layout.H_FAILURES, layout.H_PICKS, layout.H_QUARANTINED,
                      layout.H_LAST_FAILURE, layout.H_LAST_PROBE):
                self._words[_word(free, f)] = 0
            now_keys = _keys(self._words)
            first = now_keys.index(key) if key in now_keys else free
            if first < free:  # a concurrent claimer won a lower entry: it is canonical
                self._ops.compare_exchange(_offset(free, layout.H_KEY), key, 0)
                i = first
            else:
                i = free
            break
        else:
            return None
        if len(self._slots) > 4 * _CAP:
            self._slots.clear()
        self._slots[node] = (key, i)
        return i

    def _overflow(self, node: str) -> None:
        self._ops.fetch_add(layout.HEALTH_OVERFLOW_OFF, 1)
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "all %d shared health entries are taken; %s and other new nodes are tracked "
                "in this process only", _CAP, node,
            )

    # -- operations of any process -----------------------------------------------------------------

    def record_pick(self, node: str) -> None:
        i = self.slot(node, create=True)
        if i is not None:
            self._ops.fetch_add(_offset(i, layout.H_PICKS), 1)

    def report_failure(self, node: str) -> None:
        now = time.monotonic_ns()
        i = self.slot(node, create=True)
        if i is None:
            self._local[node] = now
            return
        self._ops.fetch_add(_offset(i, layout.H_FAILURES), 1)
        self._words[_word(i, layout.H_LAST_FAILURE)] = now
        q = _offset(i, layout.H_QUARANTINED)
        for _ in range(100):
            old = int(self._words[q // 8])
            if old >= now or self._ops.compare_exchange(q, old, now):
                break
        self._ops.fetch_add(layout.HEALTH_VERSION_OFF, 1)

    def report_success(self, node: str, nodes: tuple[str, ...]) -> None:
        """Release ``node`` if quarantined; one load when nothing is quarantined."""
        self._local.pop(node, None)
        quarantined = self._view(nodes)
        since = quarantined.get(node)
        if since is None:
            return
        i = self.slot(node, create=False)
        if i is not None:
            self.release(i, since)

    def release(self, index: int, since: int) -> bool:
        """End a quarantine unless a newer failure re-armed it meanwhile."""
        if self._ops.compare_exchange(_offset(index, layout.H_QUARANTINED), since, 0):
            self._ops.fetch_add(layout.HEALTH_VERSION_OFF, 1)
            return True
        return False

    def _view(self, nodes: tuple[str, ...]) -> dict[str, int]:
        version = int(self._words[_VERSION])
        cache = self._qcache
        if cache[0] == version and cache[1] is nodes:
            return cache[2]
        found: dict[str, int] = {}
        keys = _keys(self._words)
        index: dict[int, int] = {}
        for i, k in enumerate(keys):
            if k and k not in index:
                index[k] = i
        if index:
            for node in nodes:
                cached = self._slots.get(node)
                key = cached[0] if cached is not None else node_key(node)
                j = index.get(key)
                if j is None:
                    continue
                self._slots[node] = (key, j)
                since = int(self._words[_word(j, layout.H_QUARANTINED)])
                if since:
                    found[node] = since
        self._qcache = (version, nodes, found)
        return found

    def quarantined(self, nodes: tuple[str, ...], expire_after_ns: int | None) -> dict[str, int]:
        """node -> monotonic ns of the failure, for quarantined nodes of ``nodes``.

        ``expire_after_ns`` drops entries older than that (used when no probe is configured, so
        quarantines end even while no leader runs maintenance)."""
        shared = self._view(nodes)
        if not shared and not self._local:
            return {}
        result = dict(shared)
        now = time.monotonic_ns()
        if expire_after_ns is not None and result:
            result = {n: t for n, t in result.items() if now - t < expire_after_ns}
        if self._local:
            for node, since in list(self._local.items()):
                if now - since >= self._local_ns:
                    self._local.pop(node, None)
                elif node in nodes:
                    result[node] = since
        return result

    # -- leader maintenance ----------------------------------------------------------------------

    def maintain(
        self,
        nodes: tuple[str, ...],
        probe: Callable[[str], bool] | None,
        probe_interval_ns: int,
        quarantine_ns: int,
    ) -> None:
        """Leader: probe quarantined nodes (or expire them without a probe) and release them."""
        for node, since in self._view(nodes).items():
            i = self.slot(node, create=False)
            if i is None:
                continue
            now = time.monotonic_ns()
            if probe is None:
                if now - since >= quarantine_ns:
                    self.release(i, since)
                continue
            last = int(self._words[_word(i, layout.H_LAST_PROBE)])
            if now - last < probe_interval_ns:
                continue
            self._words[_word(i, layout.H_LAST_PROBE)] = now
            try:
                healthy = bool(probe(node))
            except Exception:  # a probe that raises means "still unhealthy"
                log.debug("probe of %s raised", node, exc_info=True)
                healthy = False
            if healthy:
                log.info("node %s is healthy again; ending its quarantine", node,
                         extra=_events.fields("node_recovered", node))
                self.release(i, since)

    def collect(self, nodes: tuple[str, ...]) -> int:
        """Leader, after publishing a new generation: free the entries of nodes not in the
        table. Returns how many entries were freed."""
        wanted = {node_key(n) for n in nodes}
        freed = 0
        for i, k in enumerate(_keys(self._words)):
            if not k or k in wanted:
                continue
            was_quarantined = self._words[_word(i, layout.H_QUARANTINED)] != 0
            for f in (layout.H_FAILURES, layout.H_PICKS, layout.H_QUARANTINED,
                      layout.H_LAST_FAILURE, layout.H_LAST_PROBE):
                self._words[_word(i, f)] = 0
            if self._ops.compare_exchange(_offset(i, layout.H_KEY), k, 0):
                freed += 1
            if was_quarantined:
                self._ops.fetch_add(layout.HEALTH_VERSION_OFF, 1)
        return freed
