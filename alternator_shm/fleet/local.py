"""Per-process state of each namespace: the current attachment and the process's election.

Every ``SharedFleet`` of one namespace in one process shares one :class:`LocalState` (one lock-file
fd, one counter lock, one leadership token holder), looked up in a registry that is rebuilt after
a fork. Fork detection is by pid on use, because C-level forks (uWSGI's default) skip
``os.register_at_fork``; the hook below only makes the cleanup of inherited fds eager where it
runs.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Protocol

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.fleet import counter, layout, segment
from alternator_shm.fleet.counter import AtomicWords, FlockWords, SharedWords
from alternator_shm.fleet.election import Election
from alternator_shm.fleet.health import Health, HealthSettings
from alternator_shm.fleet.segment import Segment
from alternator_shm.fleet.table import TableReader

__all__ = ["Attachment", "LocalState", "local_state", "local_states"]

log = logging.getLogger("alternator_shm.fleet.local")


class Startable(Protocol):
    def start(self) -> None: ...


@dataclass(frozen=True, eq=False)
class Attachment:
    """Everything derived from one mapping; replaced as a whole on re-attach."""

    seg: Segment
    ops: SharedWords
    reader: TableReader
    health: Health


class LocalState:
    """One namespace in this process."""

    def __init__(self, namespace: str, shm_dir: str, health: HealthSettings | None) -> None:
        self.namespace = namespace
        self.shm_dir = shm_dir
        self.base = segment.base_name(namespace)
        self.pid = _getpid()
        self.att: Attachment | None = None
        self.stale = False
        self.election = Election()
        self.publish_lock = threading.Lock()  # one refresh+publish at a time in this process
        self.running: set[object] = set()  # owners whose refresher thread runs here
        self.wakers: dict[object, threading.Event] = {}  # owner -> its refresher's wake-up
        # one refresher per process per namespace: the SharedFleet running it, and the others
        # started meanwhile (owner -> fleet), which take over when it closes
        self.refresher_lock = threading.Lock()
        self.refreshing: object | None = None
        self.standby: dict[object, Startable] = {}
        self.last_failure: tuple[int, BaseException] | None = None  # (request served, error)
        self._lock = threading.RLock()
        self._health = health  # the first fleet of this namespace in the process decides

    def wake(self) -> None:
        """Make this process's refreshers run a round now (a refresh request is pending)."""
        for event in list(self.wakers.values()):
            event.set()

    def ensure(self, counter_backend: str = "auto") -> Attachment:
        att = self.att
        if att is not None and not self.stale:
            return att
        with self._lock:
            if self.att is None or self.stale:
                self._attach(counter_backend)
            assert self.att is not None
            return self.att

    def reattach(self, reason: str, counter_backend: str = "auto") -> Attachment:
        with self._lock:
            log.warning("re-attaching %s: %s", self.base, reason)
            try:
                self._attach(counter_backend)
            except BaseException:
                # The old mapping is an orphan now: never serve it silently. Every user
                # re-attaches on its next call and so sees the error (fail-soft switches then).
                self.stale = True
                raise
            assert self.att is not None
            return self.att

    def _attach(self, counter_backend: str) -> None:
        old = self.att
        lock_before = old.seg.lock if old is not None else None
        seg = segment.attach(self.namespace, self.shm_dir, counter_backend)
        seg.close_fd()  # the mapping is all we need; identity was recorded at open
        if lock_before is not None and seg.lock is not lock_before:
            self.election.forget()  # leadership was on the replaced lock file
        ops: SharedWords
        if seg.backend == layout.BACKEND_ATOMIC:
            ops = AtomicWords(seg.mm)
        else:
            fd = segment.open_counter_lock(self.shm_dir, self.base)
            ops = FlockWords(seg.words, os.path.join(self.shm_dir, self.base + ".ctr"), fd)
        self.att = Attachment(
            seg=seg,
            ops=ops,
            reader=TableReader(seg.mm, seg.words),
            health=Health(seg.words, ops, self._health),
        )
        self.stale = False
        if old is not None and isinstance(old.ops, FlockWords):
            # Not closed here: another thread may be inside its critical section right now.
            pass

    def drop_inherited(self) -> None:
        """Fork child: forget the parent's fds without unlocking anything."""
        att = self.att
        if att is not None:
            att.seg.close_fd()
            if isinstance(att.ops, FlockWords):
                att.ops.close_without_unlocking()
        self.att = None


_registry: dict[tuple[str, str], LocalState] = {}
_registry_pid = _getpid()


def _reset_after_fork() -> None:
    global _registry_pid
    for state in list(_registry.values()):
        state.drop_inherited()
    _registry.clear()
    _registry_pid = _getpid()


def local_state(
    namespace: str, shm_dir: str, health: HealthSettings | None = None
) -> LocalState:
    """This process's :class:`LocalState` for ``namespace`` (created on first use)."""
    lock = segment.registry_lock()
    with lock:
        if _registry_pid != _getpid():
            _reset_after_fork()
        key = (os.path.realpath(shm_dir), segment.base_name(namespace))
        state = _registry.get(key)
        if state is None:
            state = LocalState(namespace, shm_dir, health)
            _registry[key] = state
        return state


def local_states() -> list[LocalState]:
    with segment.registry_lock():
        if _registry_pid != _getpid():
            _reset_after_fork()
        return list(_registry.values())


def existing_local_state(shm_dir: str, base: str) -> LocalState | None:
    with segment.registry_lock():
        if _registry_pid != _getpid():
            return None
        return _registry.get((os.path.realpath(shm_dir), base))


def _after_fork_child() -> None:
    segment._reset_registry_after_fork()
    _reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_child)

# keep the import used for its side effect (fork hooks of the counter backends)
_ = counter
