"""``SharedFleet``: one process's handle on the host-wide state of one namespace."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from alternator_shm import _forkmark
from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.errors import DiscoveryError, SharedStateError
from alternator_shm.fleet import identity, layout, segment
from alternator_shm.fleet.counter import CounterLockBusy
from alternator_shm.fleet.health import Eligibility, HealthSettings, State, Status
from alternator_shm.fleet.load import Attempt, Load
from alternator_shm.fleet.local import (
    Attachment,
    LocalState,
    Startable,
    existing_local_state,
    local_state,
)
from alternator_shm.fleet.refresher import RefreshConfig, Refresher, read_error
from alternator_shm.fleet.schedule import DEFAULT, Schedule
from alternator_shm.fleet.stats import FleetStats, snapshot, unusable

__all__ = ["PickPath", "PickSnapshot", "SharedFleet", "cleanup", "cleanup_segment", "list_fleets"]

log = logging.getLogger("alternator_shm.fleet")

_W = layout.word_index
_COUNTER = _W(layout.COUNTER_OFF)
_ROTATION = _W(layout.ROTATION_OFF)
_ACTIVITY = _W(layout.ACTIVITY_OFF)
_identity_warned: set[tuple[int, str, str]] = set()  # (pid, shm_dir, namespace)


class PickSnapshot:
    """A round-robin first attempt, precomputed for one (publish word, health version) pair.

    ``choices`` are the nodes a first attempt may get: every node of the table when all are
    ACTIVE, else the ACTIVE ones in table order (``routing.round_robin_plan`` followed by
    ``routing.select`` returns ``choices[position % len(choices)]`` then). ``attempts[i]`` is
    ``(choices[i], generation)`` as the attempt must report it, ``adders[i]`` counts a pick in
    that node's shared health entry.

    Valid while both words read before it was built are unchanged: a new table changes the
    publish word, and every state or generation change, claim or free of a health entry bumps
    the health version (``fleet/health.py``). An entry is only freed for a node that a newer
    publication left out, so an adder of a node in a still-current table never counts into a
    recycled entry (the per-pick key and tag check of ``Health.record_pick``, done once).
    """

    __slots__ = ("adders", "attempts", "choices", "pick", "publish", "size", "version")

    def __init__(
        self,
        publish: int,
        version: int,
        attempts: tuple[tuple[str, int], ...],
        adders: tuple[Callable[[], object], ...],
        pick: Callable[[], int] | None = None,
    ) -> None:
        self.publish = publish
        self.version = version
        self.attempts = attempts
        self.choices = tuple(node for node, _ in attempts)
        self.adders = adders
        self.size = len(attempts)
        #: With the C extension: the whole pick in one call (``_atomic.pick``, bound to this
        #: snapshot's words and addresses): the index into :attr:`attempts`, or -1 having
        #: changed nothing when the fork mark or a word moved. None without the extension.
        self.pick = pick


#: Word indices routing compares with a :class:`PickSnapshot` before using it.
PUBLISH_WORD = _W(layout.PUBLISH_OFF)
HEALTH_VERSION_WORD = _W(layout.HEALTH_VERSION_OFF)


class PickPath:
    """The per-attempt calls of one attachment, bound once (routing's fast path).

    A pick through :class:`SharedFleet`'s public methods re-checks the pid and the attachment
    in each of them (and again in a wrapper such as the fail-soft fleet): about a dozen Python
    frames for one table read, one health read, one atomic add and one pick record. A router
    takes one of these instead and checks :meth:`usable` (one fork-mark load, three attribute
    loads; routing inlines it) before each pick; the guarantees are those of the wrapped
    objects (the table reader still accepts only a validated table, re-validated whenever the
    publish word changes). Whoever hands one out may :meth:`revoke` it (the fail-soft wrapper
    going local).

    The fork check compares :func:`alternator_shm._forkmark.current` (a load from a page the
    kernel wipes in every fork child) with the token read at creation, instead of a
    ``getpid()`` system call per pick. :meth:`resnap` builds the :class:`PickSnapshot` that
    turns a steady-state pick into two word compares, one counter add and one pick add.
    """

    __slots__ = (
        "__weakref__",
        "_adder",
        "_ext",
        "_health",
        "_reader",
        "advance",
        "alive",
        "att",
        "pid",
        "read",
        "record_pick",
        "revoked",
        "rotation",
        "snap",
        "state",
        "token",
        "view",
        "words",
    )

    def __init__(self, state: LocalState, att: Attachment, pid: int) -> None:
        self.state = state
        self.att = att
        self.pid = pid
        self.token = _forkmark.token()
        self.alive = _forkmark.current
        self.revoked = False
        self.read = att.reader.read
        self.view = att.health.view
        self.advance = att.ops.advance
        self.record_pick = att.health.record_pick
        self.words = att.seg.words
        self.rotation = int(att.seg.words[_ROTATION])  # fixed for the segment's life
        self.snap: PickSnapshot | None = None
        self._reader = att.reader
        self._health = att.health
        ops = att.ops
        adder = getattr(ops, "adder", None)  # AtomicWords: a C-level bound add
        self._adder: Callable[[int], Callable[[], object]] = (
            adder if adder is not None else lambda off: functools.partial(ops.fetch_add, off)
        )
        # The extension's one-call pick needs the fork mark's address and the words' own.
        ext_pick = getattr(ops, "ext_pick", None)
        self._ext: tuple[Callable[..., int], Callable[[int], int]] | None = (
            (ext_pick, ops.address)  # type: ignore[attr-defined]
            if ext_pick is not None and _forkmark.address is not None
            else None
        )

    def usable(self) -> bool:
        """True while this process still routes through this very attachment."""
        state = self.state
        return (
            not self.revoked
            and self.alive() == self.token
            and state.att is self.att
            and not state.stale
        )

    def revoke(self) -> None:
        self.revoked = True

    def resnap(self) -> PickSnapshot | None:
        """Rebuild :attr:`snap` for the words as they are now; None (and no snapshot) when a
        first attempt needs the general path: no table, no ACTIVE node, or a node without a
        shared health entry (its state is this process's own, versioned apart)."""
        self.snap = None
        words = self.words
        # Read both words before the data they guard: a change during the build then shows
        # as a mismatch at the next pick (never a snapshot newer words would vouch for).
        version = int(words[HEALTH_VERSION_WORD])
        publish, nodes = self._reader.current()
        if not nodes or int(words[PUBLISH_WORD]) != publish:
            return None
        health = self._health
        view = health.view(nodes)
        attempts: list[tuple[str, int]] = []
        offsets: list[int] = []
        for node in nodes:
            index = health.slot(node, create=False)
            if index is None:
                return None
            state, generation = view.get(node, (State.ACTIVE, 0))
            if state is State.ACTIVE:
                attempts.append((node, generation))
                offsets.append(layout.health_offset(index) + layout.H_PICKS)
        if not attempts:
            return None
        pick: Callable[[], int] | None = None
        if self._ext is not None and _forkmark.current() == self.token:
            ext_pick, address = self._ext
            pick = functools.partial(
                ext_pick, _forkmark.address, self.token,
                address(layout.PUBLISH_OFF), publish,
                address(layout.HEALTH_VERSION_OFF), version,
                address(layout.COUNTER_OFF), self.rotation,
                tuple(address(off) for off in offsets),
            )
        adders = tuple(self._adder(off) for off in offsets)
        snap = PickSnapshot(publish, version, tuple(attempts), adders, pick)
        self.snap = snap
        return snap


class SharedFleet:
    """One process's handle on the host-wide state of one namespace.

    Cheap to construct: touches nothing (no shm, no fd, no thread) until first use, so it may be
    built at import time in a pre-fork master. Usable after any kind of fork: every entry point
    compares ``os.getpid()`` with the pid it attached in and re-attaches in a child (which drops
    the inherited fds without unlocking and is never leader by inheritance). Thread-safe.

    ``refresh`` runs only in the elected leader (one process on the host) and returns the node
    list; ``probe`` (leader only) answers whether a node returned HTTP 200 to a direct probe.
    ``health`` turns node health on (``None``: every node is ACTIVE and nothing is probed).
    ``identity`` (from :func:`identity.encode`) is recorded by the leader and compared by the
    others: :meth:`identity_differences`.
    """

    def __init__(
        self,
        namespace: str,
        *,
        refresh: Callable[[], Sequence[str]] | None = None,
        probe: Callable[[str], bool] | None = None,
        refresh_interval: float = DEFAULT.refresh_interval,
        idle_refresh_interval: float = DEFAULT.idle_refresh_interval,
        poll_interval: float = DEFAULT.poll_interval,
        counter_backend: str = "auto",
        shm_dir: str = segment.DEFAULT_SHM_DIR,
        health: HealthSettings | None = None,
        identity: bytes = b"",
        backoff_initial: float | None = DEFAULT.backoff_initial,
        backoff_max: float = DEFAULT.backoff_max,
    ) -> None:
        if counter_backend not in ("auto", "atomic", "flock"):
            raise ValueError(f"counter_backend must be auto, atomic or flock: {counter_backend!r}")
        schedule = Schedule(
            refresh_interval, idle_refresh_interval, poll_interval, backoff_initial, backoff_max
        )
        self.namespace = namespace
        self.shm_dir = shm_dir
        self.segment_name = "/" + segment.base_name(namespace)
        self._config = RefreshConfig(
            refresh=refresh,
            probe=probe,
            refresh_interval=schedule.refresh_interval,
            idle_refresh_interval=schedule.idle_refresh_interval,
            poll_interval=schedule.poll_interval,
            backoff_initial=schedule.first_backoff,
            backoff_max=schedule.backoff_max,
            health=health,
            counter_backend=counter_backend,
            identity=identity,
        )
        self.health_settings = health
        self._pid = -1  # not attached in any process yet
        self._state: LocalState | None = None
        self._refresher: Refresher | None = None
        self._started = False  # start() was called (in this process or before a fork)
        self._owner = object()  # this object's leadership token
        self._identity_pid = -1  # pid in which the recorded options were compared with ours
        self._lock = threading.RLock()
        self._load: tuple[Attachment, Load] | None = None

    def __repr__(self) -> str:
        return f"SharedFleet({self.namespace!r}, segment={self.segment_name!r})"

    # -- attachment (fork-aware) ----------------------------------------------------------------

    def _local(self) -> LocalState:
        if self._pid != _getpid():
            self._after_fork_or_first_use()
        state = self._state
        assert state is not None
        return state

    def _after_fork_or_first_use(self) -> None:
        # Several threads may get here at once on first use (or first use after a fork): only
        # one may reset the owner token, else a refresher could start under a token that
        # close() no longer knows. The registry lock is re-created after a fork, so a lock held
        # by a parent thread that does not exist here cannot block us. Nothing inherited is
        # unlocked, only forgotten.
        pid = _getpid()
        with segment.registry_lock():
            if self._pid == pid:
                return  # another thread did it meanwhile
            inherited = self._pid != -1
            self._lock = threading.RLock()  # a fork child may inherit it held
            self._refresher = None
            self._owner = object()
            self._state = local_state(self.namespace, self.shm_dir, self._config.health)
            self._pid = pid  # last: other threads take the fast path only once all is set
        if inherited and self._started:
            self.start()  # the parent ran a refresher: this process is a failover candidate too

    def _att(self) -> Attachment:
        if self._pid == _getpid():
            state = self._state
            assert state is not None
            att = state.att
            if att is not None and not state.stale:
                return att
        return self._local().ensure(self._config.counter_backend)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Attach and start this process's refresher thread (idempotent, fork-aware).

        One refresher per process per namespace: if another ``SharedFleet`` of this namespace
        already runs one here, this one waits on standby and takes over when that one closes.
        """
        state = self._local()
        with self._lock:
            self._started = True
            state.ensure(self._config.counter_backend)
            if self._refresher is not None and self._refresher.alive():
                return
            with state.refresher_lock:
                if state.refreshing is not None and state.refreshing is not self:
                    state.standby[self._owner] = self
                    return
                self._refresher = Refresher(state, self._owner, self._config)
                state.refreshing = self
                self._refresher.start()

    def close(self) -> None:
        """Stop this process's refresher and give up leadership; the shared state stays.

        Once this returns, nothing this object started writes the table any more, even if its
        refresher thread is still inside a slow refresh (its leader epoch was revoked).
        """
        if self._pid != _getpid():
            self._started = False
            return
        state = self._state
        with self._lock:
            self._started = False
            refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.stop()
        if state is None:
            return
        att = state.att
        state.election.resign(self._owner, att.seg if att is not None else None)
        successor: Startable | None = None
        with state.refresher_lock:
            state.standby.pop(self._owner, None)
            if state.refreshing is self:
                state.refreshing = None
                if state.standby:
                    _owner, successor = state.standby.popitem()
        if successor is not None:
            successor.start()  # the next fleet of this namespace takes the refresher over

    def __enter__(self) -> SharedFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_leader(self) -> bool:
        """True if this object's refresher (in this process) holds the leadership."""
        if self._pid != _getpid():
            return False
        state = self._state
        return state is not None and state.election.owner_is(self._owner)

    # -- the table ------------------------------------------------------------------------------

    def nodes(self) -> tuple[str, ...]:
        """The published node table; () if none yet. Attaches lazily, starts no thread."""
        nodes = self._att().reader.read()
        if nodes and self._identity_pid != _getpid():
            self._check_identity()
        return nodes

    def pick_path(self) -> PickPath | None:
        """This process's :class:`PickPath` once attached and a table was seen (so the identity
        check already ran in this process); None otherwise (use the methods)."""
        pid = _getpid()
        state = self._state
        if self._pid != pid or state is None or self._identity_pid != pid:
            return None
        att = state.att
        if att is None or state.stale:
            return None
        return PickPath(state, att, pid)

    def _check_identity(self) -> None:
        """Once per process, when a table is first seen: warn if the leader that refreshes and
        probes it runs with other options than ours (an explicit namespace shared by Helpers
        that disagree; a default namespace includes every such option, so it cannot)."""
        self._identity_pid = _getpid()
        if not self._config.identity:
            return
        differing = self.identity_differences()
        key = (self._identity_pid, self.shm_dir, self.namespace)
        if differing and key not in _identity_warned:
            _identity_warned.add(key)
            log.warning(
                "namespace %r is shared with a Helper whose options differ in: %s. Its leader "
                "refreshes and probes the table with its own options, so this process's values "
                "of these options have no effect; give both the same options, or different "
                "namespaces", self.namespace, ", ".join(differing),
            )

    @property
    def generation(self) -> int:
        return self._att().reader.generation

    def table_note(self) -> str:
        """The note published with the current table ("" if none): the refresh result's
        ``note`` (discovery: which scope the nodes are for)."""
        return self._att().reader.note()

    def empty_reason(self) -> str | None:
        """Why the published table is empty, when the refresher published it empty on purpose
        (its note, e.g. "no live node in rack 'r9' ..."); None otherwise."""
        reader = self._att().reader
        if reader.read():
            return None
        return reader.note() or None

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]:
        """start(), then wait up to ``timeout`` for a non-empty table; returns what is there.

        Returns early (with the empty table) once a refresh attempt made after the call began
        has failed: waiting out the timeout would only delay the caller's own error (a TLS or
        DNS misconfiguration, say), and the caller has seeds to fall back to. Also returns at
        once (empty) when the table was published empty on purpose (see :meth:`empty_reason`).
        """
        self.start()
        deadline = time.monotonic() + timeout
        attempts_before = self.stats().refresh_attempts
        delay = 0.001
        while True:
            nodes = self.nodes()
            if nodes or time.monotonic() >= deadline or self.empty_reason() is not None:
                return nodes
            if delay >= 0.02:
                st = self.stats()
                if st.refresh_attempts > attempts_before and st.consecutive_refresh_failures:
                    return nodes
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.02)

    def refresh_now(self, timeout: float = 5.0) -> tuple[str, ...]:
        """Refresh the table now, through the host's leader, and return it.

        Adds 1 to the segment's request word and wakes this process's refresher; the leader
        (this process's refresher, another process's, or a follower that takes over a wedged
        leader) answers at once, bypassing its backoff. Honours ``timeout`` in every process,
        the leader included (the refresh runs in the refresher thread, never in the caller).

        Raises the callback's own exception when this process's refresher ran the failed
        attempt (``ValueError`` for a bad node list), :class:`DiscoveryError` with the leader's
        error text when another process did, and :class:`DiscoveryError` when no refresh
        answered within ``timeout`` (naming the table's age): never a stale table silently.
        """
        state = self._local()
        if self._config.refresh is not None:
            self.start()
        att = self._att()
        words = att.seg.words
        mine = att.ops.fetch_add(layout.REQUEST_OFF, 1) + 1
        state.wake()
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            served = int(words[_W(layout.REQUEST_SERVED_OFF)])
            if (served - mine) % (1 << 64) < (1 << 63):  # served >= mine, wrap-safe
                if words[_W(layout.FAILURES_OFF)]:
                    failure = state.last_failure
                    if failure is not None and (failure[0] - mine) % (1 << 64) < (1 << 63):
                        raise failure[1]
                    raise DiscoveryError(
                        f"the refresh leader failed to refresh {self.segment_name}: "
                        f"{read_error(att.seg.mm, words) or 'unknown error'}"
                    )
                return att.reader.read()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)
        st = self.stats()
        age = "never refreshed" if st.last_refresh_age_s is None else (
            f"last refreshed {st.last_refresh_age_s:.1f}s ago")
        raise DiscoveryError(
            f"no refresh of {self.segment_name} answered within {timeout:g}s (table {age}; "
            f"leader pid {st.leader_pid}, heartbeat age "
            f"{'n/a' if st.leader_heartbeat_age_s is None else f'{st.leader_heartbeat_age_s:.1f}s'}"
            ")"
        )

    # -- the counter and health -----------------------------------------------------------------

    def advance(self) -> int:
        """Shared counter fetch-and-add 1; returns the previous value. One call per attempt."""
        if self._pid == _getpid():
            state = self._state
            att = state.att if state is not None else None
            if att is not None and not state.stale:  # type: ignore[union-attr]
                return att.ops.advance()
        return self._att().ops.advance()

    def refresh_soon(self) -> bool:
        """Ask the host's leader for a table refresh at its next poll, without waiting.

        Routing calls it when an attempt could not reach a node (refused, reset, timed out):
        if the cluster already dropped that node (decommissioned, or a killed node its peers
        noticed), the next table leaves it out at once instead of after up to
        ``refresh_interval`` more attempts to it. Node health is not touched (its thresholds
        stay the spec's); this is topology only. Coalesced host-wide: nothing is added while a
        request is pending or when the last refresh attempt started less than
        ``poll_interval`` ago, so a burst of failures costs at most one extra ``/localnodes``
        poll per poll interval. Returns True if a request was added.
        """
        att = self._att()
        words = att.seg.words
        if words[_W(layout.REQUEST_OFF)] != words[_W(layout.REQUEST_SERVED_OFF)]:
            return False  # one is pending: it will answer for this failure too
        last = int(words[_W(layout.LAST_ATTEMPT_OFF)])
        if 0 <= time.monotonic_ns() - last < self._config.poll_interval * 1e9:
            return False
        att.ops.fetch_add(layout.REQUEST_OFF, 1)
        self._local().wake()
        return True

    def note_activity(self) -> None:
        """An attempt that did not advance the counter (an affinity plan): still traffic, so
        the refresher keeps ``refresh_interval`` instead of ``idle_refresh_interval``."""
        self._att().seg.words[_ACTIVITY] = time.monotonic_ns()

    def rotation(self) -> int:
        """The segment's random rotation (written once at creation): routing picks
        ``(advance() + rotation()) mod n``, so the hosts of a fleet deployed together start on
        different nodes. ``advance()`` and the stats keep counting picks from 0."""
        return int(self._att().seg.words[_ROTATION])

    @property
    def counter(self) -> int:
        """The shared counter's current value (no increment)."""
        return int(self._att().seg.words[_COUNTER])

    def record_pick(self, node: str) -> None:
        """Count a pick of ``node`` in its shared health entry (stats only)."""
        # stats only: skipped while a stopped process holds the flock counter lock
        try:  # noqa: SIM105 - no context manager on the hot path
            self._att().health.record_pick(node)
        except CounterLockBusy:
            pass

    def report_failure(self, node: str, generation: int | None = None) -> Status | None:
        """A traffic attempt to ``node`` failed before a final HTTP response (host-wide).

        With the flock backend and its lock held by a stopped process, the report is dropped
        (logged): the call's own retry still avoids the node, and a call never fails for it.
        """
        try:
            return self._att().health.report_failure(node, generation)
        except CounterLockBusy as exc:
            log.warning("failure of %s not shared: %s", node, exc)
            return None

    def report_success(self, node: str, generation: int | None = None) -> Status | None:
        """A traffic attempt to ``node`` got a final, not health-neutral, HTTP response."""
        try:
            return self._att().health.report_success(node, generation)
        except CounterLockBusy as exc:
            log.warning("success on %s not shared: %s", node, exc)
            return None

    def health_view(self) -> Mapping[str, Eligibility]:
        """node -> (state, generation) for the table's nodes; {} when all are ACTIVE by
        definition (node health off). One load while nothing changes."""
        att = self._att()
        return att.health.view(att.reader.read())

    def health_view_of(self, nodes: tuple[str, ...]) -> Mapping[str, Eligibility]:
        """Like :meth:`health_view` for another node list (the bootstrap seeds)."""
        return self._att().health.view(nodes)

    def quarantined(self) -> dict[str, int]:
        """Nodes of the table out of the ordinary rotation (QUARANTINED or DOWN) -> generation."""
        return {n: g for n, (st, g) in self.health_view().items() if st is not State.ACTIVE}

    def node_status(self, node: str) -> Status:
        return self._att().health.status(node)

    def identity_differences(self) -> list[str]:
        """Options of this fleet that differ from those the segment's leader recorded."""
        att = self._att()
        return identity.differences(
            self._config.identity, identity.read(att.seg.mm, att.seg.words)
        )

    # -- load (fleet/load.py) ---------------------------------------------------------------------

    def _load_of(self, att: Attachment) -> Load:
        cached = self._load
        if cached is not None and cached[0] is att:
            return cached[1]
        with self._lock:
            cached = self._load
            if cached is None or cached[0] is not att:
                cached = self._load = (att, Load(att.seg.words, att.ops))
            return cached[1]

    def begin_attempt(self, node: str) -> Attempt:
        """An attempt to ``node`` starts: count it in flight host-wide until :meth:`end_attempt`.

        A few CAS on the mapping; a node without a health entry is not counted.
        """
        att = self._att()
        load = self._load_of(att)
        try:
            index = att.health.slot(node, create=True)
        except CounterLockBusy:  # flock lock held by a stopped process: stats only, untracked
            index = None
        return load.begin(index)

    def end_attempt(self, attempt: Attempt, answered: bool) -> None:
        """The attempt is over; ``answered`` (any HTTP answer) adds its latency to the node's."""
        attempt.finish(answered)

    def node_load(self, node: str) -> tuple[int, float | None]:
        """(attempts in flight host-wide, latency estimate in ms decayed since its last sample,
        None before the first answer) of ``node``, for adaptive balancing."""
        att = self._att()
        index = att.health.slot(node, create=False)
        if index is None:
            return 0, None
        load = self._load_of(att)
        return load.in_flight(index), load.latency_ms(index)

    # -- diagnostics ----------------------------------------------------------------------------

    def stats(self) -> FleetStats:
        att = self._att()
        return snapshot(
            namespace=self.namespace,
            base=att.seg.base,
            shm_dir=self.shm_dir,
            mm=att.seg.mm,
            words=att.seg.words,
            self_leads=self._local().election.leading,
            local_picks=att.ops.local_picks,
        )

    @property
    def attachment(self) -> Attachment:
        """Internal objects (tests, benchmarks). Not a stable API."""
        return self._att()


