"""Forked helper processes for the fleet tests: results come back through a pipe, every wait is
bounded, and a child that outlives its deadline is SIGKILLed (only children we started)."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from alternator_shm.fleet import SharedFleet

# The node table most fleet tests publish.
NODES = (
    "http://127.0.0.1:8000",
    "http://127.0.0.2:8000",
    "http://127.0.0.3:8000",
    "http://127.0.0.4:8000",
)


class Child:
    """A forked child running ``fn(*args)``; ``result()`` returns its value or raises."""

    def __init__(self, fn: Callable[..., Any], *args: Any, fork: Callable[[], int] = os.fork):
        r, w = os.pipe()
        pid = fork()
        if pid == 0:  # child
            os.close(r)
            code = 0
            try:
                payload = ("ok", fn(*args))
            except BaseException as exc:  # report everything, including SystemExit
                payload = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                code = 1
            try:
                data = pickle.dumps(payload)
                with os.fdopen(w, "wb") as f:
                    f.write(data)
            finally:
                os._exit(code)
        os.close(w)
        self.pid = pid
        self._r = r

    def result(self, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise TimeoutError(f"child {self.pid} did not finish in {timeout}s")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self._r)
        os.waitpid(self.pid, 0)
        if not chunks:
            raise RuntimeError(f"child {self.pid} died without a result")
        status, value = pickle.loads(b"".join(chunks))
        if status != "ok":
            raise RuntimeError(f"child {self.pid} failed: {value}")
        return value

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until truthy (returned) or ``timeout`` (returns the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def cont_and_kill(pid: int) -> None:
    """SIGCONT then SIGKILL (a stopped child dies at once either way)."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def read_byte(fd: int, timeout: float) -> bytes:
    """One byte from a pipe within ``timeout`` seconds, else b""."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 1) if ready else b""


DEPUTY_TABLE = ("http://127.0.0.9:8000",)


def take_over(ns: str, ready_w: int, then: str, go: str = "") -> None:
    """A follower that takes over from a stopped leader (2 s stale threshold) and reports 'T'.
    ``then``: "hang" (stay inside its first refresh, heartbeat still stamped), "close" (close
    the fleet once file ``go`` exists, report 'C') or "lead" (keep leading)."""
    def refresh() -> tuple[str, ...]:
        if then == "hang":
            os.write(ready_w, b"T")
            time.sleep(60)
        return DEPUTY_TABLE

    fleet = SharedFleet(ns, refresh=refresh, poll_interval=0.02, refresh_interval=0.05,
                        idle_refresh_interval=0.05)
    fleet.start()
    if then == "hang":
        time.sleep(120)
        return
    if not wait_until(lambda: fleet.is_leader and fleet.nodes() == DEPUTY_TABLE, 30):
        raise RuntimeError("never took over")
    os.write(ready_w, b"T")
    if then == "close":
        wait_until(lambda: os.path.exists(go), 60, 0.01)
        fleet.close()
        os.write(ready_w, b"C")
    time.sleep(120)


def follow(ns: str, table: tuple[str, ...], seconds: float, **options: Any) -> int:
    """A follower child for ``seconds`` (fast polls, 2 s stale threshold); 1 if it ever led."""
    fleet = SharedFleet(ns, refresh=lambda: table, poll_interval=0.02, refresh_interval=0.05,
                        idle_refresh_interval=0.05, **options)
    fleet.start()
    led = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        led = max(led, int(fleet.is_leader))
        time.sleep(0.005)
    fleet.close()
    return led
