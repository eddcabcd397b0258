"""The leader epoch (fencing token): who may write the node table and the refresh words.

Leadership has two ways in (see :mod:`election`): the leader lock byte, or the takeover of a
leader whose heartbeat is older than ``max(3 x refresh_interval, 2 s)`` (a SIGSTOPped or wedged
leader still holds its lock, so the lock alone cannot hand leadership on). Either way the new
leader bumps the segment's epoch word and remembers the value. Every write a leader makes to the
table and to the refresh words (heartbeat, stamps, counts, error text) goes through
:func:`commit`, which performs it only while the epoch is still the writer's.

**Why a lock and not a CAS.** The check and the writes must be atomic with respect to a takeover.
A CAS on a word combining epoch and publish word would fence the *flip*, but not the slot: a
fenced-out writer stopped halfway through writing the inactive slot resumes and keeps writing
into what may by then be the *active* slot of its successor (with the same generation number, so
readers could even accept its stale table). So the whole commit -- epoch check, slot write,
publish flip, stamps -- runs under a short exclusive lock on byte ``LOCK_COMMIT`` of the lock
file, and a takeover (or ``close()``) bumps the epoch under the same lock. The lock is
kernel-released: a writer SIGKILLed inside it frees it at once. The section does no I/O and no
waiting (a memcpy of at most one slot and one blake2b digest: tens of microseconds), and every
acquisition is bounded (``_COMMIT_WAIT``): a commit that cannot get the lock is skipped, a
takeover is retried at the next poll. The one residual case: a process SIGSTOPped *inside* those
microseconds delays every commit on the host until it is continued or killed; it can never make a
stale write.

Ordering: readers never take the lock. The publish word is still the readers' commit point
(see :mod:`table`); a commit that failed its epoch check wrote nothing at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import layout
from alternator_shm.fleet.segment import Segment

__all__ = [
    "MODE_LOCK",
    "MODE_NONE",
    "MODE_TAKEOVER",
    "claim",
    "commit",
    "commit_section",
    "current_epoch",
    "deputy_orphaned",
    "heartbeat_is_stale",
    "hold_deputy",
    "live_takeover_leader",
    "stale_after_ns",
    "stamp_is_stale",
    "take_over",
    "vacate",
]

log = logging.getLogger("alternator_shm.fleet.fencing")

_W = layout.word_index
_EPOCH = _W(layout.EPOCH_OFF)
_HEARTBEAT = _W(layout.HEARTBEAT_OFF)
_COMMIT_WAIT = 1.0  # seconds: a commit section lasts microseconds unless its holder is stopped
_FUTURE_SLACK_NS = 50_000_000  # a stamp more than 50 ms ahead of our clock counts as stale

MODE_NONE = 0
MODE_LOCK = 1
MODE_TAKEOVER = 2

def stale_after_ns(refresh_interval: float) -> int:
    """A leader whose heartbeat is older than this counts as wedged: max(3 x interval, 2 s)."""
    return int(max(3.0 * refresh_interval, 2.0) * 1e9)


def stamp_is_stale(stamp: int, now: int, max_age_ns: int) -> bool:
    """True if ``stamp`` (monotonic ns) is older than ``max_age_ns``, never set, or in the
    future (a stamp from the future would otherwise suppress the action forever)."""
    return stamp == 0 or now - stamp > max_age_ns or stamp - now > _FUTURE_SLACK_NS


def current_epoch(words: memoryview) -> int:
    return int(words[_EPOCH])


def heartbeat_is_stale(words: memoryview, max_age_ns: int) -> bool:
    return stamp_is_stale(int(words[_HEARTBEAT]), time.monotonic_ns(), max_age_ns)


@contextlib.contextmanager
def commit_section(seg: Segment, timeout: float = _COMMIT_WAIT) -> Iterator[bool]:
    """Hold the commit lock (this process's threads and other processes excluded); yields False
    instead if it could not be had within ``timeout`` (its holder is stopped)."""
    lf = seg.lock
    if not lf.thread_lock.acquire(timeout=timeout):
        yield False
        return
    try:
        deadline = time.monotonic() + timeout
        delay = 0.0002
        while True:
            if lf.fd < 0:
                yield False
                return
            try:
                got = lf.try_lock(layout.LOCK_COMMIT)
            except OSError as exc:
                raise SharedStateError(f"cannot lock {lf.path}: {exc}") from exc
            if got:
                break
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        try:
            yield True
        finally:
            with contextlib.suppress(OSError):
                lf.unlock(layout.LOCK_COMMIT)
    finally:
        lf.thread_lock.release()


def _write_leader(words: memoryview, epoch: int, mode: int, now: int) -> None:
    from alternator_shm.fleet.election import process_starttime  # no import cycle at load

    pid = _getpid()
    words[_EPOCH] = epoch
    words[_W(layout.LEADER_MODE_OFF)] = mode
    words[_W(layout.LEADER_START_OFF)] = process_starttime(pid) or 0
    words[_W(layout.LEADER_SINCE_OFF)] = now
    words[_W(layout.LEADER_PID_OFF)] = pid
    words[_HEARTBEAT] = now


def claim(seg: Segment, max_age_ns: int | None = None) -> int | None:
    """The caller just took the leader lock: start a new epoch. None if the commit lock could
    not be had, or -- given ``max_age_ns`` -- a live takeover leader is about to take the lock
    itself (the caller gives the leader lock back and retries later)."""
    with commit_section(seg) as ok:
        if not ok:
            return None
        if max_age_ns is not None and live_takeover_leader(seg, max_age_ns):
            return None
        words = seg.words
        epoch = int(words[_EPOCH]) + 1
        _write_leader(words, epoch, MODE_LOCK, time.monotonic_ns())
        return epoch


def deputy_orphaned(seg: Segment) -> bool:
    """True if the current leader is a takeover leader that held its deputy byte and is gone
    (SIGKILLed, or closed): that byte is free now (see :mod:`election`). Reads the byte's state
    without taking it, so a process stopped here holds nothing."""
    words = seg.words
    epoch = int(words[_EPOCH])
    return (
        int(words[_W(layout.LEADER_MODE_OFF)]) == MODE_TAKEOVER
        and int(words[_W(layout.DEPUTY_EPOCH_OFF)]) == epoch
        and seg.lock.holder(_deputy_byte_of(words)) is None
    )


def _deputy_byte_of(words: memoryview) -> int:
    byte = int(words[_W(layout.DEPUTY_BYTE_OFF)])
    in_range = layout.LOCK_DEPUTY_BASE <= byte < layout.LOCK_DEPUTY_BASE + layout.DEPUTY_BYTES
    return byte if in_range else layout.LOCK_DEPUTY_BASE


def live_takeover_leader(seg: Segment, max_age_ns: int) -> bool:
    """True if a takeover leader leads and is alive: the leader lock it is about to take over
    from the stopped process must be left to it, not claimed by whoever polls first."""
    words = seg.words
    return (
        int(words[_W(layout.LEADER_MODE_OFF)]) == MODE_TAKEOVER
        and int(words[_W(layout.LEADER_PID_OFF)]) != 0
        and not heartbeat_is_stale(words, max_age_ns)
        and not deputy_orphaned(seg)
    )


def take_over(
    seg: Segment, seen_epoch: int, max_age_ns: int, deputy: int | None = None
) -> int | None:
    """Replace a wedged or vanished leader: a new epoch if the epoch is still ``seen_epoch`` and,
    *under the commit lock* (so of several followers trying at once, exactly one succeeds), its
    heartbeat is still stale or the takeover leader of that epoch is gone
    (:func:`deputy_orphaned`); else None. ``deputy``: the deputy byte the caller holds, if
    any."""
    with commit_section(seg) as ok:
        if not ok:
            return None
        words = seg.words
        if int(words[_EPOCH]) != seen_epoch:
            return None
        if not heartbeat_is_stale(words, max_age_ns) and not deputy_orphaned(seg):
            return None
        epoch = seen_epoch + 1
        _write_leader(words, epoch, MODE_TAKEOVER, time.monotonic_ns())
        if deputy is not None:
            words[_W(layout.DEPUTY_BYTE_OFF)] = deputy
            words[_W(layout.DEPUTY_EPOCH_OFF)] = epoch
        words[_W(layout.TAKEOVERS_OFF)] = int(words[_W(layout.TAKEOVERS_OFF)]) + 1
        return epoch


def hold_deputy(seg: Segment, epoch: int, byte: int) -> bool:
    """A takeover leader that got a deputy byte only after its takeover records it (fenced)."""
    def write() -> None:
        seg.words[_W(layout.DEPUTY_BYTE_OFF)] = byte
        seg.words[_W(layout.DEPUTY_EPOCH_OFF)] = epoch

    return commit(seg, epoch, write)


def _always() -> bool:
    return True


def commit(
    seg: Segment, epoch: int, write: Callable[[], object], still_mine: Callable[[], bool] = _always
) -> bool:
    """Run ``write`` under the commit lock iff ``epoch`` is still current and ``still_mine()``
    (the process-local revocation by ``close()``, checked under the same lock); True if it ran."""
    with commit_section(seg) as ok:
        if not ok or int(seg.words[_EPOCH]) != epoch or not still_mine():
            return False
        write()
        return True


def vacate(seg: Segment, epoch: int) -> bool:
    """Give the epoch up (``close()``, standing down): bump it so that nothing this process
    still has in flight can commit. False if it was not ours any more (or the lock was stuck:
    then ``close`` still stops every local writer through the election's owner token)."""
    with commit_section(seg) as ok:
        if not ok:
            return False
        words = seg.words
        if int(words[_EPOCH]) != epoch:
            return False
        # a takeover leader holding its deputy byte hands its seat on at once: the epoch it
        # leaves is recorded as a deputy's whose byte nobody holds, so the next follower to
        # look sees it orphaned (no stale heartbeat to wait for)
        seat_handed_on = (int(words[_W(layout.LEADER_MODE_OFF)]) == MODE_TAKEOVER
                          and int(words[_W(layout.DEPUTY_EPOCH_OFF)]) == epoch)
        words[_EPOCH] = epoch + 1
        if seat_handed_on:
            words[_W(layout.DEPUTY_EPOCH_OFF)] = epoch + 1
        else:
            words[_W(layout.LEADER_MODE_OFF)] = MODE_NONE
        words[_W(layout.LEADER_PID_OFF)] = 0
        return True
