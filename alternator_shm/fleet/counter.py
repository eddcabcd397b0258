"""Read-modify-write of shared 64-bit words: the round-robin counter and the health counters.

Two backends, chosen by the segment's creator and recorded in its header, because mixing a
lock-free and a lock-based writer on one word loses increments:

* ``atomic``: sequentially consistent fetch-add / compare-exchange on the mapping's address.
  Truly lock-free: there is no critical section a SIGKILL could interrupt, and no convoy under
  contention. Two implementations, chosen per process in this order (:func:`atomic_impl`):
  ``extension``, the optional C module ``_atomic`` (GCC/Clang ``__atomic`` builtins, one
  instruction, no system library; built at install when a compiler is there), then
  ``libatomic``, ``__atomic_fetch_add_8`` / ``__atomic_compare_exchange_8`` from gcc's runtime
  library through ctypes (~5x slower per call, and absent from slim images and musl unless
  ``libatomic1`` / ``libatomic`` is installed). Both are truly atomic on the same aligned word,
  so attachers using either may share one segment; only mixing with ``flock`` is refused.
* ``flock``: a re-entrant thread lock (flock does not exclude threads sharing one open file) plus
  ``flock`` on a per-process fd of ``<base>.ctr``. The kernel releases it when its holder dies,
  but not when it is *stopped*: so every wait is bounded. Each holder writes its pid next to the
  counter; a waiter gives up after :data:`LOCK_WAIT` if that process is stopped (state ``T``),
  and after :data:`LOCK_WAIT_MAX` in any case (plain contention only waits). Past it, an
  ``advance()`` picks from a process-local counter (counted in ``local_picks``; the spread stays
  even, just not exact, while the holder is stopped) and other operations raise
  :class:`SharedStateError`. After a timeout the next attempts only *try* the lock for
  :data:`SUSPECT_FOR` seconds, so a stopped holder costs one wait, not one per call. A thread that
  re-enters (a signal handler sending a request while its own thread is inside the critical
  section) never waits for itself: it picks locally at once.

``os.register_at_fork`` makes the flock backend fork-safe where the hook runs: no thread is
inside the critical section at fork time, so a child never carries a locked open file description.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Protocol

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm._forksafe import ForkSafeLock
from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import layout

__all__ = [
    "AtomicWords", "CounterLockBusy", "FlockWords", "LocalWords", "SharedWords",
    "atomic_available",
]

_MASK = (1 << 64) - 1
_SEQ_CST = 5

_lib: ctypes.CDLL | None = None
_lib_loaded = False
# Test / benchmark switches: hide one implementation from this process (read at import).
_forced_unavailable = os.environ.get("ALTERNATOR_SHM_NO_LIBATOMIC") == "1"
_ext_disabled = os.environ.get("ALTERNATOR_SHM_NO_ATOMIC_EXT") == "1"

_ext: ModuleType | None = None
if not _ext_disabled:
    try:
        from alternator_shm.fleet import _atomic as _ext_mod
    except ImportError:  # installed without a C compiler: libatomic, then flock
        pass
    else:
        if _ext_mod.lock_free():
            _ext = _ext_mod


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
    return _ext is not None or _libatomic() is not None


def atomic_impl() -> str | None:
    """Which implementation the ``atomic`` backend uses in this process: ``"extension"``,
    ``"libatomic"``, or None (unavailable: the segment creator picks ``flock``)."""
    if _ext is not None:
        return "extension"
    return "libatomic" if _libatomic() is not None else None


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

    @property
    def local_picks(self) -> int:
        """Attempts of this process that picked locally because the shared word was stuck."""
        ...


class AtomicWords:
    """Lock-free backend on addresses inside the mapping: the C extension if built, else
    libatomic through ctypes (see the module docstring)."""

    name = "atomic"
    local_picks = 0  # lock-free: never falls back

    def __init__(self, mm: mmap.mmap) -> None:
        lib = _libatomic() if _ext is None else None
        if _ext is None and lib is None:
            raise RuntimeError("neither the _atomic extension nor libatomic is available")
        # The ctypes view pins the mapping (an export), so the addresses stay valid while we live.
        self._buf = (ctypes.c_char * len(mm)).from_buffer(mm)
        self._base = ctypes.addressof(self._buf)
        self.impl = "extension" if _ext is not None else "libatomic"
        #: The extension's one-call round-robin pick (routing's fast path), else None.
        self.ext_pick: Callable[..., int] | None = None
        if _ext is not None:
            ext = _ext
            self.ext_pick = ext.pick
            base, counter = self._base, self._base + layout.COUNTER_OFF
            fa = ext.fetch_add
            cas = ext.compare_exchange
            # instance attributes shadow the ctypes methods below: one C call each
            self.fetch_add = (  # type: ignore[method-assign]
                lambda offset, delta=1: fa(base + offset, delta)
            )
            self.compare_exchange = (  # type: ignore[method-assign]
                lambda offset, expected, desired: cas(base + offset, expected, desired)
            )
            self.advance = functools.partial(fa, counter, 1)  # type: ignore[method-assign]
            self.adder = (  # type: ignore[method-assign]
                lambda offset, delta=1: functools.partial(fa, base + offset, delta)
            )
            return
        assert lib is not None
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

    def address(self, offset: int) -> int:
        """The address of the word at ``offset`` in this process (valid while we live)."""
        return self._base + offset

    def fetch_add(self, offset: int, delta: int = 1) -> int:
        return int(self._fa(self._base + offset, delta & _MASK, _SEQ_CST))

    def compare_exchange(self, offset: int, expected: int, desired: int) -> bool:
        exp = ctypes.c_uint64(expected)
        return bool(self._cas(self._base + offset, ctypes.addressof(exp), desired, 5, 5))

    def advance(self) -> int:
        return int(self._raw_fa(*self._counter_args))

    def adder(self, offset: int, delta: int = 1) -> Callable[[], int]:
        """A callable doing ``fetch_add(offset, delta)``: with the extension, a C partial
        (no Python frame per call; the health pick counter's hot path)."""
        return functools.partial(self.fetch_add, offset, delta)


_flock_instances: weakref.WeakSet[FlockWords] = weakref.WeakSet()


class LocalWords:
    """:class:`SharedWords` over a private buffer of one process (the local twin's health
    entries, laid out as in the segment): a lock makes each read-modify-write atomic among the
    process's threads. The lock is fresh in every forked child (:class:`ForkSafeLock`)."""

    name = "local"

    def __init__(self, words: memoryview) -> None:
        self._words = words
        self._lock = ForkSafeLock()

    def fetch_add(self, offset: int, delta: int = 1) -> int:
        with self._lock:
            old = int(self._words[offset // 8])
            self._words[offset // 8] = (old + delta) & _MASK
            return old

    def compare_exchange(self, offset: int, expected: int, desired: int) -> bool:
        with self._lock:
            if self._words[offset // 8] != expected:
                return False
            self._words[offset // 8] = desired
            return True

    def advance(self) -> int:
        return self.fetch_add(layout.COUNTER_OFF)

    @property
    def local_picks(self) -> int:
        return 0


LOCK_WAIT = 0.25  # seconds before a waiter checks whether the holder is stopped
LOCK_WAIT_MAX = 2.0  # seconds an attempt waits at most, whatever the holder is doing
SUSPECT_FOR = 1.0  # seconds after a timeout during which attempts only try the lock once
_HOLDER = layout.COUNTER_HOLDER_OFF // 8


def _stopped(pid: int) -> bool:
    """True if ``pid`` is stopped (SIGSTOP, or traced); False if running, dead or unknown."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"T", b"t")
    except (OSError, ValueError):
        return False


class _Stuck(Exception):
    """The counter lock could not be had within the bound."""


class CounterLockBusy(SharedStateError):
    """The flock backend's lock stayed held past its bound (a stopped holder): transient."""


class FlockWords:
    """Portable backend: thread lock + flock on a per-process fd; the kernel drops a dead
    holder's flock, so a SIGKILL inside the critical section loses at most that increment."""

    name = "flock"

    def __init__(self, words: memoryview, lock_path: str, fd: int) -> None:
        self._words = words
        self.lock_path = lock_path
        self.fd = fd  # owned by us; opened by the segment module (ownership checked there)
        self._tlock = threading.RLock()
        self._depth = 0  # re-entrance depth of the thread holding _tlock
        self._suspect_until = 0.0
        self._local = 0  # the process-local fallback counter
        self._local_picks = 0
        _flock_instances.add(self)

    @property
    def local_picks(self) -> int:
        return self._local_picks

    def _acquire(self, wait: float) -> None:
        """Take both locks, or raise :class:`_Stuck` (bounded: see the module docstring).

        The thread lock is re-entrant so that a signal handler re-entering from the holding
        thread is *detected* (depth > 1) instead of deadlocking; the depth is raised before the
        flock is taken, so a handler that runs in between finishes its own section first.
        Other threads of this process hold it for one bounded attempt each: wait for them.
        """
        self._tlock.acquire()
        self._depth += 1
        if self._depth > 1:
            self._depth -= 1
            self._tlock.release()
            raise _Stuck("re-entered from the thread holding the lock (a signal handler?)")
        now = time.monotonic()
        # after a recent timeout, check the holder at once instead of after ``wait``
        check_at = now if now < self._suspect_until else now + wait
        hard = now + LOCK_WAIT_MAX
        tries = 0
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError:
                self._depth -= 1
                self._tlock.release()
                raise
            t = time.monotonic()
            if t >= check_at:
                if t >= hard or _stopped(int(self._words[_HOLDER])):
                    self._depth -= 1
                    self._tlock.release()
                    self._suspect_until = t + SUSPECT_FOR
                    raise _Stuck(f"{self.lock_path} is held by a stopped or stuck process")
                check_at = t + 0.05
            tries += 1
            # contention: yield first (sections last microseconds), then back off gently
            time.sleep(0 if tries < 50 else 0.0005 if tries < 500 else 0.002)
        self._words[_HOLDER] = _getpid()

    def _release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._tlock.release()

    @contextlib.contextmanager
    def critical(self, wait: float = LOCK_WAIT) -> Iterator[None]:
        """The critical section guarding every word of the segment (tests hold it on purpose).
        Raises :class:`CounterLockBusy` if it cannot be had within the bound."""
        try:
            self._acquire(wait)
        except _Stuck as exc:
            raise CounterLockBusy(f"counter lock unavailable: {exc}") from None
        try:
            yield
        finally:
            self._release()

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
        """The shared counter's next value; a process-local one if the lock is stuck."""
        try:
            self._acquire(LOCK_WAIT)
        except _Stuck:
            self._local_picks += 1
            self._local += 1
            # offset by the shared value so a local run continues near the fleet's position
            return (int(self._words[layout.COUNTER_OFF // 8]) + self._local) & _MASK
        try:
            i = layout.COUNTER_OFF // 8
            value = int(self._words[i])
            self._words[i] = (value + 1) & _MASK
        finally:
            self._release()
        return value

    def close_without_unlocking(self) -> None:
        """Fork child: forget the inherited open file description without LOCK_UN (which would
        release a lock that a parent thread might hold through the same description)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


_held_at_fork: list[threading.RLock] = []


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
        inst._tlock = threading.RLock()  # the inherited one was acquired by the forking thread
        inst._depth = 0


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
