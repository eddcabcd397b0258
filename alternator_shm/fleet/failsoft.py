"""``FailSoftFleet``: the host's shared fleet when it can be had, this process alone otherwise.

The shared segment can become unusable for reasons no caller controls: another local user owns
the predictable lock or segment name, ``/dev/shm`` is full or missing, the header was corrupted
while other processes are attached. With ``shared="auto"`` (the Helper's default) none of these
fails a call: on the first :class:`SharedStateError` (or raw ``OSError`` of a shared-memory
syscall) — at attach, or later (a fork child's re-attach, a re-attach after the segment was
removed, any call) — this process switches to its
:class:`~alternator_shm.fleet.standalone.StandaloneFleet` (own table, counter, health and
refresher), after ONE warning that names the cause and the fix. ``stats().mode`` is then
``"local"`` and ``stats().mode_reason`` the cause. A daemon thread retries joining the host's
fleet every :data:`REJOIN_INTERVAL` seconds, doubling up to :data:`REJOIN_MAX` (with jitter),
and switches back as soon as an attach succeeds, so the cause going away is enough.

``shared="required"`` raises :class:`SharedStateError` as the shared fleet does;
``shared="off"`` never attaches (no file in ``/dev/shm``, ever).

While local, the round-robin is exact per process, not host-wide, and node health is not shared:
the warning says so. The switch itself loses nothing: the call that hit the error is answered by
the local twin, which starts from the last host table this process saw.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import segment
from alternator_shm.fleet.counter import CounterLockBusy
from alternator_shm.fleet.health import Eligibility, HealthSettings, Status
from alternator_shm.fleet.load import Attempt, LocalAttempt
from alternator_shm.fleet.schedule import DEFAULT, Schedule, seconds
from alternator_shm.fleet.shared import PickPath, SharedFleet
from alternator_shm.fleet.standalone import StandaloneFleet
from alternator_shm.fleet.stats import FleetStats

__all__ = [
    "MODES", "REJOIN_INTERVAL", "REJOIN_MAX", "FailSoftFleet", "default_shm_dir", "fix_for",
]

log = logging.getLogger("alternator_shm.fleet.failsoft")

SharedMode = Literal["auto", "required", "off"]
MODES: tuple[str, ...] = ("auto", "required", "off")

#: Seconds before the first retry to join the host's fleet; doubles after each failed retry.
REJOIN_INTERVAL = 30.0
#: Upper bound of the retry period, seconds.
REJOIN_MAX = 300.0
# Tests (and their spawned children) shorten the period through the environment.
_REJOIN_ENV = "ALTERNATOR_SHM_REJOIN_INTERVAL"
OFF_REASON = "shared='off': this process balances alone by request"

_T = TypeVar("_T")
# (shm_dir, namespace, cause) already warned about in this process: one warning per cause, not
# per Helper. Inherited by fork children on purpose (the parent said it already).
_warned: set[tuple[str, str, str]] = set()
# What the shared fleet raises when shared memory is the problem: its own SharedStateError, and
# the raw OSError a syscall on the segment or its lock file can still give (ENOLCK, ENOMEM from
# mmap...). Only ``refresh_now`` runs other code inline (the refresh callback), so it alone
# narrows this to SharedStateError.
_SHM_ERRORS = (SharedStateError, OSError)
_Fleet = SharedFleet | StandaloneFleet


def _errno_of(exc: BaseException) -> int | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur.errno
        cur = cur.__cause__ or cur.__context__
    return None


def fix_for(exc: BaseException, shm_dir: str) -> str:
    """What an operator can do about ``exc`` (the text after "fix:" in the warning)."""
    text = str(exc)
    code = _errno_of(exc)
    if code == errno.ENOSPC or "cannot reserve" in text:
        return (f"{shm_dir} is full: free space in it (`alternator-shm cleanup` removes unused "
                "segments) or make it larger (docker --shm-size, or "
                f"`mount -o remount,size=... {shm_dir}`)")
    if "belongs to uid" in text or "not accessible" in text or "symlink" in text \
            or "not a regular file" in text:
        return ("another user created this name before us: as root, remove that file (it is "
                "named above), or give this application another namespace=")
    if "bad header" in text or "corrupt" in text or "truncated" in text:
        return ("stop the processes still attached to this segment, then run "
                "`alternator-shm cleanup` (or just restart them: the last one out lets the next "
                "rebuild it)")
    if "does not exist" in text:
        return f"mount a tmpfs at {shm_dir}, or pass shared='off' to always balance per process"
    if "timed out" in text:
        return ("a process holding the segment's lock is stopped (SIGSTOP, debugger); resume or "
                "kill it")
    return ("see `alternator-shm status`; pass shared='off' to balance per process on purpose, "
            "or shared='required' to fail instead")


def default_shm_dir() -> str:
    """``$ALTERNATOR_SHM_DIR`` if set (tests point the Helper at a small tmpfs with it), else
    ``/dev/shm``. Every process of one host fleet must see the same value."""
    return os.environ.get("ALTERNATOR_SHM_DIR") or segment.DEFAULT_SHM_DIR


def _rejoin_interval(default: float) -> float:
    raw = os.environ.get(_REJOIN_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            return default
        if value > 0:
            return value
    return default


class FailSoftFleet:
    """The fleet the Helper routes with: same interface as :class:`SharedFleet`.

    ``shared`` is ``"auto"``, ``"required"`` or ``"off"`` (``ValueError`` otherwise; the Helper
    validates first and raises ``ConfigurationError``). The other keyword arguments are the
    shared fleet's; the refresh settings are given to the local twin too. ``rejoin_interval``
    and ``rejoin_max`` (seconds) set the retry schedule. Construction touches nothing.
    """

    def __init__(
        self,
        namespace: str,
        *,
        shared: str = "auto",
        refresh: Callable[[], Sequence[str]] | None = None,
        probe: Callable[[str], bool] | None = None,
        refresh_interval: float = DEFAULT.refresh_interval,
        idle_refresh_interval: float = DEFAULT.idle_refresh_interval,
        poll_interval: float = DEFAULT.poll_interval,
        health: HealthSettings | None = None,
        identity: bytes = b"",
        shm_dir: str = segment.DEFAULT_SHM_DIR,
        rejoin_interval: float | None = None,
        rejoin_max: float = REJOIN_MAX,
        **shared_kwargs: Any,
    ) -> None:
        if shared not in MODES:
            raise ValueError(f"shared must be 'auto', 'required' or 'off', not {shared!r}")
        # Checked once here; both fleets get the very same schedule (back-off included).
        schedule = Schedule(
            refresh_interval, idle_refresh_interval, poll_interval,
            shared_kwargs.pop("backoff_initial", DEFAULT.backoff_initial),
            shared_kwargs.pop("backoff_max", DEFAULT.backoff_max),
        )  # fmt: skip
        first_rejoin = seconds(
            "rejoin_interval",
            _rejoin_interval(REJOIN_INTERVAL) if rejoin_interval is None else rejoin_interval,
        )
        rejoin_max = seconds("rejoin_max", rejoin_max)
        self.namespace = namespace
        self.shared_mode = shared
        self.shm_dir = shm_dir
        common: dict[str, Any] = {
            "refresh": refresh,
            "probe": probe,
            **schedule.kwargs(),
            "health": health,  # the same node-health machine and probing, shared or alone
        }
        self._shared = SharedFleet(namespace, shm_dir=shm_dir, identity=identity,
                                   **common, **shared_kwargs)
        self._standalone = StandaloneFleet(
            namespace,
            reason=OFF_REASON if shared == "off" else None,
            **common,
        )
        self._rejoin_first = first_rejoin
        self._rejoin_max = max(rejoin_max, first_rejoin)
        # None: routing through the shared fleet. Otherwise the local twin, in this process.
        self._alone: StandaloneFleet | None = self._standalone if shared == "off" else None
        self._last_nodes: tuple[str, ...] = ()
        # pick paths handed out: revoked when this process goes local
        self._paths: weakref.WeakSet[PickPath] = weakref.WeakSet()
        self._started = False
        self._pid = _getpid()
        self._lock = threading.RLock()
        self._rejoin_stop = threading.Event()
        self._rejoin_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        mode = "local" if self._alone is not None else "shared"
        return f"FailSoftFleet({self.namespace!r}, shared={self.shared_mode!r}, mode={mode})"

    # -- switching ------------------------------------------------------------------------------

    def _check_fork(self) -> None:
        """A fork child decides for itself: it tries the host's fleet again on first use."""
        if self._pid == _getpid():
            return
        self._pid = _getpid()
        self._lock = threading.RLock()
        self._rejoin_stop = threading.Event()
        self._rejoin_thread = None
        if self.shared_mode != "off":
            self._alone = None

    def _go_local(self, exc: SharedStateError) -> StandaloneFleet:
        """Switch this process to its local twin (once per episode); returns the twin."""
        with self._lock:
            alone = self._alone
            if alone is not None:
                return alone
            cause = str(exc) or type(exc).__name__
            alone = self._standalone
            alone.reason = cause
            alone.forget_health()  # an earlier episode's DOWN verdicts are stale by now
            alone.seed_table(self._last_nodes)
            key = (self.shm_dir, self.namespace, cause)
            level = logging.INFO if key in _warned else logging.WARNING
            _warned.add(key)
            log.log(
                level,
                "alternator-shm cannot use the host-wide shared state of namespace %r: %s. "
                "This process now balances alone (its own node table, round-robin counter and "
                "node health; exact per process, not host-wide) and retries joining the host's "
                "fleet after %.0fs, then less and less often (at most every %.0fs). fix: %s. "
                "(shared='required' fails instead, shared='off' never tries.)",
                self.namespace, cause, self._rejoin_first, self._rejoin_max,
                fix_for(exc, self.shm_dir),
            )
            self._alone = alone
            for path in list(self._paths):
                path.revoke()
            started = self._started
        if started:
            alone.start()
        # The rejoin thread also stops the shared refresher: that joins a thread which may be
        # inside a slow refresh, and this call must not wait for it.
        self._start_rejoin()
        return alone

    def _close_shared(self) -> None:
        try:
            self._shared.close()
        except Exception:  # its state is what failed; nothing more to give back
            log.debug("closing the shared fleet of %s failed", self.namespace, exc_info=True)

    def _start_rejoin(self) -> None:
        if self.shared_mode != "auto":
            return
        with self._lock:
            thread = self._rejoin_thread
            if thread is not None and thread.is_alive():
                return
            self._rejoin_stop = threading.Event()
            thread = threading.Thread(
                target=self._rejoin_loop, args=(self._rejoin_stop,), daemon=True,
                name=f"alternator-shm-rejoin-{self.namespace}",
            )
            self._rejoin_thread = thread
            thread.start()

    def _rejoin_loop(self, stop: threading.Event) -> None:
        delay = self._rejoin_first
        pid = _getpid()
        self._close_shared()
        while not stop.wait(delay * random.uniform(0.9, 1.1)):
            if _getpid() != pid or self._alone is None:
                return
            if self._try_rejoin():
                return
            delay = min(delay * 2, self._rejoin_max)

    def _try_rejoin(self) -> bool:
        """One attempt to join the host's fleet; True once this process uses it again."""
        try:
            self._shared.nodes()  # attaches (or fails with the same cause)
            if self._rejoin_stop.is_set():
                return False  # close() ran meanwhile: start nothing
            if self._started:
                self._shared.start()
                if not self._shared.nodes():
                    # A fresh segment (the old one was rebuilt or removed): switch back once
                    # it has a table, so no call meanwhile falls back to the seeds.
                    self._shared.wait_for_nodes(5.0)
        except _SHM_ERRORS as exc:
            log.debug("still cannot join the host's fleet of %s: %s", self.namespace, exc)
            return False
        except Exception:
            log.debug("rejoin attempt of %s failed", self.namespace, exc_info=True)
            return False
        with self._lock:
            alone, self._alone = self._alone, None
            if self._rejoin_thread is threading.current_thread():
                self._rejoin_thread = None  # a new episode must start a new thread at once
        if alone is not None:
            alone.close()
            alone.reason = None
        log.info("alternator-shm joined the host-wide shared state of namespace %r again; "
                 "balancing is host-wide once more", self.namespace)
        return True

    def _run(
        self,
        op: Callable[[_Fleet], _T],
        errors: tuple[type[Exception], ...] = _SHM_ERRORS,
    ) -> _T:
        """Run ``op`` on the fleet in force; on a shared-memory error switch and run it locally."""
        if self._pid != _getpid():
            self._check_fork()
        alone = self._alone
        if alone is None:
            try:
                return op(self._shared)
            except errors as exc:
                alone = self._fallback(exc)
        return op(alone)

    @property
    def mode(self) -> str:
        """``"shared"`` or ``"local"``: where this process balances now."""
        if self._pid != _getpid():
            self._check_fork()
        return "local" if self._alone is not None else "shared"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's refresher (shared, or the local twin's) — idempotent."""
        if self._pid != _getpid():
            self._check_fork()
        self._started = True
        self._run(lambda f: f.start())
        if self._alone is not None:
            self._start_rejoin()

    def close(self) -> None:
        """Stop this process's refreshers and the rejoin thread; shared state stays."""
        self._started = False
        if self._pid != _getpid():
            self._check_fork()
        self._rejoin_stop.set()
        thread = self._rejoin_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self._standalone.close()
        if self.shared_mode != "off":
            with contextlib.suppress(SharedStateError):
                self._shared.close()

    def __enter__(self) -> FailSoftFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_leader(self) -> bool:
        alone = self._alone
        return alone.is_leader if alone is not None else self._shared.is_leader

    # -- the routing interface ------------------------------------------------------------------

    def _remember(self, nodes: tuple[str, ...]) -> tuple[str, ...]:
        if nodes and nodes is not self._last_nodes and self._alone is None:
            self._last_nodes = nodes  # the twin starts from it if the host's state goes away
        return nodes

    # The per-attempt calls (nodes, advance, quarantined, record_pick) skip _run while shared:
    # one attribute load and one frame more than the shared fleet's own cost.

    def nodes(self) -> tuple[str, ...]:
        if self._alone is None and self._pid == _getpid():
            try:
                nodes = self._shared.nodes()
            except _SHM_ERRORS as exc:
                return self._fallback(exc).nodes()
            if nodes is not self._last_nodes and nodes:
                self._last_nodes = nodes  # the twin starts from it if the host's state goes
            return nodes
        return self._remember(self._run(lambda f: f.nodes()))

    def _fallback(self, exc: Exception) -> StandaloneFleet:
        if self.shared_mode == "required":
            raise exc
        if not isinstance(exc, SharedStateError):
            wrapped = SharedStateError(f"shared memory operation failed: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        return self._go_local(exc)

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]:
        self._started = True
        return self._remember(self._run(lambda f: f.wait_for_nodes(timeout)))

    def refresh_now(self, timeout: float = 5.0) -> tuple[str, ...]:
        return self._remember(
            self._run(lambda f: f.refresh_now(timeout), errors=(SharedStateError,))
        )

    def advance(self) -> int:
        if self._alone is None and self._pid == _getpid():
            try:
                return self._shared.advance()
            except _SHM_ERRORS as exc:
                return self._fallback(exc).advance()
        return self._run(lambda f: f.advance())

    def refresh_soon(self) -> bool:
        """See :meth:`SharedFleet.refresh_soon`; False (nothing asked) while local."""
        if self._alone is None and self._pid == _getpid():
            try:
                return self._shared.refresh_soon()
            except CounterLockBusy:
                return False  # a hint only: a stopped lock holder is no reason to go local
            except _SHM_ERRORS as exc:
                self._fallback(exc)
        return False

    def note_activity(self) -> None:
        """See :meth:`SharedFleet.note_activity`."""
        if self._alone is None and self._pid == _getpid():
            try:
                self._shared.note_activity()
                return
            except _SHM_ERRORS as exc:
                self._fallback(exc).note_activity()
                return
        self._run(lambda f: f.note_activity())

    def rotation(self) -> int:
        """The shared segment's rotation while shared; 0 for the local twin (its counter is
        this process's own)."""
        if self._alone is None and self._pid == _getpid():
            try:
                return self._shared.rotation()
            except _SHM_ERRORS as exc:
                self._fallback(exc)
        return 0

    def pick_path(self) -> PickPath | None:
        """The shared fleet's :class:`PickPath` while this process routes through it; revoked
        when the process goes local (so a router holding it stops using it at once)."""
        if self._alone is None and self._pid == _getpid():
            path = self._shared.pick_path()
            if path is not None:
                self._paths.add(path)
                if self._alone is not None:  # went local meanwhile
                    path.revoke()
            return path
        return None

    def record_pick(self, node: str) -> None:
        if self._alone is None and self._pid == _getpid():
            try:
                self._shared.record_pick(node)
            except _SHM_ERRORS as exc:
                self._fallback(exc).record_pick(node)
            return
        self._run(lambda f: f.record_pick(node))

    def report_failure(self, node: str, generation: int | None = None) -> None:
        self._run(lambda f: f.report_failure(node, generation))

    def report_success(self, node: str, generation: int | None = None) -> None:
        self._run(lambda f: f.report_success(node, generation))

    def health_view_of(self, nodes: tuple[str, ...]) -> Mapping[str, Eligibility]:
        if self._alone is None and self._pid == _getpid():
            try:
                return self._shared.health_view_of(nodes)
            except _SHM_ERRORS as exc:
                return self._fallback(exc).health_view_of(nodes)
        return self._run(lambda f: f.health_view_of(nodes))

    def node_status(self, node: str) -> Status:
        return self._run(lambda f: f.node_status(node))

    def identity_differences(self) -> list[str]:
        return self._run(lambda f: f.identity_differences())

    def quarantined(self) -> dict[str, int]:
        if self._alone is None and self._pid == _getpid():
            try:
                return self._shared.quarantined()
            except _SHM_ERRORS as exc:
                return self._fallback(exc).quarantined()
        return self._run(lambda f: f.quarantined())

    @property
    def generation(self) -> int:
        return self._run(lambda f: f.generation)

    def table_note(self) -> str:
        return self._run(lambda f: f.table_note())

    def empty_reason(self) -> str | None:
        return self._run(lambda f: f.empty_reason())

    # -- load (fleet/load.py) ---------------------------------------------------------------------

    def begin_attempt(self, node: str) -> Attempt | LocalAttempt:
        """Count an attempt in flight on the fleet in force (shared: host-wide)."""
        return self._run(lambda f: f.begin_attempt(node))

    def end_attempt(self, attempt: Attempt | LocalAttempt, answered: bool) -> None:
        """Ends on the fleet that counted it, even if this process switched meanwhile."""
        attempt.finish(answered)

    def node_load(self, node: str) -> tuple[int, float | None]:
        return self._run(lambda f: f.node_load(node))

    def stats(self) -> FleetStats:
        """The shared fleet's snapshot (``mode="shared"``), or the twin's (``mode="local"``)."""
        return self._run(lambda f: f.stats())
