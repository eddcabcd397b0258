"""Leader-side health probes: direct ``GET /localnodes`` of quarantined and down nodes.

Only the elected leader probes, so a host sends one probe per node per period however many
processes it runs (``recovery_probe_interval`` apart inside a recovery sequence: see
:func:`~alternator_shm.fleet.health.probe_interval`). :meth:`Prober.cycle` never blocks the
leader loop: due nodes (DOWN first, then QUARANTINED; :meth:`Health.probe_due`) are handed to a
small thread pool, at most ``probe_concurrency`` at once and one per node. A probe's deadline
(``probe_timeout``) starts when it starts running; past it the probe counts as a failure and its
late answer is ignored. The pool is created lazily in the leader and rebuilt after a fork.

:meth:`Prober.admit` is the one blocking call: before the leader publishes a table with new
nodes it probes them at once and waits for the answers up to :data:`ADMISSION_WAIT`, so a
healthy cluster's first table is all ACTIVE (the first wave of calls spreads exactly) while a
node listed before it serves stays quarantined. What the wait does not see is settled later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.fleet.health import Health, HealthSettings, Observation

__all__ = ["Prober"]

log = logging.getLogger("alternator_shm.fleet.probes")

#: Longest a publication waits for the admission probes of its new nodes (seconds).
ADMISSION_WAIT = 2.0


@dataclass
class _Probe:
    health: Health
    submitted_ns: int
    started_ns: int = 0
    settled: bool = False  # an outcome (answer or deadline) was recorded


def _always() -> bool:
    return True


class Prober:
    """Runs the leader's probes; ``probe(node)`` returns True for an HTTP 200 answer."""

    def __init__(self, probe: Callable[[str], bool], settings: HealthSettings) -> None:
        self._probe = probe
        self._settings = settings
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._lock_pid = _getpid()
        self._inflight: dict[str, _Probe] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False  # close() is final: no pool is rebuilt, no probe started
        self._pid = -1
        self.started = 0  # probes started (tests, diagnostics)

    def _locked(self) -> threading.Condition:
        """The lock (as its condition) of this process. A child forked while another thread
        held it (a probe logging a timeout, say) would otherwise block on it forever and never
        probe again; the local twin keeps its Prober across forks. Checked by pid, so C-level
        forks are covered too."""
        if self._lock_pid != _getpid():
            self._lock = threading.Lock()
            self._settled = threading.Condition(self._lock)
            self._inflight = {}
            self._pool = None
            self._lock_pid = _getpid()
        return self._settled

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pid != _getpid():
            self._inflight = {}  # a fork child inherits none of the parent's probe threads
            self._pool = ThreadPoolExecutor(
                max_workers=self._settings.probe_concurrency,
                thread_name_prefix="alternator-shm-probe",
            )
            self._pid = _getpid()
        return self._pool

    def cycle(
        self, health: Health, nodes: tuple[str, ...], leading: Callable[[], bool] = _always
    ) -> None:
        """Settle probes past their deadline, then start the due ones (non-blocking), while
        ``leading()`` (the caller's leadership: only the leader probes) and not closed."""
        if health.settings is None:
            return
        now = time.monotonic_ns()
        timeout_ns = int(self._settings.probe_timeout * 1e9)
        with self._locked():
            if self._closed or not leading():
                return
            pool = self._executor()
            for node, p in list(self._inflight.items()):
                if p.started_ns and not p.settled and now - p.started_ns >= timeout_ns:
                    p.settled = True
                    log.debug("probe of %s timed out after %.1fs", node,
                              self._settings.probe_timeout)
                    p.health.observe(node, Observation.PROBE_FAILURE)
            # Slots held by probes still running past their deadline count too, so a host of
            # hung nodes cannot pile up threads.
            running = len(self._inflight)
            limit = self._settings.probe_concurrency
            if running >= 2 * limit:
                return
            period_ns = int(self._settings.probe_period * 1e9)
            recovery_ns = int(self._settings.recovery_spacing * 1e9)
            for node, _state in health.probe_due(nodes, now, period_ns, recovery_ns):
                if node in self._inflight:
                    continue
                if sum(1 for p in self._inflight.values() if not p.settled) >= limit:
                    break
                health.mark_probed(node, now)
                self._inflight[node] = _Probe(health, now)
                pool.submit(self._run, node)

    def admit(
        self, health: Health, nodes: tuple[str, ...], leading: Callable[[], bool] = _always
    ) -> None:
        """Probe the never-probed quarantined nodes of ``nodes`` and wait for their answers,
        at most ``min(ADMISSION_WAIT, probe_timeout)`` seconds (leader, before publishing;
        nothing once ``leading()`` is False or the prober is closed)."""
        if health.settings is None:
            return
        fresh = {n for n in nodes if health.never_probed(n)}
        if not fresh:
            return
        deadline = time.monotonic() + min(ADMISSION_WAIT, self._settings.probe_timeout)
        while True:
            self.cycle(health, nodes, leading)
            with self._locked():
                if self._closed or not leading():
                    return
                waiting = [n for n in fresh if health.never_probed(n)
                           or (n in self._inflight and not self._inflight[n].settled)]
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    return
                self._settled.wait(min(left, 0.05))

    def _run(self, node: str) -> None:
        with self._locked():
            p = self._inflight.get(node)
            if p is None:
                return
            p.started_ns = time.monotonic_ns()
            self.started += 1
        try:
            ok = bool(self._probe(node))
        except Exception:  # a probe that raises is a failed probe
            log.debug("probe of %s raised", node, exc_info=True)
            ok = False
        with self._locked():
            if self._inflight.get(node) is not p:
                return
            del self._inflight[node]
            if p.settled:
                return  # the deadline already counted it as failed; ignore the late answer
        p.health.observe(node, Observation.PROBE_SUCCESS if ok else Observation.PROBE_FAILURE)
        with self._locked():
            p.settled = True
            self._settled.notify_all()

    def close(self) -> None:
        """Stop starting probes; running ones finish on their own (bounded by the transport)."""
        with self._locked():
            pool, self._pool = self._pool, None
            self._inflight = {}
            self._closed = True
        if pool is not None and self._pid == _getpid():
            pool.shutdown(wait=False, cancel_futures=True)
