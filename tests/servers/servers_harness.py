"""Shared machinery of the server tests: run a real server, drive calls, read the evidence.

The evidence is what the emulated nodes saw (their request logs) plus the host's shared state
as ``alternator-shm status`` reads it; never what the workers say about themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from alternator_shm.emulator import Cluster
from alternator_shm.fleet import FleetStats, list_fleets

APPS = Path(__file__).resolve().parent / "apps"
API_OPERATIONS = frozenset({"PutItem", "GetItem"})
REFRESH = 0.3  # refresh_interval (and idle_refresh_interval) of every server-test Helper
PHASE_SECONDS = 2.0  # long enough that one poller vs. several is unmistakable
# A rate (polls per refresh period) is only asserted over a window of at least this many
# periods: a shorter phase can legitimately see no poll at all.
MIN_RATE_PERIODS = 5


@dataclass
class FleetEnv:
    """One emulated cluster plus one fresh namespace, and the environment naming both."""

    cluster: Cluster
    namespace: str
    env: dict[str, str]
    tmp: Path

    def settings(self) -> dict[str, Any]:
        """The Helper options as plain picklable data (the pool tests' ``initargs``)."""
        key, secret = self.cluster.credentials
        return {
            "seeds": list(self.cluster.seeds),
            "port": self.cluster.port,
            "credentials": (key, secret),
            "namespace": self.namespace,
            "refresh_interval": REFRESH,
            "idle_refresh_interval": REFRESH,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server started in its own session, so the whole tree can be stopped by its group id.

    Only this group is ever signalled: its id is the pid of the process we started.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = APPS):
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def children(self) -> set[int]:
        """Pids of every live descendant (the workers)."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        alive = set()
        for kid in kids:
            try:  # a worker may exit between the listing and this look (killed, replaced)
                if kid.status() != psutil.STATUS_ZOMBIE:
                    alive.add(kid.pid)
            except psutil.NoSuchProcess:
                continue
        return alive

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=8)
        # Workers left behind by a master that died first are still in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log_file.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    on_fail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until truthy (bounded), else fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
        time.sleep(0.05)


def fleet_stats(namespace: str) -> FleetStats | None:
    """The namespace's shared state as read from /dev/shm, without attaching to it."""
    for stats in list_fleets():
        if stats.namespace == namespace:
            return stats
    return None


def live_leader(namespace: str, exclude: int | None = None) -> int | None:
    stats = fleet_stats(namespace)
    if stats is None or stats.leader_pid is None or stats.leader_pid == exclude:
        return None
    return stats.leader_pid if psutil.pid_exists(stats.leader_pid) else None


def wait_leader(namespace: str, exclude: int | None = None, timeout: float = 15.0) -> int:
    leader: int = wait_for(
        lambda: live_leader(namespace, exclude),
        timeout,
        f"a live leader other than {exclude} in {namespace}",
    )
    return leader


def api_counts(cluster: Cluster) -> dict[str, int]:
    """API requests each node received (PutItem/GetItem), by node URL."""
    return {n.url: sum(1 for e in n.log if e.operation in API_OPERATIONS) for n in cluster.nodes}


def localnodes_polls(cluster: Cluster, since: float = 0.0, until: float = float("inf")) -> int:
    """``/localnodes`` requests the nodes logged, those started in [since, until] (wall clock)."""
    return sum(
        1
        for n in cluster.nodes
        for e in n.log
        if e.path.startswith("/localnodes") and since <= e.time <= until
    )


@dataclass
class Drive:
    """What one burst of calls did, as the callers saw it."""

    ok: int = 0
    failed: int = 0
    retries: int = 0
    pids: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


@dataclass
class Phase:
    drive: Drive
    seconds: float
    per_node: dict[str, int]
    polls: int  # /localnodes requests the nodes logged during the drive
    rounds: int  # refresh rounds the segment counted during the drive (each writer's too)
    picks: int  # how far the shared counter moved


def run_phase(fx: FleetEnv, drive: Callable[[], Drive]) -> Phase:
    """Clear the node logs, run ``drive``, and collect what the nodes and the segment saw."""
    before = fleet_stats(fx.namespace)
    picks_before = before.picks if before is not None else 0
    rounds_before = before.refresh_attempts if before is not None else 0
    fx.cluster.clear_logs()
    started = time.monotonic()
    wall_started = time.time()
    result = drive()
    seconds = time.monotonic() - started
    wall_ended = time.time()
    ended = fleet_stats(fx.namespace)
    assert ended is not None, f"namespace {fx.namespace} vanished from /dev/shm"
    # A node logs a request when it has answered it: give the last entries a moment.
    wait_for(
        lambda: sum(api_counts(fx.cluster).values()) >= result.ok,
        5.0,
        "the node logs to show every successful call",
    )
    after = fleet_stats(fx.namespace)
    assert after is not None, f"namespace {fx.namespace} vanished from /dev/shm"
    return Phase(
        result,
        seconds,
        api_counts(fx.cluster),
        # the polls of the drive's own window: the wait for the logs above is not in `seconds`
        localnodes_polls(fx.cluster, wall_started, wall_ended),
        ended.refresh_attempts - rounds_before,
        after.picks - picks_before,
    )


def check_phase(phase: Phase, nodes: int = 3) -> None:
    """The fleet-wide invariants of a phase in which no node failed."""
    d = phase.drive
    assert d.failed == 0 and not d.errors, f"failed calls: {d.failed} {d.errors[:3]}"
    assert d.ok > 0
    assert d.retries == 0, f"{d.retries} retries although every node was healthy"
    assert len(phase.per_node) == nodes
    assert sum(phase.per_node.values()) == d.ok, (phase.per_node, d.ok)
    # One shared counter: every attempt of every worker advanced it exactly once...
    assert phase.picks == d.ok, (phase.picks, d.ok)
    # ... so the split over the nodes is exact across the whole fleet.
    spread = max(phase.per_node.values()) - min(phase.per_node.values())
    assert spread <= 1, f"uneven split {phase.per_node}"
    # One refresher on the host: its rounds come at its refresh period (a second refresher
    # writing the segment would add its own), and its rounds are all that polls: a poller per
    # worker would ask WORKERS times as often. Only meaningful over several periods: the
    # drivers keep a phase open that long.
    assert phase.seconds >= MIN_RATE_PERIODS * REFRESH, (
        f"test bug: a {phase.seconds:.2f}s phase is too short to assert a poll rate"
    )
    bound = phase.seconds / REFRESH * 1.5 + 2
    assert 1 <= phase.rounds <= bound, (
        f"{phase.rounds} refresh rounds in {phase.seconds:.1f}s (bound {bound:.0f})"
    )
    # A round asks one node, more only when the first answer is slow (a hedge every 0.2 s)
    # or to confirm a narrow answer: a loaded CI run saw 13 polls in 2 s (about 7 rounds).
    assert 1 <= phase.polls <= 2 * phase.rounds + 2, (
        f"{phase.polls} /localnodes polls in {phase.rounds} refresh rounds, "
        f"{phase.seconds:.1f}s: more than one poller"
    )


def drive_http(
    base: str,
    *,
    min_seconds: float = PHASE_SECONDS,
    max_calls: int = 600,
    min_calls: int = 30,
    threads: int = 4,
    min_pids: int = 1,
) -> Drive:
    """Concurrent GET /call requests for ``min_seconds`` (at most ``max_calls`` of them).

    Goes on (within ``max_calls``) until ``min_pids`` worker processes have answered: on a
    loaded machine one worker can take every connection of a short drive.

    Concurrency makes several workers serve at once, so the split is only exact if the
    workers really share one counter. The drive lasts ``min_seconds`` even when the calls
    run out earlier (the fleet then idles), so the phase spans several refresh periods.
    """
    result = Drive()
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + min_seconds
    host, port = urlsplit(base).hostname, urlsplit(base).port

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= max_calls or (issued >= min_calls
                                           and time.monotonic() >= deadline
                                           and len(result.pids) >= min_pids):
                    return
                issued += 1
                n = issued
            op = "put" if n % 2 else "get"
            try:
                status, data = http_get(str(host), int(port or 80), f"/call?op={op}&k=key{n}")
            except OSError as exc:
                with lock:
                    result.errors.append(f"http: {exc!r}")
                continue
            with lock:
                if status == 200:
                    body = json.loads(data)
                    result.ok += 1
                    result.retries += int(body.get("retries", 0))
                    result.pids.add(int(body["pid"]))
                else:
                    result.failed += 1
                    result.errors.append(f"{status}: {data[:300]!r}")

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    time.sleep(max(0.0, deadline - time.monotonic()))
    return result


def http_get(host: str, port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP/1.0-style GET on a fresh connection, read to EOF.

    Deliberately minimal: uWSGI's ``--http-socket`` resets some connections made by urllib3
    (even for an app that only sleeps), which would show up here as lost calls; a plain
    request written in one piece and read to EOF is served reliably by every server.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        raise ConnectionError(f"not an HTTP response: {raw[:100]!r}")
    return int(head.split(b" ", 2)[1]), body


def merge_results(results: list[dict[str, Any]]) -> Drive:
    """Fold the per-task reports of the Celery and pool tests into one :class:`Drive`."""
    out = Drive()
    for r in results:
        out.ok += int(r["ok"])
        out.failed += int(r["failed"])
        out.retries += int(r["retries"])
        out.pids.add(int(r["pid"]))
    return out


def timed_batches(
    run_batch: Callable[[int], list[dict[str, Any]]],
    *,
    min_seconds: float = PHASE_SECONDS,
    max_batches: int = 8,
    min_pids: int = 1,
) -> Drive:
    """Batches of tasks for at least ``min_seconds`` (at least one, at most ``max_batches``).

    Like :func:`drive_http`, the phase lasts ``min_seconds`` even if the batches end sooner,
    and goes on (within ``max_batches``) until ``min_pids`` workers have run a task.
    """
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + min_seconds
    for batch in range(max_batches):
        results.extend(run_batch(batch))
        if time.monotonic() >= deadline and len({r["pid"] for r in results}) >= min_pids:
            break
    time.sleep(max(0.0, deadline - time.monotonic()))
    return merge_results(results)


def http_scenario(fx: FleetEnv, server: ServerProcess, base: str, workers: int) -> None:
    """The full server check: warm up, exact split + one poller, SIGKILL the leader, again."""
    wait_for(lambda: len(server.children()) >= workers, 30, f"{workers} workers", server.output)
    warm = drive_http(base, min_seconds=0.0, min_calls=12, max_calls=12)
    assert warm.failed == 0 and not warm.errors, (warm.errors[:3], server.output())
    leader = wait_leader(fx.namespace)

    first = run_phase(fx, lambda: drive_http(base, min_pids=2))
    check_phase(first)
    worker_pids = server.children()
    assert len(first.drive.pids) >= 2, f"only {first.drive.pids} served: not a fleet test"
    assert first.drive.pids <= worker_pids
    leader = wait_leader(fx.namespace)
    assert leader in worker_pids and leader != server.pid, (leader, server.pid, worker_pids)

    os.kill(leader, signal.SIGKILL)  # a worker we started (a child of our server)
    new_leader = wait_leader(fx.namespace, exclude=leader)
    # The master replaces the dead worker; wait for it so the fleet is whole again.
    wait_for(lambda: len(server.children()) >= workers, 30, "the replacement worker", server.output)

    second = run_phase(fx, lambda: drive_http(base))
    check_phase(second)
    final = wait_leader(fx.namespace, exclude=leader)
    assert final in server.children() and new_leader != leader


def uwsgi_command() -> list[str]:
    """The uwsgi executable of this interpreter (pyuwsgi ships it as a console script)."""
    exe = Path(sys.executable).with_name("uwsgi")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys, pyuwsgi; sys.exit(pyuwsgi.run())"]


@contextlib.contextmanager
def apps_on_path() -> Iterator[None]:
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    yield
