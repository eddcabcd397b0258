"""Leadership of the refresher: a POSIX record lock on byte 0 of the namespace's lock file.

Why this lock: the kernel drops it the instant its holder dies (SIGKILL included), a fork child
does not inherit it (unlike flock and OFD locks), and it needs no clock, lease or pid. PIDs are
only diagnostics; a (pid, starttime) pair identifies a process even after pid reuse.

POSIX record locks belong to the *process*, so two threads (or two ``SharedFleet`` objects) of one
process would both "win". :class:`Election` therefore also keeps an in-process owner token: at
most one refresher of a process leads, and only it ever writes the table.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from alternator_shm.fleet import events as _events
from alternator_shm.fleet import layout
from alternator_shm.fleet.segment import Segment

__all__ = ["Election", "process_identity", "process_starttime"]

log = logging.getLogger("alternator_shm.fleet.election")

_W = layout.word_index


def process_starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        # the command name (field 2) may contain spaces and ')': split after the last ')'
        fields = data[data.rindex(b")") + 2 :].split()
        return int(fields[19])
    except (ValueError, IndexError):
        return None


def process_identity(pid: int, starttime: int) -> bool:
    """True if ``pid`` is alive *and* is the process that had ``starttime`` (no pid reuse)."""
    return pid > 0 and process_starttime(pid) == starttime


class Election:
    """This process's leadership of one namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: object | None = None

    def owner_is(self, owner: object) -> bool:
        return self._owner is owner

    @property
    def leading(self) -> bool:
        return self._owner is not None

    def try_lead(self, owner: object, seg: Segment) -> bool:
        """Take the leader byte without blocking; True if ``owner`` leads afterwards."""
        with self._lock:
            if self._owner is not None:
                return self._owner is owner
            if not seg.lock.try_lock(layout.LOCK_LEADER):
                return False
            self._owner = owner
        pid = os.getpid()
        words = seg.words
        words[_W(layout.LEADER_START_OFF)] = process_starttime(pid) or 0
        words[_W(layout.LEADER_SINCE_OFF)] = time.monotonic_ns()
        words[_W(layout.LEADER_PID_OFF)] = pid
        log.info("pid %d leads the refresh of %s", pid, seg.name,
                 extra=_events.fields("leader_elected", segment=seg.name))
        return True

    def resign(self, owner: object, seg: Segment | None) -> None:
        """Give the leader byte back (same fd, LOCK_UN: closing it would drop bytes 1-2 too)."""
        with self._lock:
            if self._owner is not owner:
                return
            self._owner = None
            if seg is not None and seg.lock.fd >= 0:
                if seg.words[_W(layout.LEADER_PID_OFF)] == os.getpid():
                    seg.words[_W(layout.LEADER_PID_OFF)] = 0
                seg.lock.unlock(layout.LOCK_LEADER)
                log.info("pid %d stopped leading %s", os.getpid(), seg.name,
                         extra=_events.fields("leader_resigned", segment=seg.name))

    def forget(self) -> None:
        """The lock file was replaced: whatever we held on the old one means nothing now."""
        with self._lock:
            self._owner = None
