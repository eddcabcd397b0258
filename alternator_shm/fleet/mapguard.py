"""Survive a segment truncated underneath this process (the optional ``_mapguard`` extension).

A same-user ``truncate -s 0 /dev/shm/rrlb3.*`` while processes have the segment mapped makes
the kernel drop its pages from every mapping; the next access is a SIGBUS, and its default
action kills the process with every call in flight. Fail-soft (:mod:`.failsoft`) cannot catch a
signal, so the C extension ``_mapguard`` absorbs it: a SIGBUS inside a guarded mapping maps zero
pages over it and marks it *tripped* (the technique Wayland compositors use for client
shared-memory pools). The library then notices -- :meth:`Guard.tripped` in the refresher's
every poll, and the table reader seeing a zero publish word after a table -- and raises
:class:`~alternator_shm.errors.SharedStateError`, so fail-soft takes the process off the
segment: no call fails.

Without the extension (no C compiler at install time) :func:`guard` returns a guard that never
trips, and a truncation still kills attached processes (README, "Limits").
"""

from __future__ import annotations

import functools
import logging
import mmap
import threading
import weakref
from types import ModuleType

__all__ = ["Guard", "available", "guard", "reinstall"]

log = logging.getLogger("alternator_shm.fleet.mapguard")

_ext: ModuleType | None = None
try:
    from alternator_shm.fleet import _mapguard as _ext_mod
except ImportError:  # built with optional=True: absent without a C compiler
    pass
else:
    _ext = _ext_mod

_lock = threading.Lock()
_refs: dict[int, weakref.ref[mmap.mmap]] = {}  # keep the callbacks' references alive


def available() -> bool:
    """True if truncation of a mapped segment is survived (the extension is built)."""
    return _ext is not None


def reinstall() -> None:
    """Put the handler back on top if something (``faulthandler.enable()``) replaced it since:
    a handler installed over ours would see our SIGBUS first and end the process."""
    if _ext is not None:
        _ext.install()


class Guard:
    """The guard of one mapping; :meth:`tripped` turns True once a SIGBUS there was absorbed."""

    __slots__ = ("__weakref__", "_slot")

    def __init__(self, slot: int | None) -> None:
        self._slot = slot

    def tripped(self) -> bool:
        return self._slot is not None and _ext is not None and bool(_ext.tripped(self._slot))


def guard(mm: mmap.mmap) -> Guard:
    """Guard ``mm`` for as long as it lives (released when it is garbage collected; ``mm`` must
    not be closed explicitly while guarded, or another mapping could reuse its addresses; the
    release runs just after CPython unmapped it, a window no file mapping can race in practice)."""
    if _ext is None:
        return Guard(None)
    with _lock:
        try:
            _ext.install()
            slot = int(_ext.guard(mm))
        except (OSError, RuntimeError) as exc:
            log.debug("cannot guard a mapping against truncation: %s", exc)
            return Guard(None)
        # Released by a weakref callback that is C all the way (partial + the extension), so
        # no bytecode runs there: a Ctrl-C can never land inside it and be dropped, as it can
        # in a weakref.finalize callback. Dead references are pruned here.
        for key in [k for k, ref in _refs.items() if ref() is None]:
            del _refs[key]
        _refs[id(mm)] = weakref.ref(mm, functools.partial(_ext.unguard, slot))
    return Guard(slot)
