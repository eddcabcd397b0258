"""Read-modify-write of shared 64-bit words: the round-robin counter and the health counters.

Two backends, chosen by the segment's creator and recorded in its header, because mixing a
lock-free and a lock-based writer on one word loses increments:

* ``atomic``: ``__atomic_fetch_add_8`` / ``__atomic_compare_exchange_8`` from libatomic through
  ctypes on the mapping's address. Truly lock-free: there is no critical section a SIGKILL could
  interrupt, and no convoy under contention (~0.35-0.5 us per call from Python).
* ``flock``: a ``threading.Lock`` (flock does not exclude threads sharing one open file) plus
  ``flock`` on a per-process fd of ``<base>.ctr``. The kernel releases it when its holder dies.

``os.register_at_fork`` makes the flock backend fork-safe where the hook runs: no thread is
inside the critical section at fork time, so a child never carries a locked open file description.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from alternator_shm.fleet import layout

__all__ = ["AtomicWords", "FlockWords", "SharedWords", "atomic_available"]

_MASK = (1 << 64) - 1
_SEQ_CST = 5

_lib: ctypes.CDLL | None = None
_lib_loaded = False
_forced_unavailable = os.environ.get("ALTERNATOR_SHM_NO_LIBATOMIC") == "1"


def _libatomic() -> ctypes.CDLL | None:
    """Load libatomic lazily (absent on musl/macOS without gcc's runtime)."""
    global _lib, _lib_loaded
    if not _lib_loaded:
        _lib_loaded = True
        if not _forced_unavailable:
            for name in ("libatomic.so.1", ctypes.util.find_library("atomic")):
                if not name:
                    continue
                try:
                    lib = ctypes.CDLL(name)
                    lib.__atomic_fetch_add_8  # noqa: B018 - probe the symbols
                    lib.__atomic_compare_exchange_8  # noqa: B018
                except (OSError, AttributeError):
                    continue
                _lib = lib
                break
    return _lib


def atomic_available() -> bool:
    """True if the lock-free backend can be used in this process."""
    return _libatomic() is not None


class SharedWords(Protocol):
    """Atomic operations on 8-byte aligned words of the segment, by byte offset."""

    name: str

    def fetch_add(self, offset: int, delta: int = 1) -> int:
        """Add ``delta`` (mod 2**64) and return the previous value."""
        ...

    def compare_exchange(self, offset: int, expected: int, desired: int) -> bool:
        """Store ``desired`` iff the word equals ``expected``; True on success."""
        ...

    def advance(self) -> int:
        """fetch_add(COUNTER, 1), on the fastest path the backend has."""
        ...


class AtomicWords:
    """Lock-free backend: libatomic through ctypes on addresses inside the mapping."""

    name = "atomic"

    def __init__(self, mm: mmap.mmap) -> None:
        lib = _libatomic()
        if lib is None:
            raise RuntimeError("libatomic is not available")
        # The ctypes view pins the mapping (an export), so the addresses stay valid while we live.
        self._buf = (ctypes.c_char * len(mm)).from_buffer(mm)
        self._base = ctypes.addressof(self._buf)
        fetch_add = ctypes.CFUNCTYPE(
            ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int
        )
        self._fa = fetch_add(("__atomic_fetch_add_8", lib))
        cas = ctypes.CFUNCTYPE(
            ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
            ctypes.c_int,
        )
        self._cas = cas(("__atomic_compare_exchange_8", lib))
        # Fast path for the counter: pre-converted arguments skip ctypes' per-call conversion.
        raw = lib["__atomic_fetch_add_8"]  # a private function object (restype is per object)
        raw.restype = ctypes.c_uint64
        self._raw_fa = raw
        self._counter_args = (
            ctypes.c_void_p(self._base + layout.COUNTER_OFF),
            ctypes.c_uint64(1),
            ctypes.c_int(_SEQ_CST),
        )

    def fetch_add(self, offset: int, delta: int = 1) -> int:
        return int(self._fa(self._base + offset, delta & _MASK, _SEQ_CST))

    def compare_exchange(self, offset: int, expected: int, desired: int) -> bool:
        exp = ctypes.c_uint64(expected)
        return bool(self._cas(self._base + offset, ctypes.addressof(exp), desired, 5, 5))

    def advance(self) -> int:
        return int(self._raw_fa(*self._counter_args))


_flock_instances: weakref.WeakSet[FlockWords] = weakref.WeakSet()


class FlockWords:
    """Portable backend: thread lock + flock on a per-process fd; the kernel drops a dead
    holder's flock, so a SIGKILL inside the critical section loses at most that increment."""

    name = "flock"

    def __init__(self, words: memoryview, lock_path: str, fd: int) -> None:
        self._words = words
        self.lock_path = lock_path
        self.fd = fd  # owned by us; opened by the segment module (ownership checked there)
        self._tlock = threading.Lock()
        _flock_instances.add(self)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """The critical section guarding every word of the segment (tests hold it on purpose)."""
        with self._tlock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def fetch_add(self, offset: int, delta: int = 1) -> int:
        i = offset // 8
        with self.critical():
            value = int(self._words[i])
            self._words[i] = (value + delta) & _MASK
        return value

    def compare_exchange(self, offset: int, expected: int, desired: int) -> bool:
        i = offset // 8
        with self.critical():
            if self._words[i] != expected:
                return False
            self._words[i] = desired
        return True

    def advance(self) -> int:
        return self.fetch_add(layout.COUNTER_OFF, 1)

    def close_without_unlocking(self) -> None:
        """Fork child: forget the inherited open file description without LOCK_UN (which would
        release a lock that a parent thread might hold through the same description)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


_held_at_fork: list[threading.Lock] = []


def _before_fork() -> None:
    held = [inst._tlock for inst in list(_flock_instances)]
    for lock in held:
        lock.acquire()
    _held_at_fork[:] = held


def _after_fork_parent() -> None:
    for lock in _held_at_fork:
        lock.release()
    _held_at_fork.clear()


def _after_fork_child() -> None:
    _held_at_fork.clear()
    for inst in list(_flock_instances):
        inst._tlock = threading.Lock()  # the inherited one was acquired by the forking thread


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
