"""``alternator-shm status``: the shared state of this user on this host, as workers see it.

It reads the segments without attaching (works while servers run and after they stopped) and
never creates anything: looking must not change what the fleet does. The leader pid comes from
the kernel's record lock; psutil names that process and its start time, and flags a pid that
now belongs to a process started after the leadership began (a leader in another pid
namespace, whose pid means someone else here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

import psutil

from alternator_shm.cli import UsageError
from alternator_shm.cli._numbers import integer, seconds
from alternator_shm.fleet import FleetStats, list_fleets
from alternator_shm.fleet.failsoft import default_shm_dir

__all__ = ["LeaderProcess", "configure", "known_names", "leader_process", "run", "select",
           "validate"]

# Wall clock vs. monotonic ages and psutil's tick-rounded start times disagree by a little.
_START_SLACK_S = 2.0


def add_shm_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shm-dir", default=default_shm_dir(), metavar="DIR",
                        help="where the POSIX shared memory lives (default $ALTERNATOR_SHM_DIR "
                             "or /dev/shm, as for the Helper)")


def configure(parser: argparse.ArgumentParser) -> None:
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--format", choices=("text", "json", "prometheus"), default="text",
                     help="text (default), json, or the Prometheus text exposition format "
                          "(needs alternator-shm[metrics])")
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="the same as --format json")
    parser.add_argument("--namespace", action="append", metavar="NS",
                        help="only this namespace (repeatable; default: all of this user)")
    add_shm_dir(parser)
    parser.add_argument("--watch", action="store_true",
                        help="live view like top: states, in-flight, latency, picks/s "
                             "(q or Ctrl-C quits)")
    parser.add_argument("--interval", type=seconds(0.1, 3600), default=None, metavar="S",
                        help="with --watch: seconds between screens, 0.1 to 3600 (default 1)")
    parser.add_argument("--iterations", type=integer(1, 1_000_000), default=None, metavar="N",
                        help="with --watch: quit after N screens (default: until q or Ctrl-C)")


def validate(args: argparse.Namespace) -> None:
    """Refuse what ``status`` would otherwise ignore: the --watch options without --watch, and
    an output format --watch does not produce."""
    if args.watch:
        if args.format != "text":
            raise UsageError(f"--watch shows text; --format {args.format} is for a single "
                             "snapshot (drop --watch)")
        return
    for option in ("interval", "iterations"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option} is for --watch (add --watch, or drop --{option})")


@dataclasses.dataclass(frozen=True)
class LeaderProcess:
    """What this host's process table says about a leader pid."""

    pid: int
    name: str | None  # None: no such process visible here
    started: float | None  # wall-clock epoch seconds
    reused: bool  # the pid belongs to a process started after the leadership began

    def describe(self) -> str:
        if self.name is None:
            return f"pid {self.pid} (not visible here: another pid namespace?)"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started or 0))
        text = f"pid {self.pid} {self.name}, started {started}"
        if self.reused:
            text += " (REUSED pid: not the leader, which runs in another pid namespace)"
        return text


def leader_process(stats: FleetStats, now: float | None = None) -> LeaderProcess | None:
    """Name and start time of the leader pid; flags a pid reused since the election."""
    if stats.leader_pid is None:
        return None
    try:
        proc = psutil.Process(stats.leader_pid)
        with proc.oneshot():
            name, started = proc.name(), proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return LeaderProcess(stats.leader_pid, None, None, False)
    reused = False
    if stats.leader_since_age_s is not None:
        became_leader = (time.time() if now is None else now) - stats.leader_since_age_s
        reused = started > became_leader + _START_SLACK_S
    return LeaderProcess(stats.leader_pid, name, started, reused)


