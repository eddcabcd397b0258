"""Chaos (issue 8): 8 worker processes writing through one shared fleet for 30 s while the
leader is SIGKILLed every second, the leader or a worker is SIGSTOPped for 3 s every 5 s, and
emulator nodes are killed and restarted.

Promises checked: 0 acknowledged writes lost, 0 failed calls, 0 stuck processes, never a
publish from a fenced-out (older-epoch) writer, and a table never older than
``3 x refresh_interval + 2 s`` plus twice the longest refresh seen so far, while some
unstopped process runs (the largest age seen is printed with the report). A leader killed
inside its refresh counts with its whole tenure: its refresh took at least that long, and
what it had done is lost with it (a new leader's first refresh in its process is the slowest).

Why plus two refreshes: a live leader stamps its heartbeat during a refresh (so that a slow but
bounded refresh is not taken for a wedged leader: that made leadership ping-pong), and the
takeover threshold, ``max(3 x refresh_interval, 2 s)``, counts from that heartbeat. A leader
SIGSTOPped near the end of a refresh therefore leaves a table whose age, when its successor
publishes, is about ``refresh_interval`` + that refresh + the threshold + one poll + the
successor's refresh. With refreshes of a few milliseconds (a real cluster) this is
within ``3 x refresh_interval + 2 s``; on this 2-core machine the emulator answers
``/localnodes`` behind 8 busy writers, and a review measured a 3.95 s age after a 0.7 s refresh.
The emulator runs one process per node here: in one process, its nodes shared one GIL with the
test's monitor, and a CI run saw five successive leaders each killed (1 s apart) before their
``/localnodes`` answer came.

Ages of 4.5 to 5.5 s were once seen here under load: a follower took over from the SIGSTOPped
leader (which still held the leader lock), and the chaos loop SIGKILLed that takeover leader
before its first refresh returned; nothing could notice its death but a second stale heartbeat.
A takeover leader now holds the deputy byte (see ``fleet/election.py``), so its death is seen
at the next poll.

A chain of leaders each SIGKILLed before its first publish (a loaded machine where a first
refresh takes about the 1 s between kills) ages the table by the sum of their refreshes: a
stress run saw 6.8 s after four such leaders. The time from each one's start to its kill is
work the chaos destroyed and is added to the bound; the time from a kill to the successor is
not, so a slow noticing of a death still fails the test.

The age bound is a wall-clock promise about processes that run. When the machine is so starved
that the writers barely progress (fewer than ``STARVED_BELOW`` acknowledged writes in 30 s, a
tenth of a quiet run's worst), leaders cannot finish a refresh between two SIGKILLs either; the
bound is then reported as a warning instead of asserted. Every other promise is asserted always.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import threading
import time
import warnings
from typing import Any

import boto3
import pytest
from botocore.config import Config
from test_helper_support import cluster_credentials, make_helper

from alternator_shm.emulator import Cluster
from alternator_shm.fleet import SharedFleet

USERS = {"chaos-key": "chaos-secret"}
TABLE = "chaos"
WORKERS = 8
DURATION = 30.0
REFRESH = 0.5
MAX_AGE = 3 * REFRESH + 2.0
# Fewer acknowledged writes than this in the whole run means the processes barely ran (a quiet
# 2-core run acks 5,000-10,000; one CI run on a machine shared with four other jobs acked 180)
STARVED_BELOW = 1000


def _worker(helper: Any, ident: int, deadline: float, log_path: str, ready: Any) -> None:
    """Write unique keys until ``deadline`` (wall clock); log each acknowledged key ("A key")
    and each failed call ("F error") with an unbuffered append, so a SIGKILL loses nothing
    that was logged. ``ready[ident]`` gets our pid once the first call is done (the fleet is
    attached and our refresher runs: from then on we are a failover candidate)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if os.environ.get("CHAOS_DEBUG_DIR"):  # diagnostics: the fleet's own log per process
        import logging

        logging.basicConfig(
            filename=os.path.join(os.environ["CHAOS_DEBUG_DIR"], f"{os.getpid()}.log"),
            level=logging.DEBUG, format="%(created).3f %(threadName)s %(name)s %(message)s",
        )
    client = helper.new_dynamodb_client()
    i = 0
    while time.time() < deadline:
        key = f"{ident}-{os.getpid()}-{i}"
        i += 1
        try:
            client.put_item(TableName=TABLE, Item={"p": {"S": key}})
        except Exception as exc:  # counted by the parent, which asserts zero
            os.write(fd, f"F {type(exc).__name__}: {exc}\n".encode())
            continue
        os.write(fd, f"A {key}\n".encode())
        if ready[ident] != os.getpid():
            ready[ident] = os.getpid()
        time.sleep(0.01)  # paced: leave the CPUs to the refreshers on a small machine
    helper.close()
    os.close(fd)


