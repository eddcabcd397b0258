"""Snapshots of a segment for ``status``, ``Helper.stats()`` and tests.

Built from the segment alone (plus F_GETLK on the lock file), so ``alternator-shm status`` can
describe namespaces that no process of its own has attached, without creating anything.
"""

from __future__ import annotations

import mmap
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.fleet import health, layout, load, segment, table
from alternator_shm.fleet.refresher import read_error

__all__ = ["FleetStats", "NodeStats", "node_stats", "snapshot", "unusable"]

_W = layout.word_index


@dataclass(frozen=True)
class NodeStats:
    """Shared counters and health of one node of the table.

    ``state`` is the node-health state: ``"active"`` (in rotation), ``"quarantined"`` (new or
    recovering: tried only after every active node) or ``"down"`` (no traffic until probes
    succeed); always ``"active"`` with ``node_health=False``. ``quarantined`` is True for every
    state but ``"active"`` (the node is out of the ordinary rotation). ``failures`` counts every
    traffic failure ever reported; ``consecutive_failures`` / ``successes`` are the health
    machine's streaks and ``generation`` its down-count (see the README's node-health section).
    """

    picks: int
    failures: int
    quarantined: bool
    state: str = "active"
    generation: int = 0
    consecutive_failures: int = 0
    successes: int = 0
    last_update_age_s: float | None = None  # since the last accepted health observation
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
    node_health: bool = True  # False: the namespace runs with node_health=False
    segment_size: int = layout.TOTAL_SIZE
    shm_dir: str = segment.DEFAULT_SHM_DIR
    # "shared": this process uses the host-wide segment; "local": it balances alone (its own
    # table, counter and health; see fleet/failsoft.py) and ``mode_reason`` says why.
    mode: str = "shared"
    mode_reason: str | None = None
    # Set only by ``list_fleets`` for a segment it cannot read (corrupt header, foreign owner,
    # truncated): why. Such an entry is listed, never dropped, so an operator sees it.
    problem: str | None = None
    leader_epoch: int = 0  # the fencing token in force (bumped by every new leader and close)
    leader_mode: str = ""  # "lock", "takeover" (of a wedged leader) or "" (none)
    takeovers: int = 0  # wedged leaders replaced on this segment
    published_epoch: int = 0  # epoch of the writer of the last commit
    local_picks: int = 0  # attempts of this process that picked locally (counter lock stuck)


def _age(now: int, stamp: int) -> float | None:
    return None if stamp == 0 else max(0.0, (now - stamp) / 1e9)


def node_stats(
    counters: Mapping[str, health.NodeCounters], loads: Mapping[str, load.NodeLoad], now: int
) -> dict[str, NodeStats]:
    """``per_node`` from health entries and loads (the shared segment's or the local twin's)."""
    return {
        n: NodeStats(
            picks=c.picks,
            failures=c.failures,
            quarantined=c.state is not health.State.ACTIVE,
            state=c.state.label,
            generation=c.generation,
            consecutive_failures=c.consecutive_failures,
            successes=c.successes,
            last_update_age_s=_age(now, c.updated_ns),
            in_flight=loads[n].in_flight,
            latency_ms=loads[n].latency_ms,
        )
        for n, c in counters.items()
    }


_MODES = {1: "lock", 2: "takeover"}


def _leader_pid(shm_dir: str, base: str, words: memoryview, self_leads: bool) -> int | None:
    """The epoch holder: the header's pid, trusted only while that process is alive (its
    (pid, starttime) pair, so a reused pid does not count) and, for a lock leader, while the
    leader byte is held. OFD locks carry no pid, so the kernel cannot name the holder."""
    if self_leads:
        return _getpid()
    from alternator_shm.fleet.election import process_identity  # no import cycle at load

    pid = int(words[_W(layout.LEADER_PID_OFF)])
    mode = int(words[_W(layout.LEADER_MODE_OFF)])
    if pid <= 0 or mode == 0:
        return None
    if mode == 1 and segment.leader_pid_from_lock(shm_dir, base) is None:
        return None
    start = int(words[_W(layout.LEADER_START_OFF)])
    if start and not process_identity(pid, start) and os.path.exists("/proc/self/stat"):
        return None
    return pid


def snapshot(
    *,
    namespace: str | None,
    base: str,
    shm_dir: str,
    mm: mmap.mmap,
    words: memoryview,
    self_leads: bool = False,
    local_picks: int = 0,
) -> FleetStats:
    """Read everything ``status`` shows from a (possibly read-only) mapping."""
    now = time.monotonic_ns()
    read = table.read_published(mm, words)
    w, nodes = read if read is not None else (int(words[_W(layout.PUBLISH_OFF)]), ())
    per_node = node_stats(health.node_counters(words, nodes), load.node_loads(words, nodes), now)
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
        node_health=health.health_enabled(words),
        shm_dir=shm_dir,
        leader_epoch=int(words[_W(layout.EPOCH_OFF)]),
        leader_mode=_MODES.get(int(words[_W(layout.LEADER_MODE_OFF)]), ""),
        takeovers=int(words[_W(layout.TAKEOVERS_OFF)]),
        published_epoch=int(words[_W(layout.PUBLISHED_EPOCH_OFF)]),
        local_picks=local_picks,
    )


def unusable(shm_dir: str, base: str) -> FleetStats:
    """The entry ``status`` shows for a segment it cannot read: the reason, and whatever of the
    header can still be told (the namespace bytes survive most corruptions). Read-only."""
    path = os.path.join(shm_dir, base)
    problem = "unreadable"
    namespace = ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        problem = f"cannot open: {exc.strerror or exc}"
    else:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                problem = "not a regular file"
            elif st.st_uid != os.geteuid():
                problem = f"owned by uid {st.st_uid}, not by this user (euid {os.geteuid()})"
            elif st.st_size < layout.TOTAL_SIZE:
                problem = f"truncated ({st.st_size} of {layout.TOTAL_SIZE} bytes)"
            else:
                mm = mmap.mmap(fd, layout.TOTAL_SIZE, prot=mmap.PROT_READ)
                words = memoryview(mm).cast("Q")
                problem = f"corrupt header: {segment.header_problem(words) or 'unknown'}"
                try:
                    namespace = segment.read_namespace(mm, words)
                except (ValueError, IndexError):
                    namespace = ""
                # Bytes that are not UTF-8 were never a namespace: show none, not mojibake.
                if not namespace.isprintable() or "\ufffd" in namespace:
                    namespace = ""
        except OSError as exc:
            problem = f"cannot read: {exc.strerror or exc}"
        finally:
            os.close(fd)
    return FleetStats(
        namespace=namespace,
        segment_name="/" + base,
        leader_pid=None,
        generation=0,
        nodes=(),
        picks=0,
        shm_dir=shm_dir,
        problem=problem,
    )
