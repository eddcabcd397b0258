"""The shared segment and its lock file: names, create/attach/validate, permissions, cleanup.

One segment and one lock file exist per (namespace, effective uid, layout version). The lock file
carries one-byte locks (see :mod:`layout`): 0 = leader, 1 = init, 2 = attached, 3 = takeover,
4 = commit.

On Linux they are **open-file-description (OFD) locks** (``F_OFD_SETLK``): they belong to the
open file description, so closing *another* descriptor of the same file (``status`` reading it
under a differently spelled path, say) never drops them, unlike POSIX record locks, which belong
to the process and all vanish when any of its fds on the file is closed. The price (measured in
the project's design notes): a fork child inherits the description, so a child that keeps the
inherited fd open keeps the parent's locks alive after the parent dies. Children close inherited
fds (without unlocking) on first use; a child that never uses the library (a C-level fork) is
covered by the heartbeat takeover of :mod:`fencing`. Elsewhere (macOS) POSIX record locks are used
and the lock file is opened exactly once per process (a registry, keyed by the real path).

Why not ``multiprocessing.shared_memory``: on Python < 3.13 merely attaching registers the name
with the resource tracker, which unlinks the segment when that process exits (gh-82300).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import re
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import counter, layout, mapguard

try:  # pragma: no cover - import guard
    import posix_ipc

    _HAVE_POSIX_IPC = True
except ImportError:  # pragma: no cover - posix_ipc is a hard dependency, but stay importable
    _HAVE_POSIX_IPC = False

__all__ = [
    "DEFAULT_SHM_DIR",
    "LockFile",
    "ReadOnlySegment",
    "Segment",
    "attach",
    "base_name",
    "list_bases",
    "lock_file",
    "open_read_only",
    "remove_if_unused",
    "try_remove",
]

log = logging.getLogger("alternator_shm.fleet.segment")

DEFAULT_SHM_DIR = "/dev/shm"
_INIT_TIMEOUT = 10.0  # seconds to wait for another process's init / cleanup critical section
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86-64 and aarch64


def base_name(namespace: str, euid: int | None = None) -> str:
    """``rrlb{L}.{euid}.{hash10}``: short (macOS allows 31 chars), per user and layout."""
    uid = os.geteuid() if euid is None else euid
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=5).hexdigest()
    return f"rrlb{layout.LAYOUT_VERSION}.{uid}.{digest}"


def _base_pattern(euid: int) -> re.Pattern[str]:
    return re.compile(rf"^rrlb{layout.LAYOUT_VERSION}\.{euid}\.[0-9a-f]{{10}}$")


def list_bases(shm_dir: str = DEFAULT_SHM_DIR) -> list[str]:
    """Base names of this euid's segments in ``shm_dir`` (lock files excluded), sorted."""
    pattern = _base_pattern(os.geteuid())
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if pattern.match(n))


def _check_owned_file(fd: int, what: str, path: str) -> os.stat_result:
    """Refuse anything that is not a regular file owned by our euid (squatting, poisoning)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SharedStateError(f"{what} {path} is not a regular file; refusing to use it")
    if st.st_uid != os.geteuid():
        raise SharedStateError(
            f"{what} {path} belongs to uid {st.st_uid}, not to us (euid {os.geteuid()}); "
            "refusing to use it (pre-created by another user?)"
        )
    if st.st_mode & 0o077:
        os.fchmod(fd, 0o600)  # ours, but too open (e.g. created under a lax umask elsewhere)
    return st


def _open_private(path: str, what: str, flags: int) -> int:
    """Open with O_NOFOLLOW|O_CLOEXEC and mode 0600; usual failures become clear errors."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SharedStateError(f"{what} {path} is a symlink; refusing to follow it") from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise SharedStateError(f"{what} {path} is not accessible: {exc}") from exc
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
            raise SharedStateError(f"cannot create {what} {path}: {exc}") from exc
        raise


