"""``alternator-shm status --watch``: the live view, bounded (``--iterations``) and under a pty."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import termios
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from alternator_shm import _watch
from alternator_shm.fleet import SharedFleet, cleanup, list_fleets

NODES = ("http://127.0.0.1:8000", "http://127.0.0.2:8000")


@pytest.fixture
def fleet() -> Iterator[SharedFleet]:
    ns = f"t-{uuid.uuid4().hex}"
    f = SharedFleet(ns, refresh=lambda: list(NODES), refresh_interval=0.2)
    f.start()
    assert f.wait_for_nodes(30)
    try:
        yield f
    finally:
        f.close()
        cleanup(ns)


def _only(ns: str) -> list:  # type: ignore[type-arg]
    return [f for f in list_fleets() if f.namespace == ns]


def test_screens_show_state_in_flight_latency_and_picks_per_second(fleet: SharedFleet) -> None:
    answered = fleet.begin_attempt(NODES[0])
    fleet.end_attempt(answered, answered=True)
    flying = fleet.begin_attempt(NODES[1])
    for _ in range(3):
        fleet.record_pick(NODES[0])
    out = io.StringIO()
    read_count = [0]

    def read() -> list:  # type: ignore[type-arg]
        read_count[0] += 1
        if read_count[0] == 2:  # between the two screens: 10 more picks of node 0
            for _ in range(10):
                fleet.record_pick(NODES[0])
        return _only(fleet.namespace)

    assert _watch.watch(read, interval=0.05, iterations=2, out=out, keys=io.StringIO()) == 0
    fleet.end_attempt(flying, answered=False)
    screens = out.getvalue().split("alternator-shm  ")[1:]
    assert len(screens) == 2
    first, second = screens
    assert f"namespace {fleet.namespace}  mode shared  leader {os.getpid()}" in first
    rows = {line.split()[0]: line.split() for line in second.splitlines() if "127.0.0." in line}
    node0, node1 = rows[NODES[0]], rows[NODES[1]]
    assert node0[1] == "active" and node1[1] == "active"
    assert node0[2] == "0" and node1[2] == "1"  # in flight
    assert node0[3] != "-" and node1[3] == "-"  # latency: node 1 never answered
    assert int(node0[4]) > 0  # picks/s between the two screens
    assert all(line.split()[4] == "-" for line in first.splitlines() if "127.0.0." in line)


def _spawn_under_pty(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "alternator_shm", "status", *args],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True,
    )
    os.close(slave)
    return proc, master


def _read_until(master: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    return seen


@pytest.mark.parametrize("quit_key", [b"q", b"SIGINT"], ids=["q", "ctrl-c"])
def test_watch_under_a_terminal_quits_cleanly(fleet: SharedFleet, quit_key: bytes) -> None:
    proc, master = _spawn_under_pty("--watch", "--namespace", fleet.namespace)
    try:
        seen = _read_until(master, fleet.namespace.encode(), 60)
        assert fleet.namespace.encode() in seen, seen[-500:]
        assert b"\x1b[H\x1b[2J" in seen  # a terminal gets full-screen redraws
        attrs_watching = termios.tcgetattr(master)
        if quit_key == b"SIGINT":
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the foreground process
        else:
            os.write(master, quit_key)
        # keep draining the terminal as a real one does: a full pty buffer blocks the
        # watcher's writes (a test that stopped reading here once hung it for 30 s)
        rest = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            rest += _read_until(master, b"\x00never", 0.2)
        code = proc.wait(5)
        rest += _read_until(master, b"\x00never", 0.5)
        attrs_after = termios.tcgetattr(master)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    assert code == 0, (code, rest[-500:])
    assert b"Traceback" not in seen + rest
    # cbreak while watching, canonical mode restored on the way out
    assert not attrs_watching[3] & termios.ICANON
    assert attrs_after[3] & termios.ICANON


def test_status_watch_iterations_without_a_terminal(fleet: SharedFleet) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alternator_shm", "status", "--watch", "--iterations", "2",
         "--interval", "0.1", "--namespace", fleet.namespace],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"namespace {fleet.namespace}") == 2
    assert "\x1b[" not in done.stdout  # no escape codes into a pipe


def test_status_format_prometheus(fleet: SharedFleet) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    a = fleet.begin_attempt(NODES[0])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "alternator_shm", "status", "--format", "prometheus",
             "--namespace", fleet.namespace],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        fleet.end_attempt(a, answered=False)
    assert done.returncode == 0, done.stderr
    samples = {
        (s.name, s.labels.get("node")): s.value
        for family in text_string_to_metric_families(done.stdout)
        for s in family.samples
    }
    assert samples[("alternator_shm_node_in_flight", NODES[0])] == 1.0
    assert samples[("alternator_shm_node_in_flight", NODES[1])] == 0.0


def test_status_format_prometheus_without_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from alternator_shm.cli import main\n"
        "sys.exit(main(['status', '--format', 'prometheus']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'alternator-shm[metrics]'" in lines[0], done.stderr


def test_ctrl_c_that_lands_in_a_finalizer_still_quits() -> None:
    """Each screen maps every segment; their guards are released by ``weakref.finalize``
    callbacks, and a KeyboardInterrupt raised inside one is printed and dropped by Python: a
    CI run saw ``status --watch`` ignore Ctrl-C for over a minute. SIGINT is a flag now."""
    script = textwrap.dedent(
        """
        import os, signal, sys, weakref
        from alternator_shm._watch import watch

        class Mapping:
            pass

        def read():
            m = Mapping()
            weakref.finalize(m, os.kill, os.getpid(), signal.SIGINT)  # Ctrl-C lands in there
            del m
            return []

        sys.exit(watch(read, interval=0.05))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr[-1000:]
    assert "Traceback" not in done.stderr
