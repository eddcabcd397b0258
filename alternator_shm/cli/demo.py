"""``alternator-shm demo``: watch one host-wide fleet survive a leader kill and a node kill.

The demo starts an embedded 3-node emulated cluster (two racks), then worker processes that
each build their own :class:`~alternator_shm.Helper` on one namespace and issue PutItem/GetItem
as fast as they can. Midway it SIGKILLs the worker that leads the refresh, kills a node, and
later restarts the node. The numbers come from where they are true: attempts per node and
``/localnodes`` polls from the nodes' own logs, the leader from the shared segment, calls,
retries and failures from the callers. It succeeds (exit status 0) only if every claim it shows
held (:func:`_claims`): no call failed, the round-robin was exact while every node was up, one
process polled ``/localnodes``, the killed leader was replaced, the node was killed and
restarted. Each claim gets a line saying whether it held and by which numbers.

Words, used one way only: a *call* is one boto3 operation (PutItem, GetItem); an *attempt* is
one HTTP request a node receives. A call takes one attempt, plus one per retry.

The workers are started with ``forkserver`` (``spawn`` where unavailable): this process runs
the emulator's server threads, and forking a threaded process is what the library tells users
not to do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from alternator_shm.cli import plural
from alternator_shm.cli._extras import require_emulator
from alternator_shm.cli._numbers import integer, seconds

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess
    from multiprocessing.sharedctypes import SynchronizedArray
    from multiprocessing.synchronize import Event

    from alternator_shm.emulator import Cluster

__all__ = ["configure", "run"]

TABLE = "demo"
_TOPOLOGY = [("dc1", "rack1"), ("dc1", "rack2"), ("dc1", "rack1")]
_API_OPERATIONS = frozenset({"PutItem", "GetItem"})
# Per-worker shared counters (one writer each, so no lock): pid, ok, failed, retried attempts.
_FIELDS = 4
_PID, _OK, _FAILED, _RETRIES = range(_FIELDS)
# When the chaos happens, as fractions of --duration.
_KILL_LEADER_AT = 0.30
_KILL_NODE_AT = 0.45
_RESTART_NODE_AT = 0.70
_SAMPLE_S = 0.2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=seconds(1, 3600), default=10.0, metavar="S",
                        help="seconds of traffic, 1 to 3600 (default 10; the chaos is "
                             "scheduled within)")
    parser.add_argument("--workers", type=integer(1, 64), default=4, metavar="N",
                        help="worker processes, 1 to 64 (default 4)")
    parser.add_argument("--backend", choices=("moto", "null"), default="moto",
                        help="emulator storage: moto (real items) or null (instant answers)")
    parser.add_argument("--refresh-interval", type=seconds(0.05, 60), default=0.5, metavar="S",
                        help="seconds between /localnodes polls by the elected refresher, "
                             "0.05 to 60 (default 0.5)")
    parser.add_argument("--json", action="store_true",
                        help="print only a JSON summary (no live table)")


# --------------------------------------------------------------------------- worker side


def _worker_main(
    slot: int,
    settings: dict[str, Any],
    counters: SynchronizedArray[int],
    stop: Event,
) -> None:
    """One worker process: its own Helper on the shared namespace, calls until told to stop."""
    from botocore.exceptions import BotoCoreError, ClientError

    from alternator_shm.helper import Helper

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    seeds = settings.pop("seeds")
    helper = Helper(seeds, **settings)
    ddb = helper.new_dynamodb_client()
    helper.start()
    base = slot * _FIELDS
    counters[base + _PID] = os.getpid()
    i = 0
    while not stop.is_set():
        key = {"p": {"S": f"w{slot}-{i // 2}"}}
        out: Any
        try:
            if i % 2 == 0:
                out = ddb.put_item(TableName=TABLE, Item={**key, "n": {"N": str(i)}})
            else:
                out = ddb.get_item(TableName=TABLE, Key=key)
        except (BotoCoreError, ClientError) as exc:
            counters[base + _FAILED] += 1
            print(f"worker {os.getpid()}: call failed: {exc}", file=sys.stderr)
        else:
            counters[base + _OK] += 1
            counters[base + _RETRIES] += int(out["ResponseMetadata"].get("RetryAttempts", 0))
        i += 1
    helper.close()


# --------------------------------------------------------------------------- parent side


@dataclass
class _Event:
    at: float
    what: str


@dataclass
class _State:
    """Everything the display and the summary show, sampled by the parent."""

    started: float
    duration: float
    namespace: str
    workers: int
    refresh_interval: float = 0.5
    leader: int | None = None
    leaders: list[int] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    per_node: dict[str, int] = field(default_factory=dict)
    node_state: dict[str, str] = field(default_factory=dict)
    node_rack: dict[str, str] = field(default_factory=dict)
    ok: int = 0
    failed: int = 0
    retries: int = 0
    balanced_phase: dict[str, int] = field(default_factory=dict)
    node_killed_at: float | None = None  # wall clock, as the node logs' times
    restarted_node: str | None = None
    node_restarted_at: float | None = None  # wall clock
    back_after_s: float | None = None  # restart to the first attempt it received again
    attempts_since_restart: int = 0
    processes: int = 0  # worker processes started, replacements included
    localnodes_polls: int = 0  # GET /localnodes the nodes received
    poll_window_s: float = 0.0  # from the first of those polls to the last

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str) -> None:
        self.events.append(_Event(round(self.elapsed(), 2), what))


def _context() -> BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Import boto3 and the library once in the fork server, not in every worker.
        ctx.set_forkserver_preload(["alternator_shm.helper"])
        return ctx
    return multiprocessing.get_context("spawn")


def _api_counts(cluster: Cluster, before: float | None = None) -> dict[str, int]:
    """Attempts each node received (that started before the wall-clock time ``before``)."""
    return {n.url: sum(1 for e in n.log if e.operation in _API_OPERATIONS
                       and (before is None or e.time < before))
            for n in cluster.nodes}


def _polls(cluster: Cluster) -> tuple[int, float]:
    """``GET /localnodes`` the nodes received, and the seconds from the first to the last."""
    times = [e.time for n in cluster.nodes for e in n.log if e.path.startswith("/localnodes")]
    return len(times), (max(times) - min(times) if times else 0.0)


def _leader_pid(namespace: str) -> int | None:
    from alternator_shm.fleet import list_fleets

    for stats in list_fleets():
        if stats.namespace == namespace:
            return stats.leader_pid
    return None


def _short(url: str) -> str:
    """``http://127.1.2.3:41234`` -> ``127.1.2.3``: the port is the same for every node."""
    return url.rsplit("//", 1)[-1].rsplit(":", 1)[0]


