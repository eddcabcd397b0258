"""Pick the node for one request attempt.

Every attempt (the first and each retry) advances the host-wide counter exactly once, so the
round-robin stays exact across every process on the host. From the counter's position we walk
forward to the first node that is neither quarantined nor already tried by this call; the walk
itself does not advance the counter, which keeps the spread even when a node is skipped.

When every node is quarantined we still try them, least recently failed first, rather than
failing a call without an attempt: a quarantine is a hint, not a verdict.

With ``balancing="adaptive"`` the node found by the walk may give way to one of the next few
eligible nodes when it is clearly slower or busier (:mod:`alternator_shm.balancing`). Every
attempt, whatever the balancing, is counted in flight host-wide while it is on the wire, and
its latency is recorded when it is answered (:class:`LoadView`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from alternator_shm import balancing as _balancing
from alternator_shm.errors import NoLiveNodesError
from alternator_shm.fleet import events as _events

__all__ = ["FleetView", "LoadView", "Router"]

_log = logging.getLogger(__name__)


class FleetView(Protocol):
    """What routing needs from the shared fleet state (see :mod:`alternator_shm.fleet`)."""

    def start(self) -> None: ...

    def nodes(self) -> tuple[str, ...]: ...

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]: ...

    def advance(self) -> int: ...

    def record_pick(self, node: str) -> None: ...

    def report_failure(self, node: str) -> None: ...

    def report_success(self, node: str) -> None: ...

    def quarantined(self) -> dict[str, int]: ...

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
    """

    def __init__(
        self,
        fleet: FleetView,
        bootstrap: Sequence[str],
        *,
        first_table_timeout: float = 5.0,
        fallback: bool = True,
        load: LoadView | None = None,
        balancing: str = "round_robin",
    ) -> None:
        if balancing not in _balancing.BALANCING_MODES:
            raise ValueError(f"balancing must be one of {_balancing.BALANCING_MODES}")
        if balancing == "adaptive" and load is None:
            raise ValueError("adaptive balancing needs a load view")
        self._fleet = fleet
        self._scope_fallback = fallback
        self._load = load
        self._adaptive = balancing == "adaptive"
        self._bootstrap = tuple(bootstrap)
        self._first_table_timeout = first_table_timeout
        self._started_pid = -1
        # (pid, deadline, done): the process's one wait for its first table, shared by every
        # thread that starts before it ends (one attribute: threads see a consistent triple)
        self._first_wait: tuple[int, float, bool] = (-1, 0.0, False)

    def _table(self) -> tuple[str, ...]:
        pid = os.getpid()
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
            raise NoLiveNodesError(
                f"{reason}: no call is sent outside the configured scope (discovery's verdict, "
                "checked again at every refresh)"
            )

    def nodes(self) -> tuple[str, ...]:
        """The discovered node table (every node, whatever its health), as routing sees it."""
        return self._table()

    def choose(self, tried: Collection[str], plan: Sequence[str] | None = None) -> str:
        """Return the base URL of the node for this attempt.

        ``plan`` is a call's fixed candidate order (key-route affinity); without one the
        attempt takes the next round-robin position.
        """
        if plan:
            preferred = self._from_plan(plan, tried)
            self._fleet.record_pick(preferred)
            return preferred
        nodes = self._table()
        start = self._fleet.advance()
        count = len(nodes)
        quarantined = self._fleet.quarantined()
        chosen: str | None = None
        for step in range(count):
            candidate = nodes[(start + step) % count]
            if candidate not in tried and candidate not in quarantined:
                chosen = candidate
                if self._adaptive:
                    chosen = self._adapt(nodes, start + step, tried, quarantined)
                break
        if chosen is None:
            chosen = self._fallback(nodes, start, tried, quarantined)
        self._fleet.record_pick(chosen)
        return chosen

    def _adapt(
        self, nodes: tuple[str, ...], at: int, tried: Collection[str], quarantined: dict[str, int]
    ) -> str:
        """The walk's node ``nodes[at]``, or one of the next eligible nodes if clearly cheaper."""
        count = len(nodes)
        others: list[str] = []
        for step in range(1, count):
            candidate = nodes[(at + step) % count]
            if candidate not in tried and candidate not in quarantined:
                others.append(candidate)
                if len(others) == _balancing.CANDIDATES:
                    break
        assert self._load is not None
        return _balancing.better_than(nodes[at % count], others, self._load.node_load)

    def attempt_started(self, node: str) -> Any:
        """The attempt to ``node`` goes on the wire now; pass the result to
        :meth:`attempt_finished` exactly once."""
        return self._load.begin_attempt(node) if self._load is not None else None

    def attempt_finished(self, attempt: Any, answered: bool) -> None:
        """``answered``: an HTTP answer (any status) came back, so its latency counts."""
        if self._load is not None and attempt is not None:
            self._load.end_attempt(attempt, answered)

    def _from_plan(self, plan: Sequence[str], tried: Collection[str]) -> str:
        """First plan node not tried in this cycle, healthy ones before quarantined ones.

        The plan never changes during a call (query-plan.md): once every node of it has been
        tried, a new cycle starts over the same order. The shared counter is not advanced, so
        round-robin calls stay exactly even among themselves.
        """
        # Only membership and length are needed up front, so a lazily computed plan is read
        # no further than the node returned.
        cycle: set[str] = set()
        for node in tried:
            if node in plan:
                cycle.add(node)
                if len(cycle) == len(plan):
                    cycle.clear()
        quarantined = self._fleet.quarantined()
        fallback: str | None = None
        for node in plan:
            if node not in cycle:
                if node not in quarantined:
                    return node
                if fallback is None:
                    fallback = node
        assert fallback is not None  # the cycle never holds every plan node
        return fallback

    @staticmethod
    def _fallback(
        nodes: tuple[str, ...], start: int, tried: Collection[str], quarantined: dict[str, int]
    ) -> str:
        untried = [n for n in nodes if n not in tried]
        if untried:
            # Only quarantined nodes are left untried: least recently failed first.
            return min(untried, key=lambda n: (quarantined.get(n, 0), n))
        # More attempts than nodes: go around again, healthy nodes first.
        count = len(nodes)
        for step in range(count):
            candidate = nodes[(start + step) % count]
            if candidate not in quarantined:
                return candidate
        return min(nodes, key=lambda n: (quarantined.get(n, 0), n))

    def forget_start(self) -> None:
        """After :meth:`Helper.close`, the next request rejoins the election."""
        self._started_pid = -1
        self._first_wait = (-1, 0.0, False)

    def report_failure(self, node: str, error: BaseException) -> None:
        _log.warning("node %s failed (%s); quarantined for every process on this host", node,
                     type(error).__name__,
                     extra=_events.fields("node_failed", node, error=type(error).__name__))
        self._fleet.report_failure(node)

    def report_success(self, node: str) -> None:
        if node in self._fleet.quarantined():
            self._fleet.report_success(node)

    def next_node(self) -> str:
        """Advance the shared counter once and return that node, as for a first attempt."""
        return self.choose(())

