"""Leadership of the refresher: the leader lock byte, the takeover of a wedged leader, and the
epoch (fencing token) that every leader write is checked against.

Two ways in, both ending with a new epoch in the segment (:mod:`fencing`):

* the leader lock (an OFD lock on byte 0 of the lock file): the kernel drops it the instant its
  holder dies (SIGKILL included), with no clock, lease or pid;
* a takeover: a SIGSTOPped or wedged leader keeps its lock, so when the heartbeat is older than
  ``max(3 x refresh_interval, 2 s)`` one follower -- the one that still sees the same stale
  epoch under the commit lock -- takes over with a newer epoch. It keeps trying the lock byte and
  holds it once the old holder is gone (no follower claims the freed lock byte while a takeover
  leader is alive). Meanwhile it holds its epoch's *deputy* byte (``layout.deputy_byte``, the
  epoch recorded in the segment): a takeover leader cannot hold the leader lock, so without it,
  its own death (the chaos test SIGKILLs leaders every second) would be noticed only by a second
  stale heartbeat, and the table would age meanwhile. A follower that sees that byte free while
  the current epoch is still that deputy's knows the deputy is gone and takes over at once. One
  byte per epoch: a stopped process holding an older epoch's byte blocks nobody.

A leader checks its epoch at every step and stands down (gives the lock byte back) as soon as it
sees a newer one, e.g. when it resumes after SIGCONT. It never writes in between: every write is
fenced by the epoch under the commit lock.

Locks of one process do not exclude its own threads (and two ``SharedFleet`` objects of a process
share one lock-file description), so :class:`Election` also keeps an in-process owner token: at
most one refresher of a process leads, and only it ever writes. PIDs are only diagnostics; a
(pid, starttime) pair identifies a process even after pid reuse.
"""

from __future__ import annotations

import logging
import threading
import time

from alternator_shm.fleet import events as _events
from alternator_shm.fleet import fencing, layout
from alternator_shm.fleet.segment import Segment

__all__ = ["Election", "process_identity", "process_starttime"]

log = logging.getLogger("alternator_shm.fleet.election")

_W = layout.word_index
_STAND_DOWN_COOLDOWN = 1.0  # seconds a leader that was fenced out waits before trying again


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


def _take_deputy_byte(seg: Segment, epoch: int) -> int | None:
    """Take the first free deputy byte from ``layout.deputy_byte(epoch)`` on (a stopped process
    may still hold one); None if all are held."""
    for k in range(layout.DEPUTY_BYTES):
        byte = layout.deputy_byte(epoch + k)
        if seg.lock.try_lock(byte):
            return byte
    return None