def _leader_text(st: _State) -> str:
    return f"pid {st.leader}" if st.leader is not None else "none (electing)"


class _Display:
    """A live table on a terminal (redrawn in place), or one line per second otherwise.

    Every line fits 80 columns.
    """

    def __init__(self, out: IO[str], enabled: bool) -> None:
        self._out = out
        self._enabled = enabled
        self._tty = enabled and out.isatty()
        self._lines = 0
        self._last_line = -1.0
        self._events_shown = 0

    def update(self, st: _State, final: bool = False) -> None:
        if not self._enabled:
            return
        if self._tty:
            text = self.table(st)
            if self._lines:
                self._out.write(f"\x1b[{self._lines}F\x1b[J")
            self._out.write(text)
            self._lines = text.count("\n")
        else:
            for ev in st.events[self._events_shown:]:
                self._out.write(f"t={ev.at:5.1f}s {ev.what}\n")
            self._events_shown = len(st.events)
            if not final and st.elapsed() - self._last_line < 1.0:
                self._out.flush()
                return
            self._last_line = st.elapsed()
            self._out.write(self.line(st))
        self._out.flush()

    @staticmethod
    def line(st: _State) -> str:
        """One progress line: the leader, the calls, and the attempts each node received."""
        nodes = " ".join(f"n{i + 1} {c}" for i, c in enumerate(st.per_node.values()))
        leader = st.leader if st.leader is not None else "none"
        return (f"t={st.elapsed():5.1f}s leader {leader} calls {st.ok} failed {st.failed} "
                f"retries {st.retries} | {nodes}\n")

    @staticmethod
    def table(st: _State) -> str:
        total = sum(st.per_node.values()) or 1
        lines = [
            f"alternator-shm demo  t={min(st.elapsed(), st.duration):4.1f}/{st.duration:.0f}s"
            f"  namespace {st.namespace}",
            f"  {'':3} {'node':22} {'rack':6} {'state':8} {'attempts':>9} {'share':>6}",
        ]
        for i, (node, count) in enumerate(st.per_node.items()):
            lines.append(
                f"  n{i + 1:<2} {_short(node):22} {st.node_rack.get(node, ''):6} "
                f"{st.node_state.get(node, ''):8} {count:>9} {100.0 * count / total:5.1f}%"
            )
        changes = max(len(st.leaders) - 1, 0)
        lines.append(f"  leader {_leader_text(st)}   leader changes {changes}")
        lines.append(f"  calls ok {st.ok}   failed {st.failed}   retries {st.retries}")
        for ev in st.events[-4:]:
            lines.append(f"  {ev.at:5.1f}s  {ev.what}")
        return "\n".join(line[:80] for line in lines) + "\n"