def known_names(fleets: list[FleetStats], limit: int = 8) -> str:
    """What exists, for an error message: the namespaces, then the segments whose namespace
    cannot be read (listed by segment name, the name ``cleanup --segment`` takes); "none"."""
    names = sorted({f.namespace for f in fleets if f.namespace})
    nameless = sorted(f.segment_name for f in fleets if not f.namespace)
    parts = []
    if names:
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        parts.append(", ".join(names[:limit]) + more)
    if nameless:
        more = f" and {len(nameless) - limit} more" if len(nameless) > limit else ""
        parts.append("unreadable segments " + ", ".join(nameless[:limit]) + more)
    return "; ".join(parts) or "none"


def select(fleets: list[FleetStats], namespaces: list[str] | None) -> list[FleetStats]:
    """The fleets named (all when ``namespaces`` is None); an unknown name is a UsageError.

    Every segment showing a name is selected by it: an unusable segment can show the same
    namespace as a healthy one, or the empty name when its header cannot be read."""
    if namespaces is None:
        return fleets
    unknown = [ns for ns in namespaces if not any(f.namespace == ns for f in fleets)]
    if unknown:
        raise UsageError(f"no shared state for namespace {', '.join(map(repr, unknown))} "
                         f"on this host for this user (namespaces: {known_names(fleets)})")
    wanted = set(namespaces)
    return [f for f in fleets if f.namespace in wanted]


def _to_jsonable(stats: FleetStats) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(stats)
    data["nodes"] = list(data.get("nodes", []))
    leader = leader_process(stats)
    data["leader_process"] = None if leader is None else dataclasses.asdict(leader)
    return data


def _age(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s ago"


def _print_human(fleets: list[FleetStats]) -> None:
    if not fleets:
        print("no shared alternator-shm state for this user on this host")
        return
    for st in fleets:
        print(f"namespace {st.namespace or '(unreadable)'}")
        if st.problem is not None:
            # listed, not hidden: new processes of this namespace balance alone until it is fixed
            print(f"  segment {st.segment_name}   UNUSABLE: {st.problem}")
            if st.problem.startswith("owned by uid"):
                print("  (another user created this name: as root, remove the file)")
            else:
                print("  (fix: stop the processes attached to it, then "
                      f"`alternator-shm cleanup --segment {st.segment_name}`)")
            print()
            continue
        print(f"  segment {st.segment_name}   counter {st.counter_backend or '?'}")
        leader = leader_process(st)
        print(f"  leader {leader.describe() if leader else 'none'}")
        print(f"  generation {st.generation}   picks {st.picks}   refreshes {st.refreshes}")
        print(f"  last refresh {_age(st.last_refresh_age_s)}   "
              f"consecutive failures {st.consecutive_refresh_failures}")
        if st.last_refresh_error:
            print(f"  last refresh error: {st.last_refresh_error}")
        if not st.node_health:
            print("  node health off (node_health=False): every node is in rotation")
        print(f"  {'node':40} {'picks':>12} {'failures':>9}  state")
        for node in st.nodes:
            ns = st.per_node.get(node)
            picks = ns.picks if ns else 0
            failures = ns.failures if ns else 0
            state = ns.state.upper() if ns else "ACTIVE"
            if ns and ns.state == "down":
                state += f" (generation {ns.generation})"
            print(f"  {node:40} {picks:>12} {failures:>9}  {state}")
        print()


def run(args: argparse.Namespace) -> int:
    if args.watch:
        from alternator_shm._watch import watch

        return watch(lambda: select(list_fleets(args.shm_dir), args.namespace),
                     interval=args.interval or 1.0, iterations=args.iterations)
    fleets = select(list_fleets(args.shm_dir), args.namespace)
    if args.format == "prometheus":
        try:
            from alternator_shm.metrics import exposition

            sys.stdout.write(exposition(fleets))
        except ImportError:
            raise UsageError("--format prometheus needs prometheus_client: "
                             "pip install 'alternator-shm[metrics]'") from None
        return 0
    if args.format == "json":
        json.dump([_to_jsonable(f) for f in fleets], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_human(fleets)
    return 0