class Election:
    """This process's leadership of one namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: object | None = None
        self._epoch = 0
        self._mode = fencing.MODE_NONE
        self._deputy: int | None = None  # the deputy byte we hold (a takeover leader only)
        self._cooldown_until = 0.0

    def owner_is(self, owner: object) -> bool:
        return self._owner is owner

    @property
    def leading(self) -> bool:
        return self._owner is not None

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def mode(self) -> int:
        return self._mode

    def try_lead(self, owner: object, seg: Segment, stale_after_ns: int | None = None) -> bool:
        """One election step for ``owner``; True if it leads (with a current epoch) afterwards.

        Leading: stand down if a newer epoch exists; in takeover mode, try to get the lock byte.
        Not leading: take the lock byte (new epoch), or, if ``stale_after_ns`` is given, take
        over when the leader's heartbeat is older than that or the takeover leader is gone.
        """
        with self._lock:
            if self._owner is not None:
                if self._owner is not owner:
                    return False
                if fencing.current_epoch(seg.words) != self._epoch:
                    self._stand_down(seg, "a newer leader epoch exists (we were taken over)")
                    return False
                if self._mode == fencing.MODE_TAKEOVER:
                    self._takeover_step(seg)
                return True
            if time.monotonic() < self._cooldown_until:
                return False
            if seg.lock.try_lock(layout.LOCK_LEADER):
                epoch = fencing.claim(seg, stale_after_ns)
                if epoch is None:  # commit lock stuck, or a live takeover leader's turn
                    seg.lock.unlock(layout.LOCK_LEADER)
                    return False
                self._become(owner, epoch, fencing.MODE_LOCK)
                log.info("pid %d leads the refresh of %s (epoch %d)", seg.pid, seg.name, epoch,
                         extra=_events.fields("leader_elected", segment=seg.name, epoch=epoch,
                                              takeover=False))
                return True
            if stale_after_ns is None:
                return False
            return self._try_take_over(owner, seg, stale_after_ns)

    def _takeover_step(self, seg: Segment) -> None:
        """A takeover leader's step: hold the leader lock once its old holder is gone (then the
        deputy byte is not needed), else hold its epoch's deputy byte if it did not get it at
        once."""
        if seg.lock.try_lock(layout.LOCK_LEADER):
            if fencing.commit(seg, self._epoch, lambda: seg.words.__setitem__(
                    _W(layout.LEADER_MODE_OFF), fencing.MODE_LOCK)):
                self._mode = fencing.MODE_LOCK
                self._drop_deputy(seg)
                log.info("the takeover leader of %s now holds the leader lock", seg.name)
            else:
                seg.lock.unlock(layout.LOCK_LEADER)
        elif self._deputy is None:
            byte = _take_deputy_byte(seg, self._epoch)
            if byte is not None:
                if fencing.hold_deputy(seg, self._epoch, byte):
                    self._deputy = byte
                else:
                    seg.lock.unlock(byte)

    def _try_take_over(self, owner: object, seg: Segment, stale_after_ns: int) -> bool:
        """Take over from a leader whose heartbeat is stale, or at once from a takeover leader
        that is gone: it held its epoch's deputy byte, which the kernel freed when it died
        (SIGKILL included) or that it gave back on ``close()``. Without this, a takeover leader
        killed before its first refresh left the table ageing for another heartbeat threshold.

        No byte is taken to decide (the state of the old deputy byte is only read): a follower
        SIGSTOPped in here holds nothing another follower needs."""
        orphaned = fencing.deputy_orphaned(seg)
        if not orphaned and not fencing.heartbeat_is_stale(seg.words, stale_after_ns):
            return False
        seen = fencing.current_epoch(seg.words)
        deputy = _take_deputy_byte(seg, seen + 1)  # the seat of the epoch we would start
        try:
            epoch = fencing.take_over(seg, seen, stale_after_ns, deputy)
            if epoch is None:
                return False
            self._become(owner, epoch, fencing.MODE_TAKEOVER)
            self._deputy, deputy = deputy, None  # keep the byte while we lead by takeover
        finally:
            if deputy is not None:
                seg.lock.unlock(deputy)
        why = ("the previous takeover leader is gone" if orphaned
               else f"a wedged leader: heartbeat older than {stale_after_ns / 1e9:.1f}s")
        log.warning(
            "pid %d took over the refresh of %s (%s; epoch %d)",
            seg.pid, seg.name, why, epoch,
            extra=_events.fields("leader_elected", segment=seg.name, epoch=epoch,
                                 takeover=True),
        )
        return True

    def _drop_deputy(self, seg: Segment) -> None:
        if self._deputy is not None and seg.lock.fd >= 0:
            seg.lock.unlock(self._deputy)
        self._deputy = None

    def _become(self, owner: object, epoch: int, mode: int) -> None:
        self._owner = owner
        self._epoch = epoch
        self._mode = mode

    def _stand_down(self, seg: Segment, why: str) -> None:
        log.warning("pid %d stops leading %s: %s", seg.pid, seg.name, why,
                    extra=_events.fields("leader_resigned", segment=seg.name, reason=why))
        self._release(seg)
        self._cooldown_until = time.monotonic() + _STAND_DOWN_COOLDOWN

    def _release(self, seg: Segment) -> None:
        # Revoke under the process's commit thread lock: once this returns, no commit of this
        # process's threads can pass its ``still_mine`` check any more.
        with seg.lock.thread_lock:
            self._owner = None
        if self._mode == fencing.MODE_LOCK and seg.lock.fd >= 0:
            seg.lock.unlock(layout.LOCK_LEADER)  # same fd, never close (other bytes would go)
        self._drop_deputy(seg)
        self._mode = fencing.MODE_NONE

    def still_mine(self, owner: object, epoch: int) -> bool:
        """Checked under the commit lock by every fenced write of this process."""
        return self._owner is owner and self._epoch == epoch

    def resign(self, owner: object, seg: Segment | None) -> None:
        """Stop leading: revoke locally, vacate the epoch (nothing in flight can commit after
        this returns), give the lock byte back."""
        with self._lock:
            if self._owner is not owner:
                return
            if seg is None or seg.lock.fd < 0:
                self._owner = None
                self._mode = fencing.MODE_NONE
                self._deputy = None
                return
            epoch = self._epoch
            self._release(seg)
            fencing.vacate(seg, epoch)
            log.info("pid %d stopped leading %s", seg.pid, seg.name,
                     extra=_events.fields("leader_resigned", segment=seg.name, reason="closed"))

    def forget(self) -> None:
        """The lock file was replaced: whatever we held on the old one means nothing now."""
        with self._lock:
            self._owner = None
            self._mode = fencing.MODE_NONE
            self._deputy = None