def _settings(cluster: Cluster, namespace: str, refresh: float) -> dict[str, Any]:
    return {
        "seeds": list(cluster.seeds),
        "port": cluster.port,
        "credentials": cluster.credentials,
        "namespace": namespace,
        "refresh_interval": refresh,
        "idle_refresh_interval": refresh,
    }


def _create_table(cluster: Cluster) -> None:
    """Create the demo table through one node directly (outside the fleet being shown)."""
    import boto3

    key, secret = cluster.credentials
    client = boto3.client(
        "dynamodb", endpoint_url=cluster.nodes[0].url, region_name="alternator",
        aws_access_key_id=key, aws_secret_access_key=secret,
    )
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.close()


class _Workers:
    """The worker processes, one counter slot each (a replacement gets a fresh slot)."""

    def __init__(self, ctx: BaseContext, settings: dict[str, Any], slots: int) -> None:
        self._ctx = ctx
        self._settings = settings
        self.counters: SynchronizedArray[int] = ctx.Array("q", slots * _FIELDS, lock=False)
        self.stop = ctx.Event()
        self.procs: list[BaseProcess] = []

    def spawn(self) -> BaseProcess:
        slot = len(self.procs)
        proc = self._ctx.Process(  # type: ignore[attr-defined]
            target=_worker_main, args=(slot, dict(self._settings), self.counters, self.stop),
            name=f"demo-worker-{slot}", daemon=True,
        )
        proc.start()
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def pid_ready(self, proc: BaseProcess) -> bool:
        return int(self.counters[self.procs.index(proc) * _FIELDS + _PID]) != 0

    def totals(self) -> tuple[int, int, int]:
        c = self.counters
        n = len(self.procs)
        return (
            sum(c[i * _FIELDS + _OK] for i in range(n)),
            sum(c[i * _FIELDS + _FAILED] for i in range(n)),
            sum(c[i * _FIELDS + _RETRIES] for i in range(n)),
        )

    def ours(self, pid: int | None) -> BaseProcess | None:
        return next((p for p in self.procs if p.pid == pid and p.is_alive()), None)

    def shutdown(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()  # only our own worker processes, by pid
                proc.join(timeout=2)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sample(st: _State, cluster: Cluster, workers: _Workers, final: bool = False) -> None:
    st.per_node = _api_counts(cluster)
    st.node_state = {n.url: "up" if n.state == "NORMAL" else n.state.lower()
                     for n in cluster.nodes}
    st.ok, st.failed, st.retries = workers.totals()
    st.processes = len(workers.procs)
    st.localnodes_polls, st.poll_window_s = _polls(cluster)
    if final:
        if st.node_killed_at is not None:
            # Counted from the logs by start time, once every answer is in: a snapshot taken
            # while traffic flows would also measure how long reading three logs takes.
            st.balanced_phase = _api_counts(cluster, before=st.node_killed_at)
        restarted_at = st.node_restarted_at
        if restarted_at is not None:
            [node] = [n for n in cluster.nodes if n.url == st.restarted_node]
            since = [e.time for e in node.log
                     if e.operation in _API_OPERATIONS and e.time >= restarted_at]
            st.attempts_since_restart = len(since)
            st.back_after_s = min(since) - restarted_at if since else None
        return  # the workers have stopped: keep showing the last leader
    # The lock may still name a killed worker for a moment; show only a live one of ours.
    leader = _leader_pid(st.namespace)
    if leader is None or workers.ours(leader) is None:
        st.leader = None
        return
    if leader != st.leader and (not st.leaders or leader != st.leaders[-1]):
        if st.leaders:
            st.note(f"new leader pid {leader} (was {st.leaders[-1]})")
        st.leaders.append(leader)
    st.leader = leader


def _run_traffic(st: _State, cluster: Cluster, workers: _Workers, display: _Display) -> None:
    """The timeline: steady traffic, kill the leader, kill a node, restart it, stop."""
    victim = cluster.nodes[1]
    steps: list[tuple[float, str]] = [
        (_KILL_LEADER_AT, "kill-leader"), (_KILL_NODE_AT, "kill-node"),
        (_RESTART_NODE_AT, "restart-node"),
    ]
    while st.elapsed() < st.duration:
        _sample(st, cluster, workers)
        if steps and st.elapsed() >= steps[0][0] * st.duration:
            _, step = steps.pop(0)
            if step == "kill-leader":
                proc = workers.ours(st.leader)
                if proc is None:  # no leader yet: try again at the next sample
                    steps.insert(0, (0.0, step))
                else:
                    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
                    st.leader = None
                    st.note(f"SIGKILL leader pid {proc.pid}; started a replacement worker")
                    workers.spawn()
            elif step == "kill-node":
                st.node_killed_at = time.time()
                st.balanced_phase = _api_counts(cluster, before=st.node_killed_at)
                victim.kill()
                st.note(f"killed node {_short(victim.url)} ({victim.rack})")
            else:
                victim.start()
                st.restarted_node, st.node_restarted_at = victim.url, time.time()
                st.note(f"restarted node {_short(victim.url)}")
        display.update(st)
        time.sleep(_SAMPLE_S)


@dataclass(frozen=True)
class _Claim:
    claim: str  # what the demo says it shows
    held: bool
    detail: str  # the numbers, said the same way whether it held or not


def _claims(st: _State) -> list[_Claim]:
    """Every promise the demo makes, checked against what the nodes and callers saw."""
    claims = [_Claim("no call failed", st.failed == 0 and st.ok > 0,
                     f"{plural(st.failed, 'call')} failed of {st.ok + st.failed}")]
    # While every node was up, picks follow one shared counter, so the attempts that started
    # before the node kill are a prefix of the round-robin (max - min <= 1) less the attempts
    # then in flight (at most one per worker) and the killed leader's last pick.
    if st.balanced_phase:
        spread = max(st.balanced_phase.values()) - min(st.balanced_phase.values())
        allowed = st.workers + 2
        claims.append(_Claim("exact round-robin", spread <= allowed,
                             f"max - min = {spread} with every node up (at most {allowed}: "
                             "calls in flight)"))
    else:
        claims.append(_Claim("exact round-robin", False, "the run ended before the node kill"))
    # One elected poller: a poll every refresh interval, plus one first look per process and
    # one for each leader taking over (a poller per process would make several times more).
    allowed = (st.processes + len(st.leaders) + 2
               + math.ceil(st.poll_window_s / st.refresh_interval))
    claims.append(_Claim("one poller", 0 < st.localnodes_polls <= allowed,
                         f"{plural(st.localnodes_polls, 'poll')} of /localnodes in "
                         f"{st.poll_window_s:.1f} s (at most {allowed} from one poller)"))
    said = " ".join(e.what for e in st.events)
    if "SIGKILL leader" not in said:
        leader = _Claim("leader replaced", False, "the leader was never killed (none elected?)")
    elif len(st.leaders) < 2:
        leader = _Claim("leader replaced", False, "no other process took over")
    else:
        leader = _Claim("leader replaced", True,
                        f"pid {st.leaders[0]} killed, pid {st.leaders[-1]} leads")
    claims.append(leader)
    if "killed node" not in said:
        node = _Claim("node killed and restarted", False, "no node was killed")
    elif "restarted node" not in said:
        node = _Claim("node killed and restarted", False, "the node was never restarted")
    else:
        node = _Claim("node killed and restarted", True,
                      "no call failed meanwhile" if st.failed == 0
                      else plural(st.failed, "call") + " failed")
    claims.append(node)
    return claims


def _summary(st: _State, backend: str) -> dict[str, Any]:
    spread = (max(st.balanced_phase.values()) - min(st.balanced_phase.values())
              if st.balanced_phase else None)
    claims = _claims(st)
    return {
        "ok": all(c.held for c in claims),
        "claims": [{"claim": c.claim, "held": c.held, "detail": c.detail} for c in claims],
        "duration_s": round(st.elapsed(), 2),
        "backend": backend,
        "namespace": st.namespace,
        "workers": st.workers,
        "calls": st.ok,
        "failed_calls": st.failed,
        "retried_attempts": st.retries,
        "leader_pids": st.leaders,
        "leader_changes": max(len(st.leaders) - 1, 0),
        "localnodes_polls": st.localnodes_polls,
        "attempts_per_node": st.per_node,
        "racks": st.node_rack,
        "balanced_phase": {"attempts_per_node": st.balanced_phase, "max_minus_min": spread},
        "restarted_node": {
            "node": st.restarted_node,
            "back_after_s": (round(st.back_after_s, 2) if st.back_after_s is not None
                             else None),
            "attempts_since_restart": st.attempts_since_restart,
        },
        "events": [{"t": e.at, "event": e.what} for e in st.events],
    }


def _print_summary(summary: dict[str, Any], out: IO[str]) -> None:
    per_node: dict[str, int] = summary["attempts_per_node"]
    total = sum(per_node.values()) or 1
    lines = ["", "summary",
             f"  {'':3} {'node':22} {'rack':6} {'attempts':>9} {'share':>6}"]
    for i, (node, count) in enumerate(per_node.items()):
        lines.append(f"  n{i + 1:<2} {_short(node):22} {summary['racks'].get(node, ''):6} "
                     f"{count:>9} {100.0 * count / total:5.1f}%")
    phase = summary["balanced_phase"]
    if phase["attempts_per_node"]:
        counts = phase["attempts_per_node"].values()
        split = ", ".join(f"n{i + 1} {c}" for i, c in enumerate(counts))
        lines.append(f"  before the node kill: {split} (max - min = {phase['max_minus_min']})")
    restarted = summary["restarted_node"]
    if restarted["node"] is not None:
        back = restarted["back_after_s"]
        text = (f"  restarted node {_short(restarted['node'])}: back in rotation {back:.1f} s "
                f"after its restart, {plural(restarted['attempts_since_restart'], 'attempt')} "
                "since" if back is not None else
                f"  restarted node {_short(restarted['node'])}: not back in rotation before "
                "the end")
        lines.extend(textwrap.wrap(text, 80, subsequent_indent="    "))
    pids = ", ".join(map(str, summary["leader_pids"])) or "none"
    lines.append(f"  leader pids {pids}   leader changes {summary['leader_changes']}")
    lines.append(f"  calls {summary['calls']}   failed calls {summary['failed_calls']}   "
                 f"retries {summary['retried_attempts']} (attempts sent to another node)")
    lines.append("  claims:")
    for claim in summary["claims"]:
        text = f"    {'yes' if claim['held'] else 'NO':3}  {claim['claim']}: {claim['detail']}"
        lines.extend(textwrap.wrap(text, 80, subsequent_indent=" " * 9))
    failed = [c["claim"] for c in summary["claims"] if not c["held"]]
    lines.append("  OK: every claim held" if not failed else
                 f"  FAILED: {plural(len(failed), 'claim')} did not hold (the lines marked NO)")
    for line in lines:
        print(line, file=out)


def run(args: argparse.Namespace) -> int:
    require_emulator("alternator-shm demo", backend=args.backend)
    from alternator_shm.emulator import Cluster
    from alternator_shm.fleet import cleanup

    out = sys.stdout
    namespace = f"demo-{uuid.uuid4().hex[:12]}"
    users = {"demo": f"demo-{uuid.uuid4().hex[:8]}"}
    with Cluster(nodes=3, topology=_TOPOLOGY, users=users, backend=args.backend,
                 failure_detect_delay=0.0) as cluster:
        if not args.json:
            print(f"emulated cluster, backend {args.backend}, port {cluster.port}:", file=out)
            for i, n in enumerate(cluster.nodes):
                print(f"  n{i + 1} {_short(n.url)} ({n.dc}, {n.rack})", file=out)
            starting = plural(args.workers, "worker process", "worker processes")
            print(f"starting {starting} on namespace {namespace}", file=out)
            print("calls: boto3 operations; retries: extra attempts of a call, each sent to\n"
                  "another node; n1..n3: the attempts each node received",
                  file=out, flush=True)
        _create_table(cluster)
        settings = _settings(cluster, namespace, args.refresh_interval)
        workers = _Workers(_context(), settings, slots=args.workers + 1)
        st = _State(time.monotonic(), args.duration, namespace, args.workers,
                    refresh_interval=args.refresh_interval)
        st.node_rack = {n.url: n.rack for n in cluster.nodes}
        display = _Display(out, enabled=not args.json)
        try:
            for _ in range(args.workers):
                workers.spawn()
            if not _wait(lambda: all(workers.pid_ready(p) for p in workers.procs), 30):
                print("workers did not start within 30 s", file=sys.stderr)
                return 1
            st.started = time.monotonic()
            _run_traffic(st, cluster, workers, display)
        finally:
            workers.shutdown()
            try:
                with contextlib.suppress(Exception):
                    # The final counts, with every worker stopped.
                    _sample(st, cluster, workers, final=True)
            finally:
                cleanup(namespace)
        display.update(st, final=True)
    summary = _summary(st, args.backend)
    if args.json:
        json.dump(summary, out, indent=2)
        out.write("\n")
    else:
        _print_summary(summary, out)
    return 0 if summary["ok"] else 1
