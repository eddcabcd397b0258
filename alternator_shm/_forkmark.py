"""A fork check cheaper than ``os.getpid()``: one load from a page the kernel wipes on fork.

``os.getpid()`` is a system call (glibc stopped caching it in 2.25): about 0.1-0.2 µs, the
largest single cost of a pick. Linux (>= 4.14) can instead mark a private anonymous page
``MADV_WIPEONFORK``: every fork's child, however it was made (``os.fork``, multiprocessing, or
a ``fork()`` from C without Python's at-fork hooks, as uWSGI does), sees the page zeroed, while
the threads of one process share it. A process stores a random non-zero *token* in it;
:func:`token` returns this process's (storing a new one when it reads zero: we are a new
child), and :data:`current` reads the word back, so ``current() == token_seen_earlier``
means "still the same process". A random 64-bit token, not the pid: a reused pid cannot match.

Where the advice is unavailable (another OS, an old kernel, an unknown architecture) the token
is the pid and :data:`current` is ``os.getpid``: the same check, at the system call's price.

:data:`getpid` is ``os.getpid`` for code that needs the number itself (or compares pids it
stored): with the optional ``_pidcache`` extension and a wiped page it is answered from memory
while the mark holds the token stored beside the cached pid (about 0.05 µs against the system
call's 0.2), and asks the kernel again in every new child.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import platform
import secrets
from collections.abc import Callable

__all__ = ["address", "current", "getpid", "kernel_wiped", "pid_cached", "token"]

# MADV_WIPEONFORK is 18 in asm-generic (every architecture below); Python builds against old
# headers lack the constant.
_GENERIC_ARCHES = ("x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x")
_MADV_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", None)
if (
    _MADV_WIPEONFORK is None
    and platform.system() == "Linux"
    and platform.machine().lower() in _GENERIC_ARCHES
):
    _MADV_WIPEONFORK = 18

def _wiped_page() -> tuple[memoryview, int] | None:
    if _MADV_WIPEONFORK is None or os.environ.get("ALTERNATOR_SHM_NO_WIPEONFORK") == "1":
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page.madvise(_MADV_WIPEONFORK)
    except (OSError, ValueError, AttributeError):  # EINVAL: kernel < 4.14
        return None
    # Both exports pin the mapping for the process's life (it can no longer be closed), so
    # the address stays valid for the C pick (fleet/_atomic.c) that loads the token there.
    pinned = (ctypes.c_char * mmap.PAGESIZE).from_buffer(page)
    _pins.append(pinned)
    return memoryview(page).cast("Q"), ctypes.addressof(pinned)


_pins: list[object] = []
_page = _wiped_page()
_word = _page[0] if _page is not None else None

#: True if the kernel wipes the token on fork (else the token is the pid).
kernel_wiped = _word is not None
#: Address of the token word (8-byte aligned) when :data:`kernel_wiped`, else None.
address: int | None = _page[1] if _page is not None else None

#: This process's token as it is now (a C-level call, no Python frame): 0 in a new child.
current: Callable[[], int] = (
    functools.partial(_word.__getitem__, 0) if _word is not None else os.getpid
)


def _pid_function() -> Callable[[], int]:
    if address is None:
        return os.getpid
    try:
        from alternator_shm import _pidcache
    except ImportError:  # installed without a C compiler
        return os.getpid
    _pidcache.bind(address)
    return _pidcache.getpid


#: ``os.getpid()``, asked of the kernel only after a fork when :data:`pid_cached`.
getpid: Callable[[], int] = _pid_function()
#: True if :data:`getpid` answers from memory between forks.
pid_cached = getpid is not os.getpid


def token() -> int:
    """This process's token (never 0): compare it later with :data:`current`'s value."""
    word = _word
    if word is None:
        return os.getpid()
    value = int(word[0])
    if value:
        return value
    # No lock (one held at a C-level fork would never be released in the child): threads of
    # a new child racing here may each store a token; the last store wins, and a path built
    # with a losing token fails its next check and is rebuilt with the winner.
    value = secrets.randbits(64) or 1
    word[0] = value
    return value
