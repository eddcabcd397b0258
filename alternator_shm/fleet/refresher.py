"""The per-process refresher thread: heal the attachment, try to lead, refresh, publish, probe.

Every process that starts a fleet runs one daemon thread per ``SharedFleet``; at most one thread
on the host leads (see :mod:`election`). Followers only retry the leader lock every
``poll_interval`` — that period is the failover time — and check that the segment was not
unlinked underneath them. The leader:

* refreshes when a follower asked for it, when there is no table yet, or when the refresh
  interval elapsed: ``refresh_interval`` while the shared counter moved since the last refresh
  (traffic), ``idle_refresh_interval`` while it did not. All timestamps live in the segment, so a
  new leader after failover respects its predecessor's schedule (no thundering herd);
* after ``n`` consecutive failures waits ``min(backoff_max, backoff_initial * 2**(n-1))`` before
  the next attempt, and keeps the last good table meanwhile;
* publishes only validated, non-empty lists — or an empty one when the result carries a note
  saying why (``result.note``, e.g. discovery's "no live node in rack ..." verdict);
* probes quarantined nodes (at most every ``probe_interval`` per node) and releases the healthy
  ones, or expires quarantines after ``quarantine`` seconds when no probe is configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alternator_shm.fleet import events as _events
from alternator_shm.fleet import layout, table
from alternator_shm.fleet.local import Attachment, LocalState

__all__ = ["RefreshConfig", "Refresher", "refresh_once"]

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
    probe_interval: float
    quarantine: float
    counter_backend: str


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
    state: LocalState, att: Attachment, refresh: Callable[[], Sequence[str]], served: int
) -> tuple[str, ...]:
    """Leader only: call ``refresh``, publish a valid result, record the outcome in the header.

    Re-raises the callback's exception (or ValueError for a bad result) after recording it.
    A result with a ``note`` attribute (a one-line string) is published with that note.
    """
    words = att.seg.words
    with state.publish_lock:
        now = time.monotonic_ns()
        words[_W(layout.LAST_ATTEMPT_OFF)] = now
        counter_now = int(words[_W(layout.COUNTER_OFF)])
        try:
            result = refresh()
            note = table.validate_note(getattr(result, "note", ""))
            nodes = table.validate_nodes(result, note)
        except BaseException as exc:
            failures = int(words[_W(layout.FAILURES_OFF)]) + 1
            words[_W(layout.FAILURES_OFF)] = failures
            _set_error(att, f"{type(exc).__name__}: {exc}")
            words[_W(layout.ATTEMPTS_OFF)] = int(words[_W(layout.ATTEMPTS_OFF)]) + 1
            words[_W(layout.REQUEST_SERVED_OFF)] = served
            log.log(
                logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG,
                "refresh of %s failed (%d in a row), keeping the last table: %s",
                att.seg.name, failures, exc,
                extra=_events.fields("refresh_failed", segment=att.seg.name, failures=failures,
                                     error=f"{type(exc).__name__}: {exc}"),
            )
            raise
        before = att.reader.generation
        generation = table.publish(att.seg.mm, words, nodes, note)
        if generation != before:
            att.health.collect(nodes)
            log.info("published generation %d of %s: %d nodes", generation, att.seg.name,
                     len(nodes), extra=_events.fields("table_published", segment=att.seg.name,
                                                      generation=generation, nodes=len(nodes)))
        words[_W(layout.COUNTER_AT_REFRESH_OFF)] = counter_now
        words[_W(layout.LAST_SUCCESS_OFF)] = time.monotonic_ns()
        words[_W(layout.FAILURES_OFF)] = 0
        words[_W(layout.REFRESHES_OFF)] = int(words[_W(layout.REFRESHES_OFF)]) + 1
        words[_W(layout.ATTEMPTS_OFF)] = int(words[_W(layout.ATTEMPTS_OFF)]) + 1
        words[_W(layout.REQUEST_SERVED_OFF)] = served
        return nodes


class Refresher:
    """One daemon thread of one ``SharedFleet`` in one process."""

    def __init__(self, state: LocalState, owner: object, config: RefreshConfig) -> None:
        self._state = state
        self._owner = owner
        self._config = config
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name=f"alternator-shm-refresher-{state.base}", daemon=True
        )

    def start(self) -> None:
        self._state.running.add(self._owner)
        self._thread.start()

    def alive(self) -> bool:
        return self._pid == os.getpid() and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._state.running.discard(self._owner)
        att = self._state.att
        self._state.election.resign(self._owner, att.seg if att is not None else None)

    def _run(self) -> None:
        failures_logged = 0
        while not self._stop.is_set() and os.getpid() == self._pid:
            try:
                self.step()
                failures_logged = 0
            except Exception:
                failures_logged += 1
                if failures_logged == 1 or failures_logged % 100 == 0:
                    log.exception("refresher of %s failed", self._state.base)
            poll = self._config.poll_interval
            self._stop.wait(poll * random.uniform(0.9, 1.1))

    def step(self) -> None:
        state, config = self._state, self._config
        att = state.ensure(config.counter_backend)
        if att.seg.replaced():
            att = state.reattach("segment or lock file was removed or replaced underneath us",
                                 config.counter_backend)
        if config.refresh is None:
            return  # a pure reader never leads: a leader without a refresh callback would starve
        if not state.election.try_lead(self._owner, att.seg):
            return
        words = att.seg.words
        now = time.monotonic_ns()
        words[_W(layout.HEARTBEAT_OFF)] = now
        request = int(words[_W(layout.REQUEST_OFF)])
        if self._due(words, now, request):
            # a failure is recorded in the header and logged; the last table stays in force
            with contextlib.suppress(Exception):
                refresh_once(state, att, config.refresh, request)
        nodes = att.reader.read()
        if nodes:
            att.health.maintain(
                nodes,
                config.probe,
                int(config.probe_interval * 1e9),
                int(config.quarantine * 1e9),
            )

    def _due(self, words: memoryview, now: int, request: int) -> bool:
        config = self._config
        if request != words[_W(layout.REQUEST_SERVED_OFF)]:
            return True  # a follower (or refresh_now) asked; bypasses the backoff
        failures = int(words[_W(layout.FAILURES_OFF)])
        if failures:
            delay = min(config.backoff_max, config.backoff_initial * 2 ** min(failures - 1, 30))
            return bool(now - int(words[_W(layout.LAST_ATTEMPT_OFF)]) >= delay * 1e9)
        if words[_W(layout.PUBLISH_OFF)] == 0:
            return True
        moved = words[_W(layout.COUNTER_OFF)] != words[_W(layout.COUNTER_AT_REFRESH_OFF)]
        interval = config.refresh_interval if moved else config.idle_refresh_interval
        return bool(now - int(words[_W(layout.LAST_SUCCESS_OFF)]) >= interval * 1e9)
