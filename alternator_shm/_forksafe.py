"""Locks that are fresh and unlocked in every process, however it was forked.

A ``threading.Lock`` held by another thread at ``fork()`` stays locked forever in the child (that
thread does not exist there), so the child deadlocks on first use. :class:`ForkSafeLock` keeps one
re-entrant lock *per process id*:

* ``os.register_at_fork(after_in_child=...)`` gives every instance a new lock right after a
  Python-level fork (``os.fork``, multiprocessing, gunicorn);
* every use also looks the lock up by the process id (``_forkmark.getpid``: ``os.getpid()``
  without its system call between forks), which covers forks made from C without
  Python's at-fork hooks (uWSGI, some embedding servers). The lock of a new pid is installed with
  ``dict.setdefault``, atomic under the GIL, so two threads of a child racing on first use still
  share one lock.

The lock is re-entrant so that a signal handler running in a thread that holds it (for example
``Helper.close()`` from SIGTERM while the main thread builds a client) does not deadlock.
"""

from __future__ import annotations

import os
import threading
import weakref

from alternator_shm._forkmark import getpid as _getpid

__all__ = ["ForkSafeLock"]

#: Tests set this to False to make ``os.fork()`` behave like a C-level fork (no at-fork hooks
#: of ours run in the child), so the pid checks are exercised on their own.
AT_FORK_HOOKS = True

_instances: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


class ForkSafeLock:
    """A ``threading.RLock`` that is re-created, unlocked, in each new process."""

    __slots__ = ("__weakref__", "_locks")

    def __init__(self) -> None:
        self._locks: dict[int, threading.RLock] = {_getpid(): threading.RLock()}
        _instances.add(self)

    def _current(self) -> threading.RLock:
        pid = _getpid()
        lock = self._locks.get(pid)
        if lock is None:
            # First use in a process forked without at-fork hooks: one winner among racing
            # threads, then forget the locks of other processes (never acquired here).
            lock = self._locks.setdefault(pid, threading.RLock())
            for other in [p for p in self._locks if p != pid]:
                self._locks.pop(other, None)
        return lock

    def __enter__(self) -> None:
        self._current().acquire()

    def __exit__(self, *exc: object) -> None:
        self._current().release()

    def _reset(self) -> None:
        self._locks = {_getpid(): threading.RLock()}


def _after_fork_in_child() -> None:
    if not AT_FORK_HOOKS:
        return
    for instance in list(_instances):
        instance._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
