"""The per-process refresher thread: heal the attachment, try to lead, refresh, publish, probe.

Every process that starts a fleet runs one daemon thread per ``SharedFleet``; at most one thread
on the host leads (see :mod:`election`). Followers retry the leader lock every ``poll_interval``
(the failover time after a SIGKILL), take over a leader whose heartbeat is older than
``max(3 x refresh_interval, 2 s)`` (a SIGSTOPped or wedged one), and check that the segment was
not unlinked underneath them. Every leader write is fenced by its epoch (:mod:`fencing`): a
leader that was taken over, or whose ``close()`` returned, commits nothing. The leader:

* refreshes when a follower asked for it, when there is no table yet, or when the refresh
  interval elapsed since the *start* of the last successful refresh (it sleeps until exactly
  then, so a 0.1 s interval is served as 0.1 s; a stamp from the future counts as due):
  ``refresh_interval`` while the shared counter moved since the last refresh
  (traffic), ``idle_refresh_interval`` while it did not. All timestamps live in the segment, so a
  new leader after failover respects its predecessor's schedule (no thundering herd);
* after ``n`` consecutive failures waits ``min(backoff_max, backoff_initial * 2**(n-1))`` before
  the next attempt, and keeps the last good table meanwhile;
* publishes only validated, non-empty lists — or an empty one when the result carries a note
  saying why (``result.note``, e.g. discovery's "no live node in rack ..." verdict);
* admits new nodes into node health before publishing them, and probes quarantined and down
  nodes through :class:`~alternator_shm.fleet.probes.Prober` (never blocking this loop).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.fleet import events as _events
from alternator_shm.fleet import fencing, identity, layout, mapguard, table
from alternator_shm.fleet.health import HealthSettings
from alternator_shm.fleet.local import Attachment, LocalState
from alternator_shm.fleet.probes import Prober

__all__ = ["Fence", "FencedOut", "RefreshConfig", "Refresher", "refresh_once"]

log = logging.getLogger("alternator_shm.fleet.refresher")

_W = layout.word_index


@dataclass(frozen=True)
class RefreshConfig:
    refresh: Callable[[], Sequence[str]] | None
    probe: Callable[[str], bool] | None
    refresh_interval: float
    idle_refresh_interval: float
    poll_interval: float
    backoff_initial: float
    backoff_max: float
    health: HealthSettings | None
    counter_backend: str
    identity: bytes = b""  # this process's options (fleet/identity.py), recorded while leading


class FencedOut(Exception):
    """This writer's epoch is no longer current (taken over, or closed): nothing was written."""


@dataclass(frozen=True)
class Fence:
    """One leader's right to write: its segment, epoch and local revocation check."""

    seg: object  # Segment (kept loose: the attachment may be replaced meanwhile)
    epoch: int
    still_mine: Callable[[], bool]

    def commit(self, write: Callable[[], object]) -> bool:
        return fencing.commit(self.seg, self.epoch, write, self.still_mine)  # type: ignore[arg-type]


#: While a refresh runs, its leader still stamps the heartbeat this often (seconds), so a live
#: leader in a slow but bounded refresh (discovery's 4 s budget is longer than the 2 s takeover
#: threshold) is not taken for a wedged one...
_REFRESH_HEARTBEAT_EVERY = 0.25
#: ... but only this long (seconds: discovery's fetch budget plus margin): a refresh that runs
#: longer is wedged, and its heartbeat goes stale so that a follower takes over.
_REFRESH_HEARTBEAT_CAP = 6.0