# -- lock file ------------------------------------------------------------------------------------


_F_OFD_GETLK: int | None = getattr(fcntl, "F_OFD_GETLK", None)
_F_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
OFD_LOCKS = _F_OFD_SETLK is not None and sys.platform.startswith("linux")


class LockFile:
    """The process's fd on a lock file, with the one-byte lock operations we need."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = _getpid()
        self.fd = _open_private(path, "lock file", os.O_RDWR | os.O_CREAT)
        try:
            st = _check_owned_file(self.fd, "lock file", path)
        except BaseException:
            os.close(self.fd)
            raise
        self.identity = (st.st_dev, st.st_ino)
        # OFD locks do not exclude threads sharing the description: brief sections that must
        # (commit) also take this lock.
        self.thread_lock = threading.Lock()

    def try_lock(self, byte: int, *, exclusive: bool = True) -> bool:
        """Non-blocking lock of one byte; False if another holder has a conflicting lock."""
        if OFD_LOCKS:
            assert _F_OFD_SETLK is not None
            kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
            try:
                fcntl.fcntl(self.fd, _F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise
            return True
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.lockf(self.fd, mode | fcntl.LOCK_NB, 1, byte)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def lock(self, byte: int, *, exclusive: bool = True, timeout: float = _INIT_TIMEOUT) -> None:
        """Lock one byte, polling so that a stopped holder becomes an error instead of a hang."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while not self.try_lock(byte, exclusive=exclusive):
            if time.monotonic() >= deadline:
                holder = self.holder(byte)
                raise SharedStateError(
                    f"timed out after {timeout:.0f}s waiting for byte {byte} of {self.path} "
                    f"(held by pid {holder})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def unlock(self, byte: int) -> None:
        if OFD_LOCKS:
            assert _F_OFD_SETLK is not None
            fcntl.fcntl(self.fd, _F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, byte, 1, 0))
            return
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, byte)

    def holder(self, byte: int) -> int | None:
        """Pid of another holder of ``byte`` (never our own description's lock); 0 if unknown
        (OFD locks have no pid), None if the byte is free."""
        return lock_holder(self.fd, byte)

    def replaced(self) -> bool:
        """True if the path no longer names the file we hold open (``rm``, RemoveIPC)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    def close_without_unlocking(self) -> None:
        """Forget the fd. Only valid when our locks on it do not matter any more (fork child, or
        a file that was replaced underneath us). With OFD locks, closing our last fd of the
        description drops its locks; a fork parent's copy keeps them."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def lock_holder(fd: int, byte: int) -> int | None:
    """Who holds a lock conflicting with a write lock on ``byte``: a pid, 0 if unknown (an OFD
    lock, or a holder in another pid namespace), None if the byte is free. With OFD locks the
    query never reports a lock of ``fd``'s own description."""
    cmd = _F_OFD_GETLK if OFD_LOCKS and _F_OFD_GETLK is not None else fcntl.F_GETLK
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
    try:
        answer = fcntl.fcntl(fd, cmd, query)
    except OSError:
        return None
    l_type, _whence, _start, _len, pid = _FLOCK.unpack(answer)
    if l_type == fcntl.F_UNLCK:
        return None
    return max(int(pid), 0)


def _lock_path(shm_dir: str, base: str) -> str:
    """One spelling per file (``/dev/shm/.`` and ``/dev/shm`` are the same directory)."""
    return os.path.join(os.path.realpath(shm_dir), base + ".lock")


_registry_lock = threading.RLock()
_registry_pid = _getpid()
_lock_files: dict[str, LockFile] = {}


def _reset_registry_after_fork() -> None:
    """In a fork child: drop the inherited fds WITHOUT unlocking (the locks were the parent's and
    are not inherited anyway; an explicit unlock through a shared fd could only hurt)."""
    global _registry_lock, _registry_pid
    _registry_lock = threading.RLock()
    _registry_pid = _getpid()
    for lf in list(_lock_files.values()):
        lf.close_without_unlocking()
    _lock_files.clear()


