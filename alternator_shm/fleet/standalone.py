"""``StandaloneFleet``: the process-local twin of :class:`~alternator_shm.fleet.SharedFleet`.

Used when this process balances alone (``shared="off"``, or ``"auto"`` while the host's shared
state cannot be had; see :mod:`~alternator_shm.fleet.failsoft`). Same interface and the same
rules as the shared fleet, kept in process memory: its own node table (validated by
:func:`table.validate_nodes`, like a publish), its own round-robin counter, its own refresher
thread, which always "leads" because there is nobody to elect, and its own node health: the very
same :class:`~alternator_shm.fleet.health.Health` (the spec's ACTIVE / QUARANTINED / DOWN
machine, thresholds, generations, admission quarantine) over a private buffer with the segment's
entry layout, probed by the same :class:`~alternator_shm.fleet.probes.Prober` on the same
schedule (``probe_period``, the paced recovery sequence). The refresh schedule is the shared
refresher's: ``refresh_interval`` while the counter moves, ``idle_refresh_interval`` while it
does not, exponential backoff after failures (``min(backoff_max, backoff_initial * 2**(n-1))``),
the last good table kept meanwhile.

Nothing here touches shared memory, so nothing here can raise :class:`SharedStateError`.
Fork-aware like the shared fleet: a child keeps the parent's last table (a valid starting
point), gets fresh locks, and restarts the refresher on its first ``start()``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.fleet import layout, table
from alternator_shm.fleet.counter import LocalWords
from alternator_shm.fleet.health import (
    Eligibility,
    Health,
    HealthSettings,
    State,
    Status,
    health_enabled,
    node_counters,
    private_words,
    slots_used,
)
from alternator_shm.fleet.load import Attempt, LocalAttempt, LocalLoad
from alternator_shm.fleet.probes import Prober
from alternator_shm.fleet.schedule import DEFAULT, Schedule
from alternator_shm.fleet.stats import FleetStats, node_stats

__all__ = ["StandaloneFleet"]

log = logging.getLogger("alternator_shm.fleet.standalone")



def _age(now: int, stamp: int) -> float | None:
    return None if stamp == 0 else max(0.0, (now - stamp) / 1e9)


class StandaloneFleet:
    """A fleet of one process. Thread-safe; construction starts nothing.

    ``refresh`` returns the node list (called by this object's refresher thread, or inline by
    :meth:`refresh_now`); ``probe`` answers whether a node returned HTTP 200 to a direct probe
    (run by this object's :class:`Prober`, as the shared leader's). ``health`` turns node health
    on, as for :class:`SharedFleet` (None: every node is ACTIVE and nothing is probed).
    Intervals in seconds.
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
        health: HealthSettings | None = None,
        backoff_initial: float | None = DEFAULT.backoff_initial,
        backoff_max: float = DEFAULT.backoff_max,
        reason: str | None = None,
    ) -> None:
        schedule = Schedule(
            refresh_interval, idle_refresh_interval, poll_interval, backoff_initial, backoff_max
        )
        self.namespace = namespace
        self.reason = reason  # why this process balances alone (FleetStats.mode_reason)
        self._refresh = refresh
        self._probe = probe
        self._refresh_interval = refresh_interval
        self._idle_interval = idle_refresh_interval
        self._poll = poll_interval
        self.health_settings = health
        # The health entries: the segment's layout in this process's memory (fleet/health.py
        # owns it); kept across a fork, like the table (a valid starting point for the child).
        self._health_words = private_words()
        self._prober = self._new_prober()
        self._backoff_initial = schedule.first_backoff
        self._backoff_max = backoff_max
        # The table: one attribute holding (generation, nodes, note), so readers see one
        # consistent triple. The note is the refresh result's (see table.validate_note).
        self._table: tuple[int, tuple[str, ...], str] = (0, (), "")
        self._counter = 0
        self._counter_at_refresh = 0
        self._activity = False  # an attempt that did not advance the counter (affinity)
        self._load = LocalLoad()  # in flight and latency per node (resets itself after a fork)
        self._last_attempt_ns = 0
        self._last_success_ns = 0
        self._heartbeat_ns = 0
        self._since_ns = 0
        self._failures = 0
        self._refreshes = 0
        self._attempts = 0
        self._error: str | None = None
        self._started = False
        self._new_process_state()

    def _new_process_state(self) -> None:
        # Locks and the thread never cross a fork: a child starts with fresh ones.
        self._pid = _getpid()
        self._lock = threading.Lock()  # the counter
        # A new Health over the same entries: fresh locks and caches in a fork child.
        self._health = Health(self._health_words, LocalWords(self._health_words),
                              self.health_settings)
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _check_fork(self) -> None:
        if self._pid != _getpid():
            started = self._started
            self._new_process_state()
            if started:
                self.start()

    def __repr__(self) -> str:
        return f"StandaloneFleet({self.namespace!r})"

    def _new_prober(self) -> Prober | None:
        settings = self.health_settings
        probe = self._probe
        return Prober(probe, settings) if probe is not None and settings is not None else None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's refresher thread (idempotent, fork-aware)."""
        self._check_fork()
        with self._refresh_lock:
            self._started = True
            if self._thread is not None and self._thread.is_alive():
                return
            if self._refresh is None:
                return
            self._stop = threading.Event()
            self._since_ns = time.monotonic_ns()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), daemon=True,
                name=f"alternator-shm-local-refresher-{self.namespace}",
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the refresher thread; the table stays (a later ``start()`` resumes)."""
        self._started = False
        if self._pid != _getpid():
            return
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._prober is not None:
            # A closed Prober stays closed: a later start() (the next local episode) probes
            # with a fresh one; late answers of the old one are ignored.
            self._prober.close()
            self._prober = self._new_prober()

    @property
    def is_leader(self) -> bool:
        """True while this object's refresher runs in this process (it has no rival)."""
        thread = self._thread
        return self._pid == _getpid() and thread is not None and thread.is_alive()

    # -- the table ------------------------------------------------------------------------------

    def nodes(self) -> tuple[str, ...]:
        """The current node table; () until the first refresh succeeded."""
        return self._table[1]

    @property
    def generation(self) -> int:
        return self._table[0]

    def table_note(self) -> str:
        """The note of the current table ("" if none), as :meth:`SharedFleet.table_note`."""
        return self._table[2]

    def empty_reason(self) -> str | None:
        """Why the table is empty when the refresh result said so (its note); else None."""
        _generation, nodes, note = self._table
        return None if nodes else (note or None)

    def forget_health(self) -> None:
        """Start a new local episode with no health history (as a restarted client does,
        node-health spec): what an earlier episode saw (nodes DOWN back then) may be long
        wrong, and its probes, one period apart, would keep healthy nodes out meanwhile."""
        with self._refresh_lock:
            self._health_words.cast("B")[:] = bytes(len(self._health_words) * 8)
            self._health = Health(self._health_words, LocalWords(self._health_words),
                                  self.health_settings)

    def seed_table(self, nodes: Sequence[str]) -> None:
        """Adopt a table known elsewhere (the host's last one: fresher than ours, if we have one
        from an earlier episode) instead of starting from nothing. Ignores an invalid list."""
        if not nodes:
            return
        try:
            valid = table.validate_nodes(nodes)
        except ValueError:
            return
        with self._refresh_lock:
            generation, current, _note = self._table
            if valid != current:
                self._health.admit(valid)  # admission quarantine; the refresher probes them
                self._table = (generation + 1, valid, "")
                self._health.collect(valid)

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]:
        """start(), then wait up to ``timeout`` for a non-empty table; returns what is there.

        Like the shared fleet, returns early (empty) once a refresh attempt made after the call
        began has failed: the caller has seeds to fall back to.
        """
        self.start()
        deadline = time.monotonic() + timeout
        attempts_before = self._attempts
        delay = 0.001
        while True:
            nodes = self._table[1]
            if nodes or time.monotonic() >= deadline or self.empty_reason() is not None:
                return nodes
            if self._attempts > attempts_before and self._failures:
                return nodes
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.02)

    def refresh_now(self, timeout: float = 5.0) -> tuple[str, ...]:
        """Refresh inline and return the new table; re-raises the callback's exception
        (``ValueError`` for a result that is not a valid non-empty node list).

        ``timeout`` bounds only the wait for a refresh already running in another thread;
        the callback bounds its own network time (the Helper's discovery deadline).
        """
        self._check_fork()
        if self._refresh is None:
            return self._table[1]
        if not self._refresh_lock.acquire(timeout=max(0.0, timeout)):
            log.warning("a refresh of %s is still running after %.1fs; returning the current "
                        "table", self.namespace, timeout)
            return self._table[1]
        try:
            return self._refresh_locked()
        finally:
            self._refresh_lock.release()

    def _refresh_locked(self) -> tuple[str, ...]:
        assert self._refresh is not None
        self._last_attempt_ns = time.monotonic_ns()
        counter_now = self._counter
        try:
            result = self._refresh()
            note = table.validate_note(getattr(result, "note", ""))
            nodes = table.validate_nodes(result, note)
        except BaseException as exc:
            self._failures += 1
            self._attempts += 1
            self._error = f"{type(exc).__name__}: {exc}"
            log.log(
                logging.WARNING if self._failures == 1 or self._failures % 10 == 0
                else logging.DEBUG,
                "refresh of %s (process-local) failed (%d in a row), keeping the last table: %s",
                self.namespace, self._failures, exc,
            )
            raise
        generation, current, current_note = self._table
        if (nodes, note) != (current, current_note):
            # As the shared leader does: new nodes enter admission quarantine before the table
            # shows them; the first table waits (briefly) for their admission probes.
            self._health.admit(nodes)
            if self._prober is not None:
                if generation == 0:
                    self._prober.admit(self._health, nodes)
                else:
                    self._prober.cycle(self._health, nodes)
            self._table = (generation + 1, nodes, note)
            self._health.collect(nodes)
            log.info("process-local table of %s: generation %d, %d nodes", self.namespace,
                     generation + 1, len(nodes))
        self._counter_at_refresh = counter_now
        self._activity = False  # activity since this refresh is what counts next time
        self._last_success_ns = time.monotonic_ns()
        self._failures = 0
        self._error = None
        self._refreshes += 1
        self._attempts += 1
        return nodes

    # -- the refresher thread ---------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        errors = 0
        while not stop.is_set() and self._pid == _getpid():
            try:
                self._step()
                errors = 0
            except Exception:  # never let the thread die; the next poll tries again
                errors += 1
                if errors == 1 or errors % 100 == 0:
                    log.exception("process-local refresher of %s failed", self.namespace)
            stop.wait(self._poll * random.uniform(0.9, 1.1))

    def _step(self) -> None:
        now = time.monotonic_ns()
        self._heartbeat_ns = now
        if self._due(now) and self._refresh_lock.acquire(blocking=False):
            try:
                self._refresh_locked()
            except Exception:  # recorded and logged; the last table stays in force
                pass
            finally:
                self._refresh_lock.release()
        self._maintain()

    def _due(self, now: int) -> bool:
        """The shared refresher's schedule (see :mod:`~alternator_shm.fleet.refresher`)."""
        if self._failures:
            delay = min(self._backoff_max,
                        self._backoff_initial * 2 ** min(self._failures - 1, 30))
            return bool(now - self._last_attempt_ns >= delay * 1e9)
        if self._table[0] == 0:
            return True  # nothing ever published (an empty table with a note is an answer)
        moved = self._counter != self._counter_at_refresh or self._activity
        interval = self._refresh_interval if moved else self._idle_interval
        return now - self._last_success_ns >= interval * 1e9

    def _maintain(self) -> None:
        """Start the due probes of quarantined and down nodes (the shared leader's cycle)."""
        nodes = self._table[1]
        if nodes and self._prober is not None:
            self._prober.cycle(self._health, nodes)

    # -- the counter and health -------------------------------------------------------------

    def note_activity(self) -> None:
        """Affinity-routed attempts do not advance the counter but keep the active period."""
        self._activity = True

    def advance(self) -> int:
        """Counter fetch-and-add 1; returns the previous value. One call per attempt."""
        with self._lock:
            value = self._counter
            self._counter = value + 1
        return value

    @property
    def counter(self) -> int:
        return self._counter

    def record_pick(self, node: str) -> None:
        self._health.record_pick(node)

    def report_failure(self, node: str, generation: int | None = None) -> Status | None:
        """A traffic attempt to ``node`` failed before a final HTTP response (this process)."""
        return self._health.report_failure(node, generation)

    def report_success(self, node: str, generation: int | None = None) -> Status | None:
        """A traffic attempt to ``node`` got a final, not health-neutral, HTTP response."""
        return self._health.report_success(node, generation)

    def health_view_of(self, nodes: tuple[str, ...]) -> Mapping[str, Eligibility]:
        """node -> (state, generation), as :meth:`SharedFleet.health_view_of`."""
        return self._health.view(nodes)

    def quarantined(self) -> dict[str, int]:
        """Nodes of the table out of the ordinary rotation (QUARANTINED or DOWN) -> generation."""
        view = self._health.view(self._table[1])
        return {n: g for n, (st, g) in view.items() if st is not State.ACTIVE}

    def node_status(self, node: str) -> Status:
        return self._health.status(node)

    def identity_differences(self) -> list[str]:
        return []  # alone: nobody else's options apply

    # -- diagnostics ----------------------------------------------------------------------------

    # -- load (fleet/load.py's process-local twin) -----------------------------------------------

    def begin_attempt(self, node: str) -> LocalAttempt:
        """Count an attempt in flight on ``node`` (this process only)."""
        return self._load.begin_attempt(node)

    def end_attempt(self, attempt: LocalAttempt | Attempt, answered: bool) -> None:
        attempt.finish(answered)

    def node_load(self, node: str) -> tuple[int, float | None]:
        return self._load.node_load(node)

    def stats(self) -> FleetStats:
        """The same snapshot as the shared fleet's, with ``mode="local"``."""
        now = time.monotonic_ns()
        generation, nodes, _note = self._table
        words = self._health_words
        per_node = node_stats(node_counters(words, nodes), self._load.node_loads(nodes), now)
        leads = self.is_leader
        return FleetStats(
            namespace=self.namespace,
            segment_name="",
            leader_pid=_getpid() if leads else None,
            generation=generation,
            nodes=nodes,
            picks=self._counter,
            per_node=per_node,
            last_refresh_age_s=_age(now, self._last_success_ns),
            consecutive_refresh_failures=self._failures,
            refreshes=self._refreshes,
            counter_backend="local",
            refresh_attempts=self._attempts,
            last_refresh_error=self._error,
            leader_heartbeat_age_s=_age(now, self._heartbeat_ns) if leads else None,
            leader_since_age_s=_age(now, self._since_ns) if leads else None,
            is_leader=leads,
            health_slots_used=slots_used(words),
            health_capacity=layout.HEALTH_CAPACITY,
            node_health=health_enabled(words) and self.health_settings is not None,
            segment_size=0,
            shm_dir="",
            mode="local",
            mode_reason=self.reason,
        )
