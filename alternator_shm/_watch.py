"""``alternator-shm status --watch``: a live, ``top``-like view of every namespace on the host.

Once per interval it re-reads the shared segments (read-only, like ``status``) and redraws::

    alternator-shm  14:03:07  every 1.0 s  (q or Ctrl-C quits)

    namespace alt-3f2a...  mode shared  leader 4121  generation 7  refreshed 0.4s ago
      node                              state        in-flight  latency ms  picks/s  failures
      http://10.0.0.1:8000              active               3         2.1      412         0
      http://10.0.0.3:8000              active              14        61.8       35         0

``picks/s`` is the difference of each node's shared pick counter between two redraws (every
process of the host), so the first screen shows ``-``. ``in-flight`` and ``latency ms`` are the
host-wide figures of :mod:`alternator_shm.fleet.load`. Quits on ``q``, Ctrl-C or after
``iterations`` screens (for scripts and tests); the terminal is always restored.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from alternator_shm.fleet import FleetStats

__all__ = ["render", "watch"]

_CLEAR = "\x1b[H\x1b[2J"
_MIN_WIDTH = 60  # narrower, the figures of one node no longer fit on a line


def _state(node: Any) -> str:
    state = getattr(node, "state", None)
    if isinstance(state, str):
        return state
    return "quarantined" if node.quarantined else "active"


def _age(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s ago"


def _pack(fields: list[str], width: int, indent: str = "  ") -> list[str]:
    """Fields joined by two spaces, wrapped between fields to fit ``width``; a field longer
    than a whole line is broken, never cut."""
    lines: list[str] = []
    current = ""
    for item in fields:
        joined = f"{current}  {item}" if current else item
        if len(joined) <= width or not current:
            current = joined
        else:
            lines.append(current)
            current = indent + item
    lines.append(current)
    out: list[str] = []
    for line in lines:  # a single field wider than the screen (a very long namespace)
        while len(line) > width:
            out.append(line[:width])
            line = indent + line[width:]
        out.append(line)
    return out


_COLUMNS = ("state", "in-flight", "latency ms", "picks/s", "failures")


def _node_rows(
    st: FleetStats, previous: dict[tuple[str, str], int] | None, elapsed: float,
    picks: dict[tuple[str, str], int], width: int,
) -> list[str]:
    """The node table at ``width``: full addresses when they fit; else without the scheme and
    port every node shares (named in the header); else each address on a line of its own."""
    rows: list[tuple[str, list[str]]] = []
    for node in st.nodes:
        ns = st.per_node.get(node)
        if ns is None:
            continue
        picks[(st.namespace, node)] = ns.picks
        before = None if previous is None else previous.get((st.namespace, node))
        rate = "-" if before is None or elapsed <= 0 else f"{(ns.picks - before) / elapsed:.0f}"
        latency = getattr(ns, "latency_ms", None)
        rows.append((node, [_state(ns), str(getattr(ns, "in_flight", 0)),
                            "-" if latency is None else f"{latency:.1f}", rate,
                            str(ns.failures)]))
    widths = [max([len(h), *(len(cells[i]) for _, cells in rows)])
              for i, h in enumerate(_COLUMNS)]

    def figures(cells: list[str] | tuple[str, ...]) -> str:
        return " ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    room = width - 2 - 1 - len(figures(_COLUMNS))  # what is left for the node column
    header, labels = "node", [node for node, _ in rows]
    if labels and max(map(len, labels)) > room:
        parts = [urlsplit(node) for node in labels]
        schemes = {p.scheme for p in parts}
        ports = {p.port for p in parts}
        if len(schemes) == 1 and len(ports) == 1 and None not in ports:
            header = f"node ({schemes.pop()}, port {ports.pop()})"
            labels = [p.hostname or node for p, node in zip(parts, labels, strict=True)]
    node_width = max([len(header), *map(len, labels)])
    if node_width <= room:
        lines = [f"  {header:{node_width}} {figures(_COLUMNS)}"]
        lines += [f"  {label:{node_width}} {figures(cells)}"
                  for label, (_, cells) in zip(labels, rows, strict=True)]
        return lines
    # Too narrow for one line per node: the address, then its figures below it.
    if max(len(node) for node, _ in rows) <= width - 2:
        header, labels = "node", [node for node, _ in rows]
    lines = [f"  {header}", f"      {figures(_COLUMNS)}"]
    for label, (_, cells) in zip(labels, rows, strict=True):
        lines += _pack([f"  {label}"], width, indent="    ")
        lines.append(f"      {figures(cells)}")
    return lines


def render(
    fleets: list[FleetStats],
    previous: dict[tuple[str, str], int] | None,
    elapsed: float,
    *,
    interval: float,
    now: float | None = None,
    width: int = 80,
) -> tuple[str, dict[tuple[str, str], int]]:
    """One screen of text ``width`` columns wide at most (80: what a pipe gets), and the pick
    counters to diff against on the next screen. Nothing is cut: what does not fit on a line
    wraps onto the next."""
    width = max(width, _MIN_WIDTH)
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [*_pack(["alternator-shm", clock, f"every {interval:.1f} s", "(q or Ctrl-C quits)"],
                    width), ""]
    picks: dict[tuple[str, str], int] = {}
    if not fleets:
        lines.append("no shared alternator-shm state for this user on this host")
    for st in fleets:
        problem = getattr(st, "problem", None)
        if problem is not None:  # listed by status too: its processes balance alone
            lines += _pack([f"namespace {st.namespace or '(unreadable)'}",
                            f"segment {st.segment_name}", f"UNUSABLE: {problem}"], width)
            lines.append("")
            continue
        leader = st.leader_pid if st.leader_pid is not None else "none"
        fields = [f"namespace {st.namespace}", f"mode {getattr(st, 'mode', 'shared')}",
                  f"leader {leader}", f"generation {st.generation}",
                  f"refreshed {_age(st.last_refresh_age_s)}"]
        if st.consecutive_refresh_failures:
            fields.append(f"refresh failures {st.consecutive_refresh_failures}")
        lines += _pack(fields, width)
        lines += _node_rows(st, previous, elapsed, picks, width)
        lines.append("")
    return "\n".join(lines) + "\n", picks


@contextlib.contextmanager
def _interrupts() -> Iterator[int]:
    """Ctrl-C (SIGINT) as a byte on a pipe the key wait also watches; yields its read end (-1
    outside the main thread, where signals cannot be handled: KeyboardInterrupt then).

    Why not just KeyboardInterrupt: it is raised at whatever bytecode runs when the signal
    arrives, and each screen maps every segment of the host, whose guards are released by
    ``weakref.finalize`` callbacks; an exception raised inside a finalizer is printed and
    dropped by Python, and the watcher then ignored that Ctrl-C for good."""
    if threading.current_thread() is not threading.main_thread():
        yield -1
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    os.set_blocking(r, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield r
    finally:
        signal.signal(signal.SIGINT, old_handler)
        signal.set_wakeup_fd(old_fd)
        os.close(r)
        os.close(w)


@contextlib.contextmanager
def _keys(stream: IO[str], interrupt: int = -1) -> Iterator[Callable[[float], str]]:
    """A ``wait(timeout) -> key`` reading single keys from a terminal (cbreak mode, restored
    on exit); on anything else it only waits. A byte on ``interrupt`` (see
    :func:`_interrupts`) reads as Ctrl-C."""
    fd = -1
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = stream.fileno()
    watched = [x for x in (interrupt,) if x >= 0]

    def interrupted(ready: list[int]) -> bool:
        if interrupt in ready:
            with contextlib.suppress(OSError):
                os.read(interrupt, 64)
            return True
        return False

    if fd < 0 or not os.isatty(fd):

        def sleep(timeout: float) -> str:
            if not watched:
                time.sleep(timeout)
                return ""
            ready, _, _ = select.select(watched, [], [], timeout)
            return "\x03" if interrupted(ready) else ""

        yield sleep
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(timeout: float) -> str:
        ready, _, _ = select.select([fd, *watched], [], [], timeout)
        if interrupted(ready):
            return "\x03"
        return os.read(fd, 1).decode("utf-8", "replace") if fd in ready else ""

    try:
        yield wait
    finally:
        # TCSANOW: restoring the mode must not wait for output a stalled terminal never drains
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _width(out: IO[str]) -> int:
    """The terminal's width (read each screen: it can be resized), else $COLUMNS, else 80."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if out.isatty():
            return os.get_terminal_size(out.fileno()).columns
    return shutil.get_terminal_size((80, 24)).columns


def watch(
    read: Callable[[], list[FleetStats]],
    *,
    interval: float = 1.0,
    iterations: int | None = None,
    out: IO[str] | None = None,
    keys: IO[str] | None = None,
) -> int:
    """Redraw every ``interval`` seconds until ``q``, Ctrl-C or ``iterations`` screens."""
    out = sys.stdout if out is None else out
    keys = sys.stdin if keys is None else keys
    clear = out.isatty()
    previous: dict[tuple[str, str], int] | None = None
    last = time.monotonic()
    shown = 0
    try:
        with _interrupts() as interrupt, _keys(keys, interrupt) as wait:
            while iterations is None or shown < iterations:
                now = time.monotonic()
                screen, previous = render(read(), previous, now - last, interval=interval,
                                          width=_width(out))
                last = now
                out.write((_CLEAR if clear else "") + screen)
                out.flush()
                shown += 1
                if iterations is not None and shown >= iterations:
                    break
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    if wait(left) in ("q", "Q", "\x03"):  # \x03: Ctrl-C (key or SIGINT)
                        out.write("\n")
                        return 0
    except KeyboardInterrupt:
        out.write("\n")
    return 0
