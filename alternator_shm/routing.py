"""Pick the node for one request attempt: a base plan, then node health at the last moment.

Every attempt (the first and each retry) advances the host-wide counter exactly once, so the
round-robin stays exact across every process on the host. A call's attempt is chosen in two
steps, the seam the cross-language query-plan spec draws:

1. **base plan** (:func:`round_robin_plan`): every node of the table once, in the order this
   attempt should prefer -- the ACTIVE nodes rotated to the counter's position, then the others.
   (Rotating the active nodes alone keeps the split exact while some node is out: rotating the
   whole table would hand a skipped node's turns to its neighbour.) Another planner (key
   affinity, say) only has to produce another ordered candidate list;
2. **health filter** (:func:`select`), applied to the plan at the final selection: the first
   untried ACTIVE node; else the first untried QUARANTINED node; DOWN nodes never. Once every
   eligible node was tried by the call, a new cycle starts over the plan. With only DOWN nodes
   left the attempt fails locally with :class:`NoLiveNodesError`.

Skipping a node does not advance the counter, which keeps the spread over the ACTIVE nodes
exact (max - min <= 1) while the set of ACTIVE nodes stays the same. The state and generation
read at selection are remembered for the attempt (a context variable, so threads and asyncio
tasks each see their own) and reported with its outcome, so a late answer from before a node
went DOWN cannot touch it afterwards.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from alternator_shm import balancing as _balancing
from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.errors import NoLiveNodesError
from alternator_shm.fleet import events as _events
from alternator_shm.fleet import layout as _layout
from alternator_shm.fleet.health import State

if TYPE_CHECKING:
    from alternator_shm.fleet.shared import PickSnapshot

__all__ = ["FleetView", "LoadView", "Router", "active_nodes", "round_robin_plan", "select"]

_log = logging.getLogger(__name__)

# Words a PickSnapshot is valid for (fleet.shared.PickSnapshot; byte offsets in fleet.layout).
_PUBLISH_WORD = _layout.word_index(_layout.PUBLISH_OFF)
_HEALTH_VERSION_WORD = _layout.word_index(_layout.HEALTH_VERSION_OFF)

Eligibility = tuple[State, int]
_HEALTHY: Eligibility = (State.ACTIVE, 0)

# (node, generation) of the attempt this thread / task chose last.
_ATTEMPT: ContextVar[tuple[str, int] | None] = ContextVar("alternator_shm_attempt", default=None)


class _PickPath(Protocol):
    """Bound per-attempt calls a fleet may offer (``pick_path()``: fleet.shared.PickPath)."""

    @property
    def revoked(self) -> bool: ...

    @property
    def pid(self) -> int: ...

    @property
    def state(self) -> Any: ...

    @property
    def att(self) -> object: ...

    def usable(self) -> bool: ...

    def revoke(self) -> None: ...

    def read(self) -> tuple[str, ...]: ...

    def view(self, nodes: tuple[str, ...]) -> Mapping[str, Eligibility]: ...

    def advance(self) -> int: ...

    def record_pick(self, node: str) -> None: ...

    @property
    def rotation(self) -> int: ...

    @property
    def token(self) -> int: ...

    @property
    def words(self) -> memoryview: ...

    @property
    def snap(self) -> PickSnapshot | None: ...

    def alive(self) -> int: ...

    def resnap(self) -> PickSnapshot | None: ...


class FleetView(Protocol):
    """What routing needs from the shared fleet state (see :mod:`alternator_shm.fleet`)."""

    def start(self) -> None: ...

    def nodes(self) -> tuple[str, ...]: ...

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]: ...

    def advance(self) -> int: ...

    def record_pick(self, node: str) -> None: ...

    def report_failure(self, node: str, generation: int | None = None) -> object: ...

    def report_success(self, node: str, generation: int | None = None) -> object: ...

    def health_view_of(self, nodes: tuple[str, ...]) -> Mapping[str, Eligibility]: ...

    def empty_reason(self) -> str | None: ...


def active_nodes(
    nodes: tuple[str, ...], health: Mapping[str, Eligibility]
) -> tuple[str, ...]:
    """The ACTIVE nodes of ``nodes``, in table order (``nodes`` itself when all are)."""
    if not health:
        return nodes
    active = tuple(n for n in nodes if health.get(n, _HEALTHY)[0] is State.ACTIVE)
    return nodes if len(active) == len(nodes) else active


def round_robin_plan(
    nodes: tuple[str, ...], position: int, active: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """The base plan of round-robin for the counter value ``position``: the ``active`` nodes
    (:func:`active_nodes`; default all) rotated to ``position``, then the others."""
    k = position % len(nodes)
    if active is None or active is nodes or not active:
        return nodes[k:] + nodes[:k]
    j = position % len(active)
    rest = tuple(n for n in nodes[k:] + nodes[:k] if n not in active)
    return active[j:] + active[:j] + rest


def select(
    plan: Sequence[str], tried: Collection[str], health: Mapping[str, Eligibility]
) -> tuple[str, int]:
    """The node for this attempt and the generation it must report (see the module doc).

    ``health`` maps nodes to (state, generation); a node missing from it is ACTIVE (an empty
    mapping is node health turned off). ``tried`` lists this call's earlier attempts.
    """
    if not tried:
        fallback: tuple[str, int] | None = None
        for node in plan:
            state, generation = health.get(node, _HEALTHY)
            if state is State.ACTIVE:
                return node, generation
            if state is State.QUARANTINED and fallback is None:
                fallback = (node, generation)
        if fallback is not None:
            return fallback
        raise NoLiveNodesError(
            f"every node is down ({len(plan)} in the table); waiting for probes to recover one"
        )
    eligible = [(n, health.get(n, _HEALTHY)) for n in plan]
    eligible = [(n, e) for n, e in eligible if e[0] is not State.DOWN]
    if not eligible:
        raise NoLiveNodesError(
            f"every node is down ({len(plan)} in the table); waiting for probes to recover one"
        )
    counts = Counter(tried)
    cycle = min(counts.get(n, 0) for n, _ in eligible)  # attempts per node in earlier cycles
    fresh = [(n, e) for n, e in eligible if counts.get(n, 0) == cycle]
    for node, (state, generation) in fresh:
        if state is State.ACTIVE:
            return node, generation
    node, (_state, generation) = fresh[0]
    return node, generation


def attempt_generation(node: str) -> int | None:
    """The generation captured when this thread / task last chose ``node``; None if unknown."""
    last = _ATTEMPT.get()
    return last[1] if last is not None and last[0] == node else None

    def empty_reason(self) -> str | None: ...


class LoadView(Protocol):
    """Host-wide per-node load (implemented by :class:`alternator_shm.fleet.SharedFleet`)."""

    def begin_attempt(self, node: str) -> Any: ...

    def end_attempt(self, attempt: Any, answered: bool) -> None: ...

    def node_load(self, node: str) -> tuple[int, float | None]: ...


class Router:
    """Chooses nodes for attempts and feeds connection outcomes back into shared health.

    ``bootstrap`` is the seed URL list, used only while no table has ever been published on the
    host (the very first request before discovery answered), so a request is never refused just
    because the refresher has not finished its first poll.

    A table published empty on purpose (discovery's verdict "the configured scope lists no live
    node", see :meth:`FleetView.empty_reason`) is an answer: with ``fallback=False`` every call
    raises :class:`NoLiveNodesError` naming the scope and sends nothing.

    ``scope`` names a configured datacenter / rack scope (None: the whole cluster). With
    ``fallback=False`` and a scope the seeds are never a bootstrap: their datacenter and rack are
    unknown until discovery answers, so a call sent to them could leave the scope; it raises
    :class:`NoLiveNodesError` instead.
    """

    def __init__(
        self,
        fleet: FleetView,
        bootstrap: Sequence[str],
        *,
        first_table_timeout: float = 5.0,
        fallback: bool = True,
        scope: str | None = None,
        load: LoadView | None = None,
        balancing: str = "round_robin",
    ) -> None:
        if balancing not in _balancing.BALANCING_MODES:
            raise ValueError(f"balancing must be one of {_balancing.BALANCING_MODES}")
        if balancing == "adaptive" and load is None:
            raise ValueError("adaptive balancing needs a load view")
        self._fleet = fleet
        self._scope_fallback = fallback
        self._scope = scope
        self._load = load
        self._adaptive = balancing == "adaptive"
        # Seeds lie outside a strict (fallback=False) datacenter / rack scope as far as we know.
        self._bootstrap = tuple(bootstrap) if fallback or scope is None else ()
        self._first_table_timeout = first_table_timeout
        self._started_pid = -1
        # (pid, deadline, done): the process's one wait for its first table, shared by every
        # thread that starts before it ends (one attribute: threads see a consistent triple)
        self._first_wait: tuple[int, float, bool] = (-1, 0.0, False)
        # (health view, table, its active nodes): recomputed only when either object changes
        self._active: tuple[object, object, tuple[str, ...]] = (None, None, ())
        # the fleet's bound per-attempt calls (fleet.shared.PickPath), when it offers them
        self._path: _PickPath | None = None

    def _table(self) -> tuple[str, ...]:
        pid = _getpid()
        if self._started_pid != pid:
            # First request in this process: join the election. Never earlier, so a pre-fork
            # master that only builds clients starts no thread.
            self._fleet.start()
            self._started_pid = pid
        nodes = self._fleet.nodes()
        if nodes:
            return nodes
        self._check_empty_verdict()
        nodes = self._wait_first_table(pid)
        if nodes:
            return nodes
        self._check_empty_verdict()
        if self._bootstrap:
            _log.warning("no node table published yet; routing to the seed nodes",
                         extra=_events.fields("seeds_fallback"))
            return self._bootstrap
        if self._scope is not None and not self._scope_fallback:
            raise NoLiveNodesError(
                f"no live node is known in {self._scope}: discovery has not published a table "
                "yet, and with fallback=False nothing is sent to the seeds (their datacenter "
                "and rack are unknown until discovery answers)"
            )
        raise NoLiveNodesError("no live node is known: discovery has not published a table")

    def _wait_first_table(self, pid: int) -> tuple[str, ...]:
        """Every thread (or task) that starts before the process's first table waits for it,
        up to one deadline per process set by the first of them: a first wave of N threads then
        splits exactly instead of landing on the seed. Once that wait ended without a table
        (timeout, or a failed refresh), later calls go to the seeds at once: if discovery keeps
        failing, calls must not each stall for the timeout."""
        wait_pid, deadline, done = self._first_wait
        if wait_pid != pid:
            deadline = time.monotonic() + self._first_table_timeout
            self._first_wait = (pid, deadline, False)
            done = False
        if done:
            return ()
        left = deadline - time.monotonic()
        nodes = self._fleet.wait_for_nodes(left) if left > 0 else self._fleet.nodes()
        if not nodes:
            self._first_wait = (pid, deadline, True)
        return nodes

    def _check_empty_verdict(self) -> None:
        reason = self._fleet.empty_reason()
        if reason is not None and not self._scope_fallback:
            # a refused call is still demand: the verdict is re-checked every refresh_interval,
            # not every idle_refresh_interval, so a node joining the scope is seen soon
            note = getattr(self._fleet, "note_activity", None)
            if note is not None:
                note()
            raise NoLiveNodesError(
                f"{reason}: no call is sent outside the configured scope (discovery's verdict, "
                "checked again at every refresh)"
            )

    def table_ready(self) -> bool:
        """True if a table is published (non-blocking; the async hooks' readiness check), read
        through the pick path when there is one (the pick that follows reads the same cache)."""
        path = self._path
        if path is not None and path.usable():
            return bool(path.read())
        return bool(self._fleet.nodes())

    def nodes(self) -> tuple[str, ...]:
        """The discovered node table (every node, whatever its health), as routing sees it."""
        return self._table()

    def choose(self, tried: Collection[str], plan: Sequence[str] | None = None) -> str:
        """Return the base URL of the node for this attempt (see the module doc).

        ``plan`` is a call's fixed candidate order (key-route affinity): it replaces the
        round-robin base plan, does not advance the shared counter (so round-robin calls stay
        exactly even among themselves) and goes through the same health filter.
        """
        if not plan and not tried and not self._adaptive:  # adaptive: the full path below
            path = self._path
            if path is not None:
                node = self._choose_fast(path)
                if node is not None:
                    return node
            if self._path is None and self._started_pid == _getpid():
                get_path = getattr(self._fleet, "pick_path", None)
                self._path = get_path() if get_path is not None else None
        if plan:
            # The plan's nodes are table nodes; read it lazily (select stops at its answer).
            node, generation = select(plan, tried, self._fleet.health_view_of(self._table()))
            note = getattr(self._fleet, "note_activity", None)
            if note is not None:
                note()  # no counter advance, but traffic: keep the refresher's active period
        else:
            nodes = self._table()
            health = self._fleet.health_view_of(nodes)
            memo = self._active
            if memo[0] is health and memo[1] is nodes:
                active = memo[2]
            else:
                active = active_nodes(nodes, health)
                self._active = (health, nodes, active)
            rotation = getattr(self._fleet, "rotation", None)  # the segment's random offset
            position = self._fleet.advance() + (rotation() if rotation is not None else 0)
            base = round_robin_plan(nodes, position, active)
            node, generation = select(base, tried, health)
            if self._adaptive:
                node, generation = self._adapt(base, node, generation, tried, health)
        _ATTEMPT.set((node, generation))
        self._fleet.record_pick(node)
        return node

    def _choose_fast(self, path: _PickPath) -> str | None:
        """A first round-robin attempt through ``path``: the same steps as :meth:`choose`
        without a frame per fleet layer. None (nothing advanced) when the slow path must
        decide: no table yet, or the shared state failed (the fleet's own fallback handles it).

        Steady state (:class:`~alternator_shm.fleet.shared.PickSnapshot` still current): the
        fork mark, two word compares, the counter add, an index and the pick add.
        """
        state = path.state  # PickPath.usable(), inlined: one frame less per pick
        if path.revoked or state.att is not path.att or state.stale:
            self._path = None
            return None
        snap = path.snap
        if snap is not None and snap.pick is not None:
            # the C extension: fork mark, both words, counter and pick record in one call
            try:
                i = snap.pick()
            except Exception:  # the methods path reports it (fail-soft, typed)
                path.revoke()
                self._path = None
                return None
            if i >= 0:
                attempt = snap.attempts[i]
                _ATTEMPT.set(attempt)
                return attempt[0]
        if path.alive() != path.token:  # forked since the path was made
            self._path = None
            return None
        try:
            words = path.words
            if (
                snap is None
                or words[_PUBLISH_WORD] != snap.publish
                or words[_HEALTH_VERSION_WORD] != snap.version
            ):
                snap = path.resnap()
                if snap is None:
                    return self._choose_path(path)
            i = (path.advance() + path.rotation) % snap.size
        except Exception:  # the methods path reports it (fail-soft, typed)
            path.revoke()
            self._path = None
            return None
        attempt = snap.attempts[i]
        _ATTEMPT.set(attempt)
        try:
            snap.adders[i]()
        except Exception:  # stats only; the methods path handles the failure
            path.revoke()
            self._path = None
            self._fleet.record_pick(attempt[0])
        return attempt[0]

    def _choose_path(self, path: _PickPath) -> str | None:
        """:meth:`_choose_fast` when no snapshot applies (no ACTIVE node, a node without a
        shared health entry, no table): the general plan and filter, still through ``path``."""
        try:
            nodes = path.read()
            if not nodes:
                return None
            health = path.view(nodes)
            memo = self._active
            if memo[0] is health and memo[1] is nodes:
                active = memo[2]
            else:
                active = active_nodes(nodes, health)
                self._active = (health, nodes, active)
            position = path.advance() + path.rotation
        except Exception:  # the methods path reports it (fail-soft, typed)
            path.revoke()
            self._path = None
            return None
        if active is nodes:  # every node ACTIVE: the plan's head is the answer
            node = nodes[position % len(nodes)]
            generation = health.get(node, _HEALTHY)[1]
        else:
            node, generation = select(round_robin_plan(nodes, position, active), (), health)
        _ATTEMPT.set((node, generation))
        try:
            path.record_pick(node)
        except Exception:  # stats only; the methods path handles the failure
            path.revoke()
            self._path = None
            self._fleet.record_pick(node)
        return node

    def _adapt(
        self,
        base: Sequence[str],
        node: str,
        generation: int,
        tried: Collection[str],
        health: Mapping[str, Eligibility],
    ) -> tuple[str, int]:
        """``balancing="adaptive"``: the selected ACTIVE node, or one of the next ACTIVE untried
        nodes of the plan if clearly cheaper (:mod:`alternator_shm.balancing`)."""
        if health.get(node, _HEALTHY)[0] is not State.ACTIVE:
            return node, generation
        others: list[str] = []
        after = False
        for candidate in base:
            if candidate == node:
                after = True
                continue
            active = health.get(candidate, _HEALTHY)[0] is State.ACTIVE
            if after and active and candidate not in tried:
                others.append(candidate)
                if len(others) == _balancing.CANDIDATES:
                    break
        assert self._load is not None
        chosen = _balancing.better_than(node, others, self._load.node_load)
        if chosen == node:
            return node, generation
        return chosen, health.get(chosen, _HEALTHY)[1]

    def attempt_started(self, node: str) -> Any:
        """The attempt to ``node`` goes on the wire now; pass the result to
        :meth:`attempt_finished` exactly once."""
        return self._load.begin_attempt(node) if self._load is not None else None

    def attempt_finished(self, attempt: Any, answered: bool) -> None:
        """``answered``: an HTTP answer (any status) came back, so its latency counts."""
        if self._load is not None and attempt is not None:
            self._load.end_attempt(attempt, answered)

    def forget_start(self) -> None:
        """After :meth:`Helper.close`, the next request rejoins the election."""
        self._path = None
        self._started_pid = -1
        self._first_wait = (-1, 0.0, False)

    def report_failure(self, node: str, error: BaseException) -> None:
        """An attempt failed before a final HTTP response: a traffic failure, host-wide."""
        _log.debug("attempt on %s failed: %s", node, type(error).__name__,
                   extra=_events.fields("node_failed", node, error=type(error).__name__))
        self._fleet.report_failure(node, attempt_generation(node))
        refresh_soon = getattr(self._fleet, "refresh_soon", None)
        if refresh_soon is not None:
            # topology only (health keeps the spec's thresholds): if the cluster already
            # dropped the node, the next table leaves it out now (fleet.SharedFleet)
            refresh_soon()

    def report_success(self, node: str) -> None:
        """An attempt got a final HTTP response that is not health-neutral (500/502/503/504
        are, and are not reported at all)."""
        self._fleet.report_success(node, attempt_generation(node))

    def next_node(self) -> str:
        """Advance the shared counter once and return that node, as for a first attempt."""
        return self.choose(())

