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
from alternator_shm.fleet import FleetStats, NodeStats, SharedFleet, cleanup, list_fleets

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


def _wide_fleet() -> FleetStats:
    """Everything at its widest: a long namespace, long host names, big numbers."""
    nodes = tuple(f"https://ip-10-0-{i}-123.eu-west-1.compute.internal:8043" for i in range(3))
    per_node = {
        node: NodeStats(picks=123_456_789, failures=98_765, quarantined=i == 1,
                        state=("active", "quarantined", "down")[i], generation=7,
                        in_flight=12_345, latency_ms=12_345.6)
        for i, node in enumerate(nodes)
    }
    return FleetStats(namespace="checkout-service-production-" + "f" * 32,
                      segment_name="/rrlb3.0.0123456789", leader_pid=4_194_303,
                      generation=123_456, nodes=nodes, picks=1, per_node=per_node,
                      last_refresh_age_s=12_345.6, consecutive_refresh_failures=1_234,
                      mode="shared")


@pytest.mark.parametrize("width", [80, 60, 120])
def test_screens_fit_the_width_without_losing_anything(width: int) -> None:
    st = _wide_fleet()
    first, picks = _watch.render([st], None, 1.0, interval=1.0, width=width)
    screen, _ = _watch.render([st], {k: v - 5_000 for k, v in picks.items()}, 1.0,
                              interval=1.0, width=width)
    for text in (first, screen):
        lines = text.splitlines()
        assert all(len(line) <= width for line in lines), [ln for ln in lines if len(ln) > width]
    flat = " ".join(screen.split())
    # A namespace longer than a line is broken over two, never cut.
    assert st.namespace in screen.replace("\n  ", ""), screen
    for word in ("leader 4194303", "generation 123456", "12345.6s ago",
                 "refresh failures 1234", "quarantined", "down", "12345.6", "5000", "98765",
                 "12345"):
        assert word in flat, (word, screen)
    for node in st.nodes:  # every node's full address can still be read off the screen
        host = node.split("//")[1].split(":")[0]
        assert node in flat or (host in flat and "(https, port 8043)" in flat), (node, screen)


def test_status_watch_fits_80_columns_in_a_pipe(fleet: SharedFleet) -> None:
    long_ns = "checkout-service-" + uuid.uuid4().hex  # fits a line, not with the rest
    other = SharedFleet(long_ns, refresh=lambda: list(NODES), refresh_interval=0.2)
    try:
        other.start()
        assert other.wait_for_nodes(30)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        done = subprocess.run(
            [sys.executable, "-m", "alternator_shm", "status", "--watch", "--iterations", "2",
             "--interval", "0.1", "--namespace", long_ns, "--namespace", fleet.namespace],
            capture_output=True, text=True, timeout=120, env=env,
        )
    finally:
        other.close()
        cleanup(long_ns)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [ln for ln in lines if len(ln) > 80]
    assert done.stdout.count(long_ns) == 2