@contextlib.contextmanager
def _heartbeat_during(fence: Fence, words: memoryview) -> Iterator[None]:
    """Stamp the heartbeat (fenced) from a daemon thread while the body runs. A SIGSTOPped
    process stops this thread too, so a stopped leader is still taken over in time."""
    done = threading.Event()

    def tick() -> None:
        end = time.monotonic() + _REFRESH_HEARTBEAT_CAP
        while not done.wait(_REFRESH_HEARTBEAT_EVERY) and time.monotonic() < end:
            if not fence.commit(lambda: words.__setitem__(_W(layout.HEARTBEAT_OFF),
                                                          time.monotonic_ns())):
                return  # taken over or closed: nothing more to stamp

    thread = threading.Thread(target=tick, name="alternator-shm-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _set_error(att: Attachment, text: str) -> None:
    raw = text.encode("utf-8", "replace")[: layout.ERROR_MAX]
    att.seg.mm[layout.ERROR_OFF : layout.ERROR_OFF + len(raw)] = raw
    att.seg.words.cast("B").cast("I")[layout.ERROR_LEN_OFF // 4] = len(raw)


def read_error(mm: object, words: memoryview) -> str | None:
    n = min(int(words.cast("B").cast("I")[layout.ERROR_LEN_OFF // 4]), layout.ERROR_MAX)
    if not n:
        return None
    data = bytes(memoryview(mm)[layout.ERROR_OFF : layout.ERROR_OFF + n])  # type: ignore[arg-type]
    return data.decode("utf-8", "replace")


def refresh_once(
    state: LocalState,
    att: Attachment,
    refresh: Callable[[], Sequence[str]],
    served: int,
    fence: Fence,
    ident: bytes = b"",
    prober: Prober | None = None,
) -> tuple[str, ...]:
    """Leader only: call ``refresh``, publish a valid result, record the outcome in the header;
    every write fenced by ``fence`` (raises :class:`FencedOut` if it was not current).

    Re-raises the callback's exception (or ValueError for a bad result) after recording it.
    A result with a ``note`` attribute (a one-line string) is published with that note.
    """
    words = att.seg.words
    with state.publish_lock:
        start = time.monotonic_ns()
        if not fence.commit(lambda: words.__setitem__(_W(layout.LAST_ATTEMPT_OFF), start)):
            raise FencedOut("not the current leader")
        counter_now = int(words[_W(layout.COUNTER_OFF)])
        try:
            with _heartbeat_during(fence, words):
                result = refresh()
            note = table.validate_note(getattr(result, "note", ""))
            nodes = table.validate_nodes(result, note)
        except BaseException as exc:
            failures = 0
            error_text = f"{type(exc).__name__}: {exc}"

            def record_failure() -> None:
                nonlocal failures
                failures = int(words[_W(layout.FAILURES_OFF)]) + 1
                words[_W(layout.FAILURES_OFF)] = failures
                _set_error(att, error_text)
                words[_W(layout.ATTEMPTS_OFF)] = int(words[_W(layout.ATTEMPTS_OFF)]) + 1
                words[_W(layout.REQUEST_SERVED_OFF)] = served

            if fence.commit(record_failure):
                state.last_failure = (served, exc)
                log.log(
                    logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG,
                    "refresh of %s failed (%d in a row), keeping the last table: %s",
                    att.seg.name, failures, exc,
                    extra=_events.fields("refresh_failed", segment=att.seg.name,
                                         failures=failures, error=error_text),
                )
            raise
        changed = False
        # new nodes enter admission quarantine before anyone routes (a shared write: fenced,
        # like everything a leader writes, so a closed or taken-over leader claims nothing)
        if not fence.commit(lambda: att.health.admit(nodes)):
            raise FencedOut("lost the leadership during the refresh; nothing was admitted")
        if prober is not None and int(words[_W(layout.PUBLISH_OFF)]) >> 1 == 0:
            # Only the host's first table waits for its nodes' admission probes, so the first
            # wave of calls already splits over active nodes. Later, a new node simply stays
            # quarantined until its probe answers: waiting here would age the whole table
            # (up to the admission wait) for the sake of one node. The wait is progress: the
            # heartbeat goes on meanwhile, so a follower does not take it for a wedged leader.
            with _heartbeat_during(fence, words):
                prober.admit(att.health, nodes, fence.still_mine)
        elif prober is not None:
            prober.cycle(att.health, nodes, fence.still_mine)  # start them without waiting

        def record_success() -> None:
            nonlocal changed
            identity.write(att.seg.mm, words, ident)
            before = int(words[_W(layout.PUBLISH_OFF)]) >> 1
            generation = table.publish(att.seg.mm, words, nodes, note)
            changed = generation != before
            if changed:
                att.health.collect(nodes)
            words[_W(layout.PUBLISHED_EPOCH_OFF)] = fence.epoch
            words[_W(layout.COUNTER_AT_REFRESH_OFF)] = counter_now
            words[_W(layout.LAST_SUCCESS_OFF)] = start  # the table is as fresh as the question
            words[_W(layout.FAILURES_OFF)] = 0
            words[_W(layout.REFRESHES_OFF)] = int(words[_W(layout.REFRESHES_OFF)]) + 1
            words[_W(layout.ATTEMPTS_OFF)] = int(words[_W(layout.ATTEMPTS_OFF)]) + 1
            words[_W(layout.REQUEST_SERVED_OFF)] = served

        if not fence.commit(record_success):
            log.warning("not publishing the refresh of %s: this process no longer leads it "
                        "(taken over or closed meanwhile)", att.seg.name)
            raise FencedOut("lost the leadership during the refresh; nothing was published")
        if changed:
            log.info("published %d nodes to %s (epoch %d)", len(nodes), att.seg.name,
                     fence.epoch, extra=_events.fields("table_published", segment=att.seg.name,
                                                       nodes=len(nodes), epoch=fence.epoch))
        return nodes


class Refresher:
    """One daemon thread of one ``SharedFleet`` in one process."""

    def __init__(self, state: LocalState, owner: object, config: RefreshConfig) -> None:
        self._state = state
        self._owner = owner
        self._config = config
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pid = _getpid()
        self._thread = threading.Thread(
            target=self._run, name=f"alternator-shm-refresher-{state.base}", daemon=True
        )
        self._prober = (
            Prober(config.probe, config.health)
            if config.probe is not None and config.health is not None
            else None
        )

    @property
    def prober(self) -> Prober | None:
        return self._prober

    def start(self) -> None:
        self._state.running.add(self._owner)
        self._state.wakers[self._owner] = self._wake
        self._thread.start()

    def alive(self) -> bool:
        return self._pid == _getpid() and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread and resign. Whatever the thread is still doing afterwards (a slow
        refresh), it can no longer write: the resignation revokes its epoch."""
        self._stop.set()
        self._wake.set()
        if self._prober is not None:
            self._prober.close()
        self._state.running.discard(self._owner)
        self._state.wakers.pop(self._owner, None)
        att = self._state.att
        self._state.election.resign(self._owner, att.seg if att is not None else None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        failures_logged = 0
        while not self._stop.is_set() and _getpid() == self._pid:
            delay = self._config.poll_interval
            try:
                delay = self.step()
                failures_logged = 0
            except Exception:
                failures_logged += 1
                if failures_logged == 1 or failures_logged % 100 == 0:
                    log.exception("refresher of %s failed", self._state.base)
            if self._stop.is_set():
                break
            self._wake.wait(delay)
            self._wake.clear()
        if _getpid() == self._pid:
            att = self._state.att
            self._state.election.resign(self._owner, att.seg if att is not None else None)

    def _follower_delay(self) -> float:
        return self._config.poll_interval * random.uniform(0.9, 1.1)

    def step(self) -> float:
        """One round; returns how long to sleep before the next one."""
        state, config = self._state, self._config
        att = state.ensure(config.counter_backend)
        mapguard.reinstall()  # on top again if e.g. faulthandler.enable() ran since
        if att.seg.truncated():
            att = state.reattach("segment was truncated underneath us (same user?)",
                                 config.counter_backend)
        elif att.seg.replaced():
            att = state.reattach("segment or lock file was removed or replaced underneath us",
                                 config.counter_backend)
        if config.refresh is None:
            return self._follower_delay()  # a pure reader never leads: it would starve
        if self._stop.is_set():
            return 0.0
        election = state.election
        seg = att.seg
        if not election.try_lead(self._owner, seg,
                                 fencing.stale_after_ns(config.refresh_interval)):
            return self._follower_delay()
        epoch = election.epoch
        owner = self._owner
        fence = Fence(seg, epoch, lambda: election.still_mine(owner, epoch)
                      and not self._stop.is_set())
        words = seg.words
        now = time.monotonic_ns()
        if not fence.commit(lambda: words.__setitem__(_W(layout.HEARTBEAT_OFF), now)):
            return 0.0  # fenced out: the next try_lead stands down
        request = int(words[_W(layout.REQUEST_OFF)])
        if self._due(words, now, request):
            # a failure is recorded in the header and logged; the last table stays in force
            with contextlib.suppress(Exception):
                refresh_once(state, att, config.refresh, request, fence, config.identity,
                             self._prober)
        nodes = att.reader.read()
        if nodes and self._prober is not None:
            self._prober.cycle(att.health, nodes, fence.still_mine)
        return self._leader_delay(words)

    def _interval(self, words: memoryview) -> float:
        config = self._config
        moved = (
            words[_W(layout.COUNTER_OFF)] != words[_W(layout.COUNTER_AT_REFRESH_OFF)]
            # affinity-routed attempts do not advance the counter but are traffic all the same
            or words[_W(layout.ACTIVITY_OFF)] > words[_W(layout.LAST_ATTEMPT_OFF)]
        )
        return config.refresh_interval if moved else config.idle_refresh_interval

    def _backoff(self, failures: int) -> float:
        config = self._config
        return float(min(config.backoff_max, config.backoff_initial * 2 ** min(failures - 1, 30)))

    def _due(self, words: memoryview, now: int, request: int) -> bool:
        if request != words[_W(layout.REQUEST_SERVED_OFF)]:
            return True  # a follower (or refresh_now) asked; bypasses the backoff
        failures = int(words[_W(layout.FAILURES_OFF)])
        if failures:
            stamp = int(words[_W(layout.LAST_ATTEMPT_OFF)])
            return fencing.stamp_is_stale(stamp, now, int(self._backoff(failures) * 1e9) - 1)
        if words[_W(layout.PUBLISH_OFF)] == 0:
            return True
        stamp = int(words[_W(layout.LAST_SUCCESS_OFF)])
        return fencing.stamp_is_stale(stamp, now, int(self._interval(words) * 1e9) - 1)

    def _leader_delay(self, words: memoryview) -> float:
        """Sleep until the next refresh could be due, but never longer than the poll interval
        (the heartbeat, requests and probes run on the poll). While idle, wake when the *active*
        interval would end: traffic may start meanwhile."""
        config = self._config
        now = time.monotonic_ns()
        failures = int(words[_W(layout.FAILURES_OFF)])
        if failures:
            stamp, period = int(words[_W(layout.LAST_ATTEMPT_OFF)]), self._backoff(failures)
        else:
            stamp, period = int(words[_W(layout.LAST_SUCCESS_OFF)]), self._interval(words)
            active_left = (stamp + config.refresh_interval * 1e9 - now) / 1e9
            if active_left > 0:
                period = config.refresh_interval
        left = (stamp + period * 1e9 - now) / 1e9
        return max(0.0005, min(config.poll_interval, left))