def list_fleets(shm_dir: str = segment.DEFAULT_SHM_DIR) -> list[FleetStats]:
    """Stats of every segment of this euid in ``shm_dir``; read-only, never creates anything.

    A segment that cannot be read (corrupt header, foreign owner) is listed with ``problem``
    set, so ``status`` shows it instead of hiding it."""
    result = []
    for base in segment.list_bases(shm_dir):
        ro = segment.open_read_only(shm_dir, base)
        if ro is None:  # listed with its problem, never dropped
            result.append(unusable(shm_dir, base))
            continue
        local = existing_local_state(shm_dir, base)
        result.append(
            snapshot(
                namespace=None,
                base=base,
                shm_dir=shm_dir,
                mm=ro.mm,
                words=ro.words,
                self_leads=local is not None and local.election.leading,
            )
        )
    return result


def cleanup(namespace: str | None = None, shm_dir: str = segment.DEFAULT_SHM_DIR) -> list[str]:
    """Unlink unused segments (all of this euid if ``namespace`` is None); returns the names
    removed. A segment is kept while any other process is attached, or while a refresher of this
    process runs on it (stop it with ``close()`` first). Lock files of removed segments go too."""
    bases = [segment.base_name(namespace)] if namespace is not None else segment.list_bases(shm_dir)
    return ["/" + base for base in bases if _remove(base, shm_dir) is None]