def _scan_keys(cluster: Cluster) -> set[str]:
    key, secret = cluster_credentials(cluster)
    keys: set[str] = set()
    for node in cluster.nodes:
        if node.state != "NORMAL":
            continue
        ddb = boto3.client(
            "dynamodb", endpoint_url=node.url, region_name="alternator",
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(retries={"mode": "standard", "total_max_attempts": 5}),
        )
        for page in ddb.get_paginator("scan").paginate(TableName=TABLE):
            keys.update(item["p"]["S"] for item in page["Items"])
        return keys
    raise AssertionError("no node to scan")


@pytest.mark.slow
def test_chaos_8_workers_kill_stop_and_node_restarts(tmp_path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["boto3", "botocore", "alternator_shm", "test_helper_support"])
    rng = random.Random(8)
    with (
        Cluster(nodes=5, users=USERS, process_per_node=True) as cluster,
        make_helper(cluster, refresh_interval=REFRESH, idle_refresh_interval=REFRESH) as helper,
    ):
        key, secret = cluster_credentials(cluster)
        boto3.client(
            "dynamodb", endpoint_url=cluster.nodes[0].url, region_name="alternator",
            aws_access_key_id=key, aws_secret_access_key=secret,
        ).create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        monitor_fleet = SharedFleet(helper.namespace)  # a pure reader: never leads
        t0 = time.time()
        deadline = t0 + 15 + DURATION  # process start-up, the chaos window, a margin
        logs = [str(tmp_path / f"w{i}.log") for i in range(WORKERS)]
        procs: list[Any] = []
        stopped: dict[int, float] = {}  # pid -> monotonic time to SIGCONT
        killed: dict[int, float] = {}  # pid -> monotonic time of its SIGKILL
        lock = threading.Lock()

        ready = ctx.Array("i", WORKERS, lock=False)

        def spawn(slot: int) -> Any:
            p = ctx.Process(target=_worker, args=(helper, slot, deadline, logs[slot], ready),
                            daemon=True)
            p.start()
            return p

        procs = [spawn(i) for i in range(WORKERS)]
        violations: list[str] = []
        samples = {"n": 0, "max_age": 0.0, "longest_refresh": 0.0}
        stop_monitor = threading.Event()

        events: list[str] = []

        def monitor() -> None:
            last_published = 0
            last_key: tuple[object, ...] = ()
            t_start = time.monotonic()
            uncovered_at = t_start - 3600.0
            last_refreshes = -1
            # (epoch, pid, refreshes at its start, since) of the current leader
            tenure: tuple[Any, Any, int, float] = (None, None, 0, time.monotonic())
            # the work of leaders SIGKILLed before they published, since the last publish
            lost = 0.0
            while not stop_monitor.is_set():
                st = monitor_fleet.stats()
                if st.leader_epoch != tenure[0]:
                    with lock:
                        was_stopped = tenure[1] in stopped
                        killed_at = killed.get(tenure[1])
                    if tenure[0] is not None and st.refreshes == tenure[2] and not was_stopped:
                        # that leader published nothing before it was replaced: SIGKILLed
                        # inside its refresh, which took at least its tenure until the kill
                        # (not until its successor: noticing a death is the library's job, and
                        # counting it here would excuse a slow noticing twice over)
                        by_kill = killed_at is not None and killed_at >= tenure[3]
                        ended = killed_at if by_kill else time.monotonic()
                        samples["longest_refresh"] = max(samples["longest_refresh"],
                                                         ended - tenure[3])
                        if by_kill:
                            # its refresh until the kill is lost work, added to the bound
                            lost += ended - tenure[3]
                    tenure = (st.leader_epoch, st.leader_pid, st.refreshes, time.monotonic())
                if st.refreshes != last_refreshes:
                    lost = 0.0
                if st.refreshes != last_refreshes and st.last_refresh_age_s is not None:
                    if last_refreshes >= 0:
                        # the stamp is the refresh's *start*: seen right after it published,
                        # its age bounds how long that refresh took
                        samples["longest_refresh"] = max(samples["longest_refresh"],
                                                         st.last_refresh_age_s)
                    last_refreshes = st.refreshes
                key = (st.leader_pid, st.leader_epoch, st.refreshes, st.refresh_attempts,
                       st.consecutive_refresh_failures)
                if key != last_key:
                    last_key = key
                    events.append(f"{time.monotonic() - t_start:6.2f} {key} age "
                                  f"{st.last_refresh_age_s} hb {st.leader_heartbeat_age_s} "
                                  f"{st.leader_mode} {st.last_refresh_error}")
                if st.published_epoch < last_published:
                    violations.append(
                        f"publish by epoch {st.published_epoch} after {last_published}"
                    )
                last_published = max(last_published, st.published_epoch)
                with lock:
                    # a process runs the library once its first call is done; one still
                    # booting (slow on a loaded machine) cannot refresh anything yet
                    unstopped = any(
                        p.pid not in stopped and p.is_alive() and ready[i] == p.pid
                        for i, p in enumerate(procs)
                    )
                now = time.monotonic()
                if not unstopped:
                    uncovered_at = now
                if st.nodes and unstopped and st.last_refresh_age_s is not None:
                    # the bound runs from when some runnable process exists (continuously)
                    age = min(st.last_refresh_age_s, now - uncovered_at)
                    samples["n"] += 1
                    samples["max_age"] = max(samples["max_age"], age)
                    if age > MAX_AGE + 2 * samples["longest_refresh"] + lost:
                        violations.append(
                            f"table {st.last_refresh_age_s:.2f}s old, {lost:.2f}s of it killed "
                            f"refreshes (leader {st.leader_pid} "
                            f"{st.leader_mode} epoch {st.leader_epoch}, heartbeat "
                            f"{st.leader_heartbeat_age_s}, failures "
                            f"{st.consecutive_refresh_failures}: {st.last_refresh_error}; "
                            f"stopped {sorted(stopped)})"
                        )
                time.sleep(0.02)

        # wait until the fleet serves a table, then start the clock of the chaos
        start_deadline = time.monotonic() + 60
        while not monitor_fleet.nodes() and time.monotonic() < start_deadline:
            time.sleep(0.05)
        assert monitor_fleet.nodes(), "no table within 60 s"
        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        kills = stops = node_restarts = 0
        next_kill = time.monotonic() + 1.0
        next_stop = time.monotonic() + 2.5
        next_node = time.monotonic() + 3.0
        down_node: Any = None
        down_until = 0.0
        stop_leader = True
        try:
            chaos_end = min(time.monotonic() + DURATION, time.monotonic() + deadline - time.time())
            while time.monotonic() < chaos_end - 0.5:
                now = time.monotonic()
                with lock:
                    for pid, until in list(stopped.items()):
                        if now >= until:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGCONT)
                            del stopped[pid]
                    leader = monitor_fleet.stats().leader_pid
                    if now >= next_kill:
                        next_kill = now + 1.0
                        for i, p in enumerate(procs):
                            if p.pid == leader and p.pid not in stopped:
                                killed[p.pid] = time.monotonic()
                                os.kill(p.pid, signal.SIGKILL)
                                p.join(5)
                                procs[i] = spawn(i)
                                kills += 1
                    if now >= next_stop:
                        next_stop = now + 5.0
                        alive = [p for p in procs if p.is_alive() and p.pid not in stopped]
                        pick = [p for p in alive if p.pid == leader] if stop_leader else alive
                        target = (pick or alive)[0] if stop_leader else rng.choice(alive)
                        stop_leader = not stop_leader
                        os.kill(target.pid, signal.SIGSTOP)
                        stopped[target.pid] = now + 3.0
                        stops += 1
                if down_node is None and now >= next_node:
                    down_node = rng.choice(cluster.nodes[1:])
                    down_node.kill()
                    down_until = now + 2.0
                elif down_node is not None and now >= down_until:
                    down_node.start()
                    node_restarts += 1
                    down_node = None
                    next_node = now + 2.0
                time.sleep(0.02)
        finally:
            with lock:
                for pid in list(stopped):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                stopped.clear()
            if down_node is not None:
                down_node.start()
            stop_monitor.set()
            watcher.join(5)
        stuck = []
        for p in procs:
            p.join(max(1.0, deadline + 40 - time.time()))
            if p.is_alive():
                stuck.append(p.pid)
                p.kill()
        acked: set[str] = set()
        failed: list[str] = []
        for path in logs:
            with contextlib.suppress(FileNotFoundError), open(path) as f:
                for line in f:
                    if line.startswith("A "):
                        acked.add(line[2:].strip())
                    elif line.startswith("F "):
                        failed.append(line[2:].strip())
        stored = _scan_keys(cluster)
        lost = acked - stored
        report = (f"kills={kills} stops={stops} node_restarts={node_restarts} "
                  f"acked={len(acked)} max_age={samples['max_age']:.2f}s "
                  f"longest_refresh={samples['longest_refresh']:.2f}s")
        assert not stuck, f"stuck workers: {stuck}; {report}"
        assert not failed, f"{len(failed)} failed calls, e.g. {failed[:3]}; {report}"
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {sorted(lost)[:3]}"
        if violations:
            print("\n".join(events[-400:]))
        if violations and len(acked) < STARVED_BELOW:
            # The writers made almost no progress: the machine was starved (a quiet run acks
            # 5,000-10,000 writes), and "some unstopped process runs" did not hold in any
            # useful sense. Say so loudly instead of asserting a wall-clock bound.
            warnings.warn(f"chaos: CPU-starved run ({report}); table-age bound not asserted: "
                          f"{violations[:3]}", stacklevel=1)
            violations = []
        assert not violations, (violations[::10][:12], report)
        assert samples["n"] > 100, report
        assert kills >= 8 and stops >= 4 and node_restarts >= 3, report
        assert len(acked) > 100, report  # a sanity check: the writers really wrote
        print(report)
