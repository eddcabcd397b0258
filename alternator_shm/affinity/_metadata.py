"""Partition-key names per table: given ones, and ``DescribeTable`` lookups in the background.

The rules come from ``key-route-affinity.md`` (AFF-REQ-002):

* a miss never blocks the user's call: it is routed normally while a background lookup runs;
* at most one lookup per table at a time; a found HASH key is cached for the Helper's life;
* transient failures (throttling, 5xx, transport errors, other structured errors) get one
  attempt plus at most three retries, 100 ms doubling to 2 s, jittered by +-20 %; running out
  of retries imposes no cooldown (the next miss may try again);
* permanent failures (no such table, 403 / access denied, validation, a table without a HASH
  key, a bare non-429 4xx) stop lookups of that table for five minutes, unless cleared.

Lookups run in daemon threads, one per table being looked up, at most ``_MAX_LOOKUPS`` at once
(a miss beyond that is simply tried again by a later call). :meth:`PartitionKeys.close` stops
them: it wakes every backoff wait and joins for a bounded time; a ``DescribeTable`` already on
the wire cannot be cancelled, and its answer is then dropped. After a fork the child starts with
no lookup in flight (the parent's threads do not exist there) and a fresh lock.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import botocore.exceptions

from alternator_shm._forksafe import ForkSafeLock

__all__ = ["DescribeTable", "PartitionKeys"]

_log = logging.getLogger(__name__)

#: ``DescribeTable(table) -> response dict``; raises on failure.
DescribeTable = Callable[[str], Mapping[str, Any]]

RETRIES = 3
BACKOFF_START = 0.1
BACKOFF_MAX = 2.0
JITTER = 0.2
PERMANENT_COOLDOWN = 300.0
_MAX_LOOKUPS = 8
_CLOSE_WAIT = 2.0

_PERMANENT_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "ValidationException",
    }
)


class _Permanent(Exception):
    """A lookup answer that will not change by retrying (see the module docstring)."""


def is_permanent(error: BaseException) -> bool:
    """Classify a ``DescribeTable`` failure: True = permanent (cooldown), False = transient."""
    if isinstance(error, _Permanent):
        return True
    if not isinstance(error, botocore.exceptions.ClientError):
        return False  # transport failures, our own NoLiveNodesError, ...: transient
    response: Mapping[str, Any] = error.response or {}
    code = str(response.get("Error", {}).get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _PERMANENT_CODES or code.endswith("#ResourceNotFoundException"):
        return True
    if "AccessDenied" in code or status == 403:
        return True
    # A non-429 4xx without structured error details.
    return isinstance(status, int) and 400 <= status < 500 and status != 429 and not code


def hash_key_name(description: Mapping[str, Any]) -> str:
    """The HASH attribute of a ``DescribeTable`` answer; ``_Permanent`` when there is none."""
    table = description.get("Table")
    schema = table.get("KeySchema") if isinstance(table, Mapping) else None
    if isinstance(schema, list):
        for element in schema:
            if isinstance(element, Mapping) and element.get("KeyType") == "HASH":
                name = element.get("AttributeName")
                if isinstance(name, str) and name:
                    return name
    raise _Permanent("DescribeTable answered without a HASH key")


_INSTANCES: weakref.WeakSet[PartitionKeys] = weakref.WeakSet()


def _reset_in_child() -> None:
    for keys in list(_INSTANCES):
        keys._reset_after_fork()


os.register_at_fork(after_in_child=_reset_in_child)


class PartitionKeys:
    """Table -> HASH-key attribute name, for one Helper in one process."""

    def __init__(
        self,
        preset: Mapping[str, str] | None = None,
        *,
        sleep_random: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._preset: dict[str, str] = dict(preset or {})  # a copy: immune to caller edits
        self._random = sleep_random
        self._clock = clock
        self._lock = ForkSafeLock()  # unlocked in a forked child, whoever held it
        self._found: dict[str, str] = {}
        self._cooldown: dict[str, float] = {}  # table -> clock() when lookups may resume
        self._running: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        #: Count of DescribeTable attempts made (for tests and logs).
        self.attempts = 0
        _INSTANCES.add(self)

    def get(self, table: str, describe: DescribeTable | None) -> str | None:
        """The partition key of ``table`` if known now; else start a lookup and return None."""
        name = self._preset.get(table)
        if name is not None:
            return name
        with self._lock:
            name = self._found.get(table)
            if name is not None or describe is None:
                return name
            if table in self._running or len(self._running) >= _MAX_LOOKUPS:
                return None
            until = self._cooldown.get(table)
            if until is not None:
                if self._clock() < until:
                    return None
                del self._cooldown[table]
            thread = threading.Thread(
                target=self._lookup,
                args=(table, describe, self._stop),
                name=f"alternator-shm-describe-{table}",
                daemon=True,
            )
            self._running[table] = thread
            thread.start()
        return None

    def _reset_after_fork(self) -> None:
        # The parent's lookup threads do not exist in the child, and the lock may have been
        # copied while held by one of them: start over with fresh ones (results are kept).
        self._lock = ForkSafeLock()  # unlocked in a forked child, whoever held it
        self._running = {}
        self._stop = threading.Event()

    def _lookup(self, table: str, describe: DescribeTable, stop: threading.Event) -> None:
        delay = BACKOFF_START
        outcome: str | None = None
        permanent = False
        try:
            for attempt in range(1 + RETRIES):
                if stop.is_set():
                    return
                try:
                    with self._lock:
                        self.attempts += 1
                    outcome = hash_key_name(describe(table))
                    break
                except Exception as error:  # never let a lookup thread die loudly
                    if is_permanent(error):
                        permanent = True
                        _log.warning(
                            "partition key of table %r not found (%s); routing its writes "
                            "normally for %.0f s", table, error, PERMANENT_COOLDOWN
                        )
                        break
                    if attempt == RETRIES:
                        _log.info("partition key lookup of table %r failed (%s); will retry on "
                                  "a later write", table, error)
                        break
                    jitter = 1.0 + JITTER * (2.0 * self._random() - 1.0)
                    if stop.wait(delay * jitter):
                        return
                    delay = min(delay * 2.0, BACKOFF_MAX)
        finally:
            with self._lock:
                if self._running.get(table) is threading.current_thread():
                    del self._running[table]
                if not stop.is_set():
                    if outcome is not None:
                        self._found[table] = outcome
                    elif permanent:
                        self._cooldown[table] = self._clock() + PERMANENT_COOLDOWN

    def clear(self, table: str | None = None) -> None:
        """Forget a permanent failure (of ``table``, or of every table): look up again."""
        with self._lock:
            if table is None:
                self._cooldown.clear()
            else:
                self._cooldown.pop(table, None)

    def known(self) -> dict[str, str]:
        """Every partition key known now (given and discovered)."""
        with self._lock:
            return {**self._found, **self._preset}

    def close(self) -> None:
        """Stop every lookup of this process: wake backoff waits, join (bounded)."""
        with self._lock:
            self._stop.set()
            # Threads still on the wire keep the set event and drop their answer; lookups
            # started after close (the Helper is usable again) get a fresh one.
            self._stop = threading.Event()
            threads = list(self._running.values())
            self._running = {}
        deadline = time.monotonic() + _CLOSE_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
