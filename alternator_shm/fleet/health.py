"""Node health shared by every process of the host: the cross-language ACTIVE / QUARANTINED /
DOWN state machine (``feature-specs/node-health.md`` of ``scylladb/alternator-client-python``).

**The machine** (:func:`transition`, pure): an ACTIVE node goes DOWN after
``active_failure_threshold`` consecutive traffic failures; a QUARANTINED node becomes ACTIVE after
``quarantine_promotion_threshold`` consecutive traffic successes or one successful direct probe,
and goes DOWN after ``quarantine_failure_threshold`` consecutive traffic failures; a DOWN node
gets no traffic and returns to (recovery) quarantine after ``down_recovery_threshold``
consecutive successful probes. Probe timing is ours: once a DOWN node answers a probe, the
rest of its recovery sequence (recovery probes, then the validation probe) follows
``recovery_probe_interval`` apart instead of a whole period each (:func:`probe_interval`).
Entering DOWN increments the node's *generation*; a traffic
outcome is accepted only if the attempt captured the current generation, so a late answer from
before a DOWN cannot touch the node after it recovered. New nodes start QUARANTINED (admission)
until a probe or traffic proves them.

**Sharing.** The segment holds ``HEALTH_CAPACITY`` entries (bytes in :mod:`layout`). An entry
belongs to the node whose key (hash of its canonical endpoint) is in its key word. The state,
counters, generation and a *claim tag* are packed in ONE 64-bit status word that is only ever
changed by compare-and-swap from the value the writer read, so two processes recording outcomes
at once never lose one (the loser re-reads and re-applies). Nothing in an entry is reset with a
plain store while another process may write it: a claim only CASes the key and then the status
word from the value it read before claiming; freeing bumps the tag first (so a writer still
holding the old tag fails its CAS and looks the node up again) and only then gives the key back.

**Who claims.** Only the leader claims (:meth:`Health.admit`, before it publishes a table) and
frees (:meth:`Health.collect`) entries, so two claimers never race for one node. A node that has
no entry (a seed before the first table, or more than ``HEALTH_CAPACITY`` nodes) is tracked in
the reporting process only, with the same machine; ``HEALTH_OVERFLOW`` counts entry shortages.

**History.** Entries of nodes that leave the table are kept (a node that comes back keeps its
state, as the spec requires) until entries run short: past 3/4 of the capacity the leader frees
departed nodes, least recently updated first.

Routing reads :meth:`Health.view`, cached per value of ``HEALTH_VERSION`` (bumped on every state
change), so a pick costs one load while nothing changes.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from alternator_shm.endpoints import canonical_endpoint
from alternator_shm.errors import ConfigurationError
from alternator_shm.fleet import events as _events
from alternator_shm.fleet import layout
from alternator_shm.fleet.counter import SharedWords

__all__ = [
    "Health",
    "HealthSettings",
    "NodeCounters",
    "Observation",
    "State",
    "Status",
    "in_recovery",
    "node_counters",
    "node_key",
    "paced",
    "private_words",
    "probe_interval",
    "transition",
]

log = logging.getLogger("alternator_shm.fleet.health")

_BASE = layout.HEALTH_OFF // 8
_STRIDE = layout.HEALTH_ENTRY // 8
_CAP = layout.HEALTH_CAPACITY
_VERSION = layout.word_index(layout.HEALTH_VERSION_OFF)
_MODE = layout.word_index(layout.HEALTH_MODE_OFF)
MODE_ON = 1
MODE_OFF = 2

# -- the state machine (pure) ---------------------------------------------------------------------


class State(enum.IntEnum):
    """Routing classification of a node. QUARANTINED is 0: a fresh entry is in admission."""

    QUARANTINED = 0
    ACTIVE = 1
    DOWN = 2

    @property
    def label(self) -> str:
        """``"active"``, ``"quarantined"`` or ``"down"`` (``NodeStats.state``)."""
        return self.name.lower()


class Observation(enum.Enum):
    TRAFFIC_SUCCESS = "TRAFFIC_SUCCESS"
    TRAFFIC_FAILURE = "TRAFFIC_FAILURE"
    PROBE_SUCCESS = "PROBE_SUCCESS"
    PROBE_FAILURE = "PROBE_FAILURE"

    @property
    def is_traffic(self) -> bool:
        return self in (Observation.TRAFFIC_SUCCESS, Observation.TRAFFIC_FAILURE)


_THRESHOLD_MAX = 0xFFFF  # counters are 16-bit fields of the status word


def _threshold(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    if value > _THRESHOLD_MAX:
        raise ConfigurationError(f"{name} must be at most {_THRESHOLD_MAX}, got {value}")
    return max(1, value)  # spec: thresholds below one are normalised to one


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


#: Default spacing of recovery-sequence probes: at most this many seconds ...
DEFAULT_RECOVERY_SPACING = 1.0
#: ... and at most this share of the probe period (short periods keep the same proportion).
RECOVERY_SPACING_SHARE = 0.1


@dataclass(frozen=True)
class HealthSettings:
    """Node-health thresholds and probing (defaults: the spec's ``vectors/defaults.tsv``).

    Pass one as ``Helper(node_health=HealthSettings(...))`` to tune; ``node_health=True`` means
    these defaults. Thresholds below 1 become 1 (spec); larger than 65535 raise
    :class:`ConfigurationError`, as do non-positive periods and a concurrency outside 1..64.
    ``recovery_probe_interval`` (seconds, not in the spec): the spacing of the probes of one
    recovery sequence, after a DOWN node's first successful probe; None (default) means
    ``min(1 s, probe_period / 10)``; at most ``probe_period`` (equal: the spec's own timing).
    """

    active_failure_threshold: int = 10
    down_recovery_threshold: int = 3
    quarantine_promotion_threshold: int = 10
    quarantine_failure_threshold: int = 3
    probe_period: float = 30.0  # seconds between probes of one quarantined or down node
    probe_concurrency: int = 4  # probes in flight at once (leader)
    probe_timeout: float = 5.0  # seconds from a probe's start to its failure
    #: Seconds between the probes of a *recovery sequence* (our timing, not the spec's; see
    #: :func:`probe_interval`). None: ``min(1.0, probe_period / 10)``.
    recovery_probe_interval: float | None = None

    def __post_init__(self) -> None:
        for name in ("active_failure_threshold", "down_recovery_threshold",
                     "quarantine_promotion_threshold", "quarantine_failure_threshold"):
            object.__setattr__(self, name, _threshold(name, getattr(self, name)))
        for name in ("probe_period", "probe_timeout"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))
        c = self.probe_concurrency
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 64:
            raise ConfigurationError(f"probe_concurrency must be an integer in 1..64, got {c!r}")
        spacing = self.recovery_probe_interval
        if spacing is not None:
            spacing = _seconds("recovery_probe_interval", spacing)
            if spacing > self.probe_period:
                raise ConfigurationError(
                    "recovery_probe_interval must be at most probe_period "
                    f"({self.probe_period}s), got {spacing!r}"
                )
            object.__setattr__(self, "recovery_probe_interval", spacing)
        # None stays None (so dataclasses.replace(settings, probe_period=...) derives it anew)

    @property
    def recovery_spacing(self) -> float:
        """``recovery_probe_interval`` resolved, in seconds: as given, else
        ``min(1 s, probe_period / 10)``."""
        if self.recovery_probe_interval is not None:
            return float(self.recovery_probe_interval)
        return min(DEFAULT_RECOVERY_SPACING, self.probe_period * RECOVERY_SPACING_SHARE)


@dataclass(frozen=True)
class Status:
    """Health status with the spec's state-interpreted ``failures`` / ``successes``."""

    state: State
    failures: int = 0
    successes: int = 0
    generation: int = 0
    #: a successful attempt on this QUARANTINED node stands in for its next background probe
    suppressed: bool = False
    #: recovery quarantine whose validation probe is paced short (:func:`probe_interval`):
    #: set on entering it from DOWN, cleared by any failure (probe or traffic) while in it
    recovering: bool = False


def initial_status(state: State, settings: HealthSettings) -> Status:
    """The spec's initial statuses: ACTIVE is healthy (successes = promotion threshold)."""
    if state is State.ACTIVE:
        return Status(State.ACTIVE, 0, settings.quarantine_promotion_threshold, 0)
    return Status(state, 0, 0, 0)


def transition(st: Status, obs: Observation, t: HealthSettings) -> Status | None:
    """The status after ``obs``; None when the observation is ignored (traffic on a DOWN node).

    An accepted observation may return an equal status (e.g. a probe of an ACTIVE node): it is
    accepted (update time moves) but changes nothing. Generation checks are the caller's.
    """
    healthy = Status(State.ACTIVE, 0, t.quarantine_promotion_threshold, st.generation)
    if st.state is State.ACTIVE:
        if obs is Observation.TRAFFIC_SUCCESS:
            return healthy
        if obs is Observation.TRAFFIC_FAILURE:
            failures = st.failures + 1
            if failures >= t.active_failure_threshold:
                return Status(State.DOWN, failures, 0, st.generation + 1)
            return Status(State.ACTIVE, failures, 0, st.generation)
        return st  # probes never demote an active node
    if st.state is State.QUARANTINED:
        if obs is Observation.TRAFFIC_SUCCESS:
            successes = st.successes + 1
            if successes >= t.quarantine_promotion_threshold:
                return healthy
            return Status(State.QUARANTINED, 0, successes, st.generation, suppressed=True)
        if obs is Observation.TRAFFIC_FAILURE:
            failures = st.failures + 1
            if failures >= t.quarantine_failure_threshold:
                return Status(State.DOWN, failures, 0, st.generation + 1)
            return Status(State.QUARANTINED, failures, 0, st.generation)
        if obs is Observation.PROBE_SUCCESS:
            return healthy
        return st  # a failed quarantine probe changes nothing
    # DOWN
    if obs.is_traffic:
        return None  # attempts scheduled before it went down are stale
    if obs is Observation.PROBE_SUCCESS:
        successes = st.successes + 1
        if successes >= t.down_recovery_threshold:
            return Status(State.QUARANTINED, 0, 0, st.generation)
        return Status(State.DOWN, st.failures, successes, st.generation)
    return Status(State.DOWN, st.failures, 0, st.generation)


# -- probe timing (ours: the spec fixes the transitions, not how soon probes follow) ----------


def paced(old: Status, obs: Observation, new: Status) -> Status:
    """``new`` (the spec's :func:`transition` of ``old`` by ``obs``) with its ``recovering``
    flag set: True on entering recovery quarantine from DOWN, kept while in it, cleared by a
    failure there or by leaving it."""
    if new.state is not State.QUARANTINED:
        flag = False
    elif old.state is State.DOWN:
        flag = True
    elif obs in (Observation.PROBE_FAILURE, Observation.TRAFFIC_FAILURE):
        flag = False
    else:
        flag = old.recovering
    if flag == new.recovering:
        return new
    return Status(new.state, new.failures, new.successes, new.generation, new.suppressed, flag)


def in_recovery(st: Status) -> bool:
    """True while ``st`` is mid-way through a recovery sequence: a DOWN node whose last probe
    succeeded (recovery probes under way) or a recovery quarantine awaiting validation."""
    if st.state is State.DOWN:
        return st.successes > 0
    return st.state is State.QUARANTINED and st.recovering


def probe_interval(st: Status, settings: HealthSettings) -> float:
    """Seconds from one probe's start to the next one of a node in status ``st``.

    The spec's period (``probe_period``) everywhere except inside a recovery sequence
    (:func:`in_recovery`): once a DOWN node answers a probe, its remaining recovery probes and
    then its validation probe follow ``recovery_probe_interval`` apart. The thresholds and
    transitions are the spec's, unchanged: a DOWN node still needs ``down_recovery_threshold``
    consecutive successful probes, then a direct validation probe (or the promotion streak of
    traffic); any failed probe ends the sequence (DOWN resets its successes, a failed
    validation clears ``recovering``) and the next probe waits a whole period again. Only the
    spacing is shorter, so a restarted node is ACTIVE again at most ``probe_period +
    down_recovery_threshold x recovery_probe_interval`` after it serves again (plus the
    leader's poll granularity and probe round trips), instead of about
    ``(down_recovery_threshold + 1) x probe_period``. Why it is safe: the sequence still takes
    ``down_recovery_threshold + 1`` consecutive successful direct probes over at least
    ``down_recovery_threshold`` spacings, and it costs a host at most that many extra probes
    per recovery (the leader alone probes).
    """
    return settings.recovery_spacing if in_recovery(st) else settings.probe_period


# -- the status word ------------------------------------------------------------------------
# bits 0-15 successes, 16-31 failures, 32-33 state, 34 probe suppressed, 35 recovering,
# 36-55 generation, 56-63 claim tag

_FAIL_SHIFT = 16
_STATE_SHIFT = 32
_SUPPRESSED = 1 << 34
_RECOVERING = 1 << 35
_GEN_SHIFT = 36
GEN_MASK = (1 << 20) - 1
_TAG_SHIFT = 56
_TAG_MASK = 0xFF


def _pack(st: Status, tag: int) -> int:
    return (
        (st.successes & 0xFFFF)
        | (st.failures & 0xFFFF) << _FAIL_SHIFT
        | int(st.state) << _STATE_SHIFT
        | (st.generation & GEN_MASK) << _GEN_SHIFT
        | (tag & _TAG_MASK) << _TAG_SHIFT
        | (_SUPPRESSED if st.suppressed else 0)
        | (_RECOVERING if st.recovering else 0)
    )


def _unpack(word: int) -> Status:
    code = (word >> _STATE_SHIFT) & 3
    return Status(
        State(code if code <= 2 else 0),
        (word >> _FAIL_SHIFT) & 0xFFFF,
        word & 0xFFFF,
        (word >> _GEN_SHIFT) & GEN_MASK,
        bool(word & _SUPPRESSED),
        bool(word & _RECOVERING),
    )


def _tag(word: int) -> int:
    return (word >> _TAG_SHIFT) & _TAG_MASK


_NO_GEN_MASK = ~(GEN_MASK << _GEN_SHIFT) & ((1 << 64) - 1)


def _fresh(tag: int) -> int:
    return (tag & _TAG_MASK) << _TAG_SHIFT  # QUARANTINED, 0, 0, generation 0


# -- entries ------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def node_key(node: str) -> int:
    """64-bit key of a node's canonical endpoint; never 0 (0 marks a free entry)."""
    try:
        ident = canonical_endpoint(node)
    except ValueError:
        ident = node
    k = int.from_bytes(hashlib.blake2b(ident.encode("utf-8"), digest_size=8).digest(), "little")
    return k or 1


def _word(index: int, field: int) -> int:
    return _BASE + index * _STRIDE + field // 8


def _offset(index: int, field: int) -> int:
    return layout.health_offset(index) + field


def _keys(words: memoryview) -> list[int]:
    return list(words[_BASE + layout.H_KEY // 8 : _BASE + _CAP * _STRIDE : _STRIDE].tolist())


def _index(words: memoryview) -> dict[int, int]:
    index: dict[int, int] = {}
    for i, k in enumerate(_keys(words)):
        if k and k not in index:
            index[k] = i
    return index


@dataclass(frozen=True)
class NodeCounters:
    """One node's shared entry as ``stats`` reports it."""

    picks: int
    failures: int
    state: State
    generation: int = 0
    consecutive_failures: int = 0
    successes: int = 0
    updated_ns: int = 0


def health_enabled(words: memoryview) -> bool:
    """False when the namespace runs with ``node_health=False`` (every node then ACTIVE)."""
    return int(words[_MODE]) != MODE_OFF


def node_counters(words: memoryview, nodes: tuple[str, ...]) -> dict[str, NodeCounters]:
    """Counters and state of the table's nodes (read-only; works on a read-only mapping)."""
    index = _index(words)
    enabled = health_enabled(words)
    result: dict[str, NodeCounters] = {}
    for node in nodes:
        j = index.get(node_key(node))
        if j is None:
            state = State.QUARANTINED if enabled else State.ACTIVE
            result[node] = NodeCounters(0, 0, state)
            continue
        st = _unpack(int(words[_word(j, layout.H_STATUS)]))
        result[node] = NodeCounters(
            picks=int(words[_word(j, layout.H_PICKS)]),
            failures=int(words[_word(j, layout.H_FAILURES)]),
            state=st.state if enabled else State.ACTIVE,
            generation=st.generation,
            consecutive_failures=st.failures,
            successes=st.successes,
            updated_ns=int(words[_word(j, layout.H_UPDATED)]),
        )
    return result


def private_words() -> memoryview:
    """A zeroed buffer of one process with the segment's layout up to the health entries
    (header words included): the local twin's node health, owned by this module like the
    segment's (wrap it with :class:`~alternator_shm.fleet.counter.LocalWords`)."""
    return memoryview(bytearray(layout.HEALTH_OFF + layout.HEALTH_SIZE)).cast("Q")


def slots_used(words: memoryview) -> int:
    return sum(1 for k in _keys(words) if k)


#: A node's routing state and the generation an attempt routed to it must report.
Eligibility = tuple[State, int]


class Health:
    """One process's view of the shared health entries of one segment.

    ``settings=None`` is ``node_health=False``: every node is ACTIVE, outcomes only feed the
    stats counters, and the leader probes nothing.
    """

    def __init__(
        self, words: memoryview, ops: SharedWords, settings: HealthSettings | None
    ) -> None:
        self._words = words
        self._ops = ops
        self.settings = settings
        self._slots: dict[str, tuple[int, int, int]] = {}  # node -> (key, index, tag)
        # record_pick's cache: node -> (key word, key, status word, tag, add 1 to its picks)
        self._picks: dict[str, tuple[int, int, int, int, Callable[[], object]]] = {}
        self._cache: tuple[int, int, object, dict[str, Eligibility]] = (-1, -1, None, {})
        self._local: dict[str, Status] = {}  # nodes without a shared entry
        self._local_version = 0
        self._local_lock = threading.Lock()
        self._warned_full = False
        # The status word of a healthy ACTIVE node, tag and generation aside.
        self._healthy = (
            _pack(Status(State.ACTIVE, 0, settings.quarantine_promotion_threshold), 0)
            if settings is not None
            else 0
        )

    # -- lookup ----------------------------------------------------------------------------------

    def _find(self, node: str) -> tuple[int, int, int] | None:
        """(key, index, tag) of ``node``'s entry, validated against recycling; None if none."""
        cached = self._slots.get(node)
        words = self._words
        if cached is not None:
            key, i, tag = cached
            if words[_word(i, layout.H_KEY)] == key and _tag(
                int(words[_word(i, layout.H_STATUS)])
            ) == tag:
                return cached
            self._slots.pop(node, None)
        key = node_key(node)
        for _ in range(8):
            keys = _keys(words)
            try:
                i = keys.index(key)
            except ValueError:
                return None
            tag = _tag(int(words[_word(i, layout.H_STATUS)]))
            if words[_word(i, layout.H_KEY)] != key:
                continue  # freed (and maybe re-claimed) between our reads
            if len(self._slots) > 4 * _CAP:
                self._slots.clear()
            found = (key, i, tag)
            self._slots[node] = found
            return found
        return None

    def slot(self, node: str, *, create: bool) -> int | None:
        """Entry index of ``node``; with ``create`` claims a free one (leader only)."""
        found = self._find(node)
        if found is not None:
            return found[1]
        if not create:
            return None
        key = node_key(node)
        words = self._words
        for _ in range(8):
            keys = _keys(words)
            if key in keys:
                found = self._find(node)
                return found[1] if found is not None else None
            try:
                free = keys.index(0)
            except ValueError:
                self._overflow(node)
                return None
            before = int(words[_word(free, layout.H_STATUS)])
            if not self._ops.compare_exchange(_offset(free, layout.H_KEY), 0, key):
                continue
            # Ours. The freer left a fresh status with a new tag; if a stale writer of the
            # previous owner slipped in since, restart from fresh -- by CAS from the value read
            # *before* the claim, so an outcome recorded for this node meanwhile is kept.
            if before != _fresh(_tag(before)):
                self._ops.compare_exchange(
                    _offset(free, layout.H_STATUS), before, _fresh(_tag(before) + 1)
                )
            self._bump()
            found = self._find(node)
            return found[1] if found is not None else None
        return None

    def _overflow(self, node: str) -> None:
        self._ops.fetch_add(layout.HEALTH_OVERFLOW_OFF, 1)
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "all %d shared health entries are taken; %s and other new nodes are tracked "
                "in this process only", _CAP, node,
            )

    def _bump(self) -> None:
        self._ops.fetch_add(layout.HEALTH_VERSION_OFF, 1)

    # -- reads -----------------------------------------------------------------------------------

    def status(self, node: str) -> Status:
        """Current status of ``node`` (ACTIVE when health is off)."""
        if self.settings is None:
            return Status(State.ACTIVE)
        found = self._find(node)
        if found is None:
            with self._local_lock:
                return self._local.get(node, Status(State.QUARANTINED))
        return _unpack(int(self._words[_word(found[1], layout.H_STATUS)]))

    def view(self, nodes: tuple[str, ...]) -> Mapping[str, Eligibility]:
        """node -> (state, generation) for ``nodes``; empty mapping = all ACTIVE, generation 0.

        Cached per (``HEALTH_VERSION``, local version, ``nodes`` object): one load per pick
        while no state changes anywhere on the host.
        """
        if self.settings is None:
            return {}
        version = int(self._words[_VERSION])
        cache = self._cache
        if cache[0] == version and cache[1] == self._local_version and cache[2] is nodes:
            return cache[3]
        local_version = self._local_version
        index = _index(self._words)
        result: dict[str, Eligibility] = {}
        for node in nodes:
            j = index.get(node_key(node))
            if j is None:
                with self._local_lock:
                    st = self._local.get(node, Status(State.QUARANTINED))
            else:
                st = _unpack(int(self._words[_word(j, layout.H_STATUS)]))
            result[node] = (st.state, st.generation)
        self._cache = (version, local_version, nodes, result)
        return result

    # -- outcomes (any process) --------------------------------------------------------------------

    def record_pick(self, node: str) -> None:
        # Hot path (every attempt): the entry found last time, re-validated by its key and
        # claim tag exactly as _find does, with the word indices precomputed.
        hit = self._picks.get(node)
        words = self._words
        if (
            hit is not None
            and words[hit[0]] == hit[1]
            and (int(words[hit[2]]) >> _TAG_SHIFT) & _TAG_MASK == hit[3]
        ):
            hit[4]()  # fetch_add(picks word, 1), bound
            return
        found = self._find(node)
        if found is None:
            return
        key, i, tag = found
        if len(self._picks) > 4 * _CAP:
            self._picks.clear()
        offset = _offset(i, layout.H_PICKS)
        adder = getattr(self._ops, "adder", None)  # AtomicWords: a C-level bound add
        add: Callable[[], object] = (
            adder(offset) if adder is not None else functools.partial(self._ops.fetch_add, offset)
        )
        self._picks[node] = (_word(i, layout.H_KEY), key, _word(i, layout.H_STATUS), tag, add)
        add()

    def report_failure(self, node: str, generation: int | None = None) -> Status | None:
        """A traffic attempt failed before a final HTTP response."""
        return self.observe(node, Observation.TRAFFIC_FAILURE, generation)

    def report_success(self, node: str, generation: int | None = None) -> Status | None:
        """A traffic attempt got a final HTTP response (not 500/502/503/504)."""
        return self.observe(node, Observation.TRAFFIC_SUCCESS, generation)

    def observe(
        self, node: str, obs: Observation, generation: int | None = None
    ) -> Status | None:
        """Apply one observation host-wide; returns the new status if it changed, else None
        (not accepted, or accepted without a change).

        ``generation`` is what the attempt captured when it was routed (None: no check). A
        traffic outcome from another generation is stale and changes nothing.
        """
        found = self._find(node)
        if obs is Observation.TRAFFIC_FAILURE and found is not None:
            self._ops.fetch_add(_offset(found[1], layout.H_FAILURES), 1)
        settings = self.settings
        if settings is None:
            return None
        if obs is Observation.TRAFFIC_SUCCESS and found is not None:
            # Fast path (every successful attempt): a healthy ACTIVE node stays as it is.
            i = found[1]
            word = int(self._words[_word(i, layout.H_STATUS)])
            if word & _NO_GEN_MASK == self._healthy | found[2] << _TAG_SHIFT and (
                generation is None or (generation & GEN_MASK) == (word >> _GEN_SHIFT) & GEN_MASK
            ):
                self._words[_word(i, layout.H_UPDATED)] = time.monotonic_ns()
                return None
        for _ in range(1000):
            if found is None:
                return self._observe_local(node, obs, generation, settings)
            _key, i, tag = found
            off = _offset(i, layout.H_STATUS)
            word = int(self._words[off // 8])
            if _tag(word) != tag:  # the entry was recycled: look the node up again
                self._slots.pop(node, None)
                found = self._find(node)
                continue
            old = _unpack(word)
            new = self._apply(old, obs, generation, settings)
            if new is None:
                return None
            packed = _pack(new, tag)
            if packed == word:
                self._words[_word(i, layout.H_UPDATED)] = time.monotonic_ns()
                return None
            if self._ops.compare_exchange(off, word, packed):
                self._words[_word(i, layout.H_UPDATED)] = time.monotonic_ns()
                if new.state != old.state or new.generation != old.generation:
                    self._bump()
                    _log_transition(node, old, new, obs)
                return new
        return None  # pathological contention: drop this one observation

    @staticmethod
    def _apply(
        old: Status, obs: Observation, generation: int | None, settings: HealthSettings
    ) -> Status | None:
        if obs.is_traffic and generation is not None and (generation & GEN_MASK) != old.generation:
            return None
        new = transition(old, obs, settings)
        if new is None:
            return None
        if new.generation != old.generation:
            new = Status(new.state, new.failures, new.successes, new.generation & GEN_MASK)
        return paced(old, obs, new)

    def _observe_local(
        self, node: str, obs: Observation, generation: int | None, settings: HealthSettings
    ) -> Status | None:
        with self._local_lock:
            old = self._local.get(node, Status(State.QUARANTINED))
            new = self._apply(old, obs, generation, settings)
            if new is None:
                return None
            if new == old:
                return None
            if len(self._local) > 4 * _CAP:
                self._local.clear()
            self._local[node] = new
            if new.state != old.state or new.generation != old.generation:
                self._local_version += 1
                _log_transition(node, old, new, obs)
            return new

    # -- leader ------------------------------------------------------------------------------------

    def admit(self, nodes: Iterable[str]) -> None:
        """Leader, before publishing ``nodes``: give every new node an entry (admission
        quarantine; existing history is kept) and record whether health is on."""
        mode = MODE_ON if self.settings is not None else MODE_OFF
        if self._words[_MODE] != mode:
            self._words[_MODE] = mode
        keys = _keys(self._words)  # one scan for the whole table
        present = set(keys)
        free = (i for i, k in enumerate(keys) if k == 0)
        claimed = False
        for node in nodes:
            key = node_key(node)
            if key in present:
                continue
            present.add(key)
            index = next(free, None)
            if index is None:
                self._overflow(node)
                continue
            before = int(self._words[_word(index, layout.H_STATUS)])
            if self._ops.compare_exchange(_offset(index, layout.H_KEY), 0, key):
                claimed = True
                if before != _fresh(_tag(before)):  # see slot(): restart a polluted entry
                    self._ops.compare_exchange(
                        _offset(index, layout.H_STATUS), before, _fresh(_tag(before) + 1)
                    )
            else:  # taken meanwhile (another leader?): the careful path
                self.slot(node, create=True)
        if claimed:
            self._bump()

    def collect(self, nodes: tuple[str, ...], keep: Iterable[str] = ()) -> int:
        """Leader, after publishing: when entries run short (past 3/4 of the capacity), free
        those of departed nodes, least recently updated first, down to half. Returns how many
        entries were freed."""
        keys = _keys(self._words)
        used = sum(1 for k in keys if k)
        if used <= _CAP * 3 // 4:
            return 0
        wanted = {node_key(n) for n in nodes} | {node_key(n) for n in keep}
        departed = sorted(
            (int(self._words[_word(i, layout.H_UPDATED)]), i, k)
            for i, k in enumerate(keys)
            if k and k not in wanted
        )
        freed = 0
        for _updated, i, k in departed:
            if used - freed <= _CAP // 2:
                break
            if self._free(i, k):
                freed += 1
        if freed:
            self._bump()
        return freed

    def _free(self, index: int, key: int) -> bool:
        off = _offset(index, layout.H_STATUS)
        for _ in range(1000):  # tag first: a writer holding the old tag now fails its CAS
            word = int(self._words[off // 8])
            if self._ops.compare_exchange(off, word, _fresh(_tag(word) + 1)):
                break
        for field in (layout.H_PICKS, layout.H_FAILURES, layout.H_UPDATED, layout.H_PROBED):
            self._words[_word(index, field)] = 0  # stats of a departed node (leader only)
        return self._ops.compare_exchange(_offset(index, layout.H_KEY), key, 0)

    def probe_due(
        self, nodes: Iterable[str], now_ns: int, period_ns: int,
        recovery_ns: int | None = None,
    ) -> list[tuple[str, State]]:
        """Leader: DOWN then QUARANTINED nodes whose last probe started ``period_ns`` ago or
        more -- ``recovery_ns`` (default: the settings' ``recovery_probe_interval``, never more
        than ``period_ns``) for a node inside a recovery sequence (:func:`probe_interval`).
        Never probed, or a stamp from the future, counts as due. Nodes without a shared entry
        are left out: a probe could only change the leader's own local view of them.

        A due QUARANTINED node that took a successful attempt since its last probe is skipped
        once (spec: traffic success suppresses one background probe); that uses up the
        suppression and restarts its period."""
        settings = self.settings
        if settings is None:
            return []
        if recovery_ns is None:
            recovery_ns = int(settings.recovery_spacing * 1e9)
        recovery_ns = min(recovery_ns, period_ns)
        down: list[tuple[str, State]] = []
        quarantined: list[tuple[str, State]] = []
        for node in nodes:
            found = self._find(node)
            if found is None:
                continue
            word = int(self._words[_word(found[1], layout.H_STATUS)])
            st = _unpack(word)
            last = int(self._words[_word(found[1], layout.H_PROBED)])
            if st.state is State.ACTIVE:
                continue
            wait_ns = recovery_ns if in_recovery(st) else period_ns
            if last and 0 <= now_ns - last < wait_ns:
                continue
            if st.suppressed and st.state is State.QUARANTINED:
                self._ops.compare_exchange(
                    _offset(found[1], layout.H_STATUS), word, word & ~_SUPPRESSED
                )
                self._words[_word(found[1], layout.H_PROBED)] = now_ns
                continue
            (down if st.state is State.DOWN else quarantined).append((node, st.state))
        return down + quarantined

    def never_probed(self, node: str) -> bool:
        """True for a QUARANTINED node with an entry that no leader has probed yet."""
        found = self._find(node)
        if found is None or self.settings is None:
            return False
        word = int(self._words[_word(found[1], layout.H_STATUS)])
        return _unpack(word).state is State.QUARANTINED and not int(
            self._words[_word(found[1], layout.H_PROBED)]
        )

    def mark_probed(self, node: str, now_ns: int) -> None:
        found = self._find(node)
        if found is not None:
            self._words[_word(found[1], layout.H_PROBED)] = now_ns


def _log_transition(node: str, old: Status, new: Status, obs: Observation) -> None:
    if new.state is State.DOWN and old.state is not State.DOWN:
        log.warning(
            "node %s is DOWN after %d consecutive failures (generation %d): no traffic until "
            "%s probes succeed", node, new.failures, new.generation, "its recovery",
            extra=_events.fields("node_down", node, failures=new.failures),
        )
    elif new.state is State.ACTIVE and old.state is not State.ACTIVE:
        log.info("node %s is ACTIVE (%s)", node, obs.value,
                 extra=_events.fields("node_recovered", node, observation=obs.value))
    elif new.state is State.QUARANTINED and old.state is State.DOWN:
        log.info("node %s recovered to quarantine after successful probes", node,
                 extra=_events.fields("node_recovered", node, observation=obs.value))