def registry_lock() -> threading.RLock:
    """The process-wide registry lock (re-created lazily after a C-level fork)."""
    if _registry_pid != _getpid():
        _reset_registry_after_fork()
    return _registry_lock


def lock_file(shm_dir: str, base: str) -> LockFile:
    """The process's one :class:`LockFile` for ``base``, opened (and created) on first use."""
    path = _lock_path(shm_dir, base)
    with registry_lock():
        lf = _lock_files.get(path)
        if lf is not None and lf.replaced():
            # Someone removed or replaced the file: our locks on the orphan are meaningless now.
            log.warning("lock file %s was replaced underneath us; reopening it", path)
            lf.close_without_unlocking()
            lf = None
        if lf is None:
            lf = LockFile(path)
            _lock_files[path] = lf
        return lf


def existing_lock_file(shm_dir: str, base: str) -> LockFile | None:
    """The registry's lock file for ``base`` if this process has one open (never opens one)."""
    path = _lock_path(shm_dir, base)
    with registry_lock():
        return _lock_files.get(path)


def _forget_lock_file(lf: LockFile) -> None:
    with registry_lock():
        if _lock_files.get(lf.path) is lf:
            del _lock_files[lf.path]
        lf.close_without_unlocking()


# -- the segment ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Segment:
    """One process's mapping of the segment. A re-attach makes a new object; the old mapping is
    never unmapped explicitly (another thread may still be using it), it goes with its last
    reference."""

    namespace: str
    base: str
    shm_dir: str
    path: str
    fd: int
    mm: mmap.mmap
    words: memoryview  # 'Q' view of the whole segment
    identity: tuple[int, int]  # (st_dev, st_ino) of the mapped file
    lock: LockFile
    backend: int
    created: bool
    guard: mapguard.Guard = field(default_factory=lambda: mapguard.Guard(None))
    pid: int = field(default_factory=_getpid)

    @property
    def name(self) -> str:
        return "/" + self.base

    def replaced(self) -> bool:
        """True if the segment or lock file path now names another file (or none)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self.identity or self.lock.replaced()

    def truncated(self) -> bool:
        """True once our mapping lost its file's pages (truncated by the same user): its memory
        is zeros now (:mod:`mapguard`), nothing in it may be trusted or written back."""
        return self.guard.tripped()

    def close_fd(self) -> None:
        """Close the segment fd (the mapping stays valid until garbage collected)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _open_segment_fd(shm_dir: str, base: str, *, create: bool) -> int:
    """Open (or exclusively create, size 0) the segment. With the default directory we go through
    posix_ipc (shm_open); with a custom directory (tests, tiny tmpfs) we open the file directly,
    which is what shm_open does on Linux anyway. Never passes a size to posix_ipc: its constructor
    ftruncates even existing segments and unlinks them when that fails."""
    path = os.path.join(shm_dir, base)
    if shm_dir == DEFAULT_SHM_DIR and _HAVE_POSIX_IPC:
        try:
            shm = posix_ipc.SharedMemory("/" + base, posix_ipc.O_CREX if create else 0, 0o600)
        except posix_ipc.ExistentialError as exc:
            raise (FileExistsError if create else FileNotFoundError)(str(exc)) from exc
        except posix_ipc.PermissionsError as exc:
            raise SharedStateError(
                f"segment {path} is not accessible (owned by another user?): {exc}"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SharedStateError(f"segment {path} is a symlink; refusing it") from exc
            raise SharedStateError(f"cannot open segment {path}: {exc}") from exc
        fd = int(shm.fd)  # we own the fd from here; posix_ipc never closes it on its own
        return fd
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        return _open_private(path, "segment", flags)
    except FileExistsError:
        raise
    except SharedStateError as exc:
        if not create and isinstance(exc.__cause__, FileNotFoundError):
            raise FileNotFoundError(path) from exc
        raise


def _reserve(fd: int, path: str, created: bool) -> None:
    """posix_fallocate the whole segment: a full tmpfs becomes ENOSPC now, not SIGBUS later."""
    try:
        os.posix_fallocate(fd, 0, layout.TOTAL_SIZE)
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise SharedStateError(
            f"cannot reserve {layout.TOTAL_SIZE} bytes for {path}: {exc} "
            "(is the shared-memory filesystem full? raise --shm-size / the tmpfs size)"
        ) from exc


def _abi_tag() -> int:
    text = f"{os.uname().machine}|{sys.byteorder}|{layout.LAYOUT_VERSION}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def header_problem(words: memoryview) -> str | None:
    """Why the header is unusable, or None if it is a complete header of our layout."""
    w = layout.word_index
    if words[w(layout.MAGIC_OFF)] != layout.MAGIC:
        return "bad magic (not initialised, or corrupted)"
    if words[w(layout.ENDIAN_OFF)] != layout.ENDIAN_PROBE:
        return "endianness probe mismatch"
    mv = words.cast("B").cast("I")  # 32-bit fields
    i = layout.LAYOUT_OFF // 4
    if (mv[i], mv[i + 1]) != (layout.LAYOUT_VERSION, layout.HEADER_SIZE):
        return f"layout {mv[i]}/{mv[i + 1]} != {layout.LAYOUT_VERSION}/{layout.HEADER_SIZE}"
    i = layout.GEOMETRY_OFF // 4
    if (mv[i], mv[i + 1]) != (layout.SLOT_SIZE, layout.SLOT_COUNT):
        return "slot geometry mismatch"
    i = layout.HEALTH_GEOMETRY_OFF // 4
    if (mv[i], mv[i + 1]) != (layout.HEALTH_CAPACITY, layout.HEALTH_ENTRY):
        return "health geometry mismatch"
    if mv[layout.BACKEND_OFF // 4] not in layout.BACKEND_NAMES:
        return f"unknown counter backend code {mv[layout.BACKEND_OFF // 4]}"
    if words[w(layout.ABI_OFF)] != _abi_tag():
        return "ABI tag mismatch (another machine type wrote this header)"
    return None


def backend_code(words: memoryview) -> int:
    return int(words.cast("B").cast("I")[layout.BACKEND_OFF // 4])


def _initialise(mm: mmap.mmap, words: memoryview, namespace: str, backend: int) -> None:
    """Write a fresh header; the magic goes last so a crash leaves an uninitialised segment."""
    w = layout.word_index
    words[w(layout.MAGIC_OFF)] = 0
    mm[: layout.TOTAL_SIZE] = bytes(layout.TOTAL_SIZE)
    u32 = words.cast("B").cast("I")
    u32[layout.LAYOUT_OFF // 4] = layout.LAYOUT_VERSION
    u32[layout.LAYOUT_OFF // 4 + 1] = layout.HEADER_SIZE
    u32[layout.GEOMETRY_OFF // 4] = layout.SLOT_SIZE
    u32[layout.GEOMETRY_OFF // 4 + 1] = layout.SLOT_COUNT
    u32[layout.HEALTH_GEOMETRY_OFF // 4] = layout.HEALTH_CAPACITY
    u32[layout.HEALTH_GEOMETRY_OFF // 4 + 1] = layout.HEALTH_ENTRY
    u32[layout.BACKEND_OFF // 4] = backend
    words[w(layout.ABI_OFF)] = _abi_tag()
    words[w(layout.ENDIAN_OFF)] = layout.ENDIAN_PROBE
    words[w(layout.CREATED_OFF)] = time.time_ns()
    words[w(layout.ROTATION_OFF)] = int.from_bytes(os.urandom(8), "little")
    raw = namespace.encode("utf-8")[: layout.NAMESPACE_MAX]
    u32[layout.NAMESPACE_LEN_OFF // 4] = len(raw)
    mm[layout.NAMESPACE_OFF : layout.NAMESPACE_OFF + len(raw)] = raw
    words[w(layout.MAGIC_OFF)] = layout.MAGIC


def read_namespace(mm: mmap.mmap, words: memoryview) -> str:
    n = min(int(words.cast("B").cast("I")[layout.NAMESPACE_LEN_OFF // 4]), layout.NAMESPACE_MAX)
    return bytes(mm[layout.NAMESPACE_OFF : layout.NAMESPACE_OFF + n]).decode("utf-8", "replace")


def _choose_backend(requested: str) -> int:
    if requested == "auto":
        return layout.BACKEND_ATOMIC if counter.atomic_available() else layout.BACKEND_FLOCK
    code = layout.BACKEND_CODES.get(requested)
    if code is None:
        raise ValueError(f"counter_backend must be 'auto', 'atomic' or 'flock', not {requested!r}")
    if code == layout.BACKEND_ATOMIC and not counter.atomic_available():
        raise SharedStateError("counter_backend='atomic' requested but libatomic is not available")
    return code


def attach(namespace: str, shm_dir: str, counter_backend: str = "auto") -> Segment:
    """Open or create the segment under the init lock and take the "attached" marker.

    ``counter_backend`` matters only to the creator; everybody else uses the header's choice.
    """
    base = base_name(namespace)
    path = os.path.join(shm_dir, base)
    if not os.path.isdir(shm_dir):
        raise SharedStateError(f"shared-memory directory {shm_dir} does not exist")
    for _ in range(10):
        lf = lock_file(shm_dir, base)
        lf.lock(layout.LOCK_INIT)
        try:
            if lf.replaced():  # a cleanup removed it while we waited: start over on the new one
                continue
            return _attach_locked(namespace, base, shm_dir, path, lf, counter_backend)
        finally:
            if lf.fd >= 0:
                lf.unlock(layout.LOCK_INIT)
    raise SharedStateError(f"lock file for {path} keeps being replaced; giving up")


def _attach_locked(
    namespace: str, base: str, shm_dir: str, path: str, lf: LockFile, requested: str
) -> Segment:
    try:
        fd = _open_segment_fd(shm_dir, base, create=True)
        created = True
    except FileExistsError:
        try:
            fd = _open_segment_fd(shm_dir, base, create=False)
        except FileNotFoundError as exc:  # cannot happen under the init lock, unless rm races us
            raise SharedStateError(f"segment {path} vanished while attaching") from exc
        created = False
    try:
        st = _check_owned_file(fd, "segment", path)
        if created or st.st_size < layout.TOTAL_SIZE:
            _reserve(fd, path, created)  # also repairs a creator killed before it reserved
        mm = mmap.mmap(fd, layout.TOTAL_SIZE)
        guard = mapguard.guard(mm)  # a truncation from now on cannot kill us (mapguard.py)
        words = memoryview(mm).cast("Q")
        problem = None if created else header_problem(words)
        if created or problem is not None:
            if problem is not None:
                if not lf.try_lock(layout.LOCK_ATTACHED, exclusive=True):
                    raise SharedStateError(
                        f"segment {path} has a bad header ({problem}) but other processes are "
                        "attached; stop them and run `alternator-shm cleanup`"
                    )
                log.warning("rebuilding segment %s: %s", path, problem)
            _initialise(mm, words, namespace, _choose_backend(requested))
        code = backend_code(words)
        if code == layout.BACKEND_ATOMIC and not counter.atomic_available():
            raise SharedStateError(
                f"segment {path} uses the lock-free counter but libatomic is missing here; "
                "every process on a segment must use the same backend"
            )
        lf.lock(layout.LOCK_ATTACHED, exclusive=False)  # also downgrades a repair's exclusive
        return Segment(
            namespace=namespace,
            base=base,
            shm_dir=shm_dir,
            path=path,
            fd=fd,
            mm=mm,
            words=words,
            identity=(st.st_dev, st.st_ino),
            lock=lf,
            backend=code,
            created=created,
            guard=guard,
        )
    except BaseException:
        os.close(fd)
        raise


def open_counter_lock(shm_dir: str, base: str) -> int:
    """The flock backend's lock file (one fd per attachment, never shared with a fork child)."""
    path = os.path.join(shm_dir, base + ".ctr")
    fd = _open_private(path, "counter lock file", os.O_RDWR | os.O_CREAT)
    try:
        _check_owned_file(fd, "counter lock file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- read-only access and cleanup -----------------------------------------------------------------


@dataclass(eq=False)
class ReadOnlySegment:
    """A read-only mapping for diagnostics; never creates or repairs anything."""

    base: str
    shm_dir: str
    mm: mmap.mmap
    words: memoryview

    @property
    def name(self) -> str:
        return "/" + self.base


def open_read_only(shm_dir: str, base: str) -> ReadOnlySegment | None:
    """Map an existing, owned, initialised segment read-only; None if it is not usable."""
    path = os.path.join(shm_dir, base)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        if st.st_size < layout.TOTAL_SIZE:
            return None
        mm = mmap.mmap(fd, layout.TOTAL_SIZE, prot=mmap.PROT_READ)
        mapguard.guard(mm)  # `status` must not die of a truncation either
    finally:
        os.close(fd)
    words = memoryview(mm).cast("Q")
    if header_problem(words) is not None:
        return None
    return ReadOnlySegment(base=base, shm_dir=shm_dir, mm=mm, words=words)


def leader_pid_from_lock(shm_dir: str, base: str) -> int | None:
    """The pid holding the leader byte, by F_GETLK; never creates the lock file."""
    lf = existing_lock_file(shm_dir, base)
    if lf is not None:
        return lf.holder(layout.LOCK_LEADER)
    path = _lock_path(shm_dir, base)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:  # closing this fd is harmless: OFD locks of other descriptions stay
        return lock_holder(fd, layout.LOCK_LEADER)
    finally:
        os.close(fd)


def remove_if_unused(shm_dir: str, base: str) -> bool:
    """Unlink the segment (and its lock files) if no process is attached; True if removed.

    See :func:`try_remove`, which also says why a segment was kept.
    """
    return try_remove(shm_dir, base) is None


def try_remove(shm_dir: str, base: str) -> str | None:
    """Unlink the segment (and its lock files) if no process is attached; None if removed,
    else why it was kept, as a short phrase (``a process is attached``, ``already gone``...).

    Holds the init byte and the attached byte exclusively while unlinking, so a process that is
    attaching either finishes first (and then holds the attached byte) or notices afterwards that
    the lock file was replaced and starts over. This process's own "attached" marker does not
    count (POSIX locks of one process never conflict); callers check local use first. Works on
    any file under our name, whatever its content: it never reads the segment.
    """
    path = os.path.join(shm_dir, base)
    if not os.path.lexists(path):
        return "already gone"
    try:
        lf = lock_file(shm_dir, base)
    except SharedStateError as exc:
        log.warning("not removing %s: %s", path, exc)
        return str(exc)
    if not lf.try_lock(layout.LOCK_INIT):
        return "a process is attaching to it or removing it right now; try again"
    if not lf.try_lock(layout.LOCK_ATTACHED, exclusive=True):
        lf.unlock(layout.LOCK_INIT)  # unlock, never close: that would drop our other locks
        return "a process is attached"
    problem: str | None = None
    try:
        for suffix in ("", ".ctr", ".lock"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                if suffix == "":
                    problem = "already gone"
            except OSError as exc:  # e.g. another user's file in a sticky /dev/shm
                log.warning("could not remove %s: %s", path + suffix, exc)
                if suffix == "":
                    problem = f"cannot remove it: {exc.strerror or exc}"
                    break
    finally:
        _forget_lock_file(lf)  # closing drops our locks on the now-unlinked file
    return problem