def cleanup_segment(name: str, shm_dir: str = segment.DEFAULT_SHM_DIR) -> str | None:
    """Unlink one segment by its name as :class:`FleetStats` gives it (``segment_name``,
    ``/rrlb...``), whatever its content: the way to remove a segment whose header is corrupt or
    of another format, whose namespace cannot be read back. Same rules as :func:`cleanup`.

    Returns None if removed, else why it was kept (``a process is attached``...).

    Raises:
        ValueError: ``name`` is not one of this user's segment names in ``shm_dir``.
    """
    base = name[1:] if name.startswith("/") else name
    if base not in segment.list_bases(shm_dir):
        raise ValueError(f"{name!r} is not a segment of this user in {shm_dir}")
    return _remove(base, shm_dir)


def _remove(base: str, shm_dir: str) -> str | None:
    """Remove ``base`` if unused: None if removed, else why it was kept."""
    local = existing_local_state(shm_dir, base)
    if local is not None and local.running:
        log.info("not removing /%s: a refresher of this process runs on it", base)
        return "a refresher of this process runs on it"
    try:
        kept = segment.try_remove(shm_dir, base)
    except (OSError, SharedStateError) as exc:
        log.warning("could not clean up /%s: %s", base, exc)
        return f"could not clean up: {exc}"
    if kept is None and local is not None:
        local.election.forget()
        local.stale = True  # the next use in this process re-attaches
    return kept
