"""``alternator-shm status`` and ``alternator-shm cleanup``: operators' view of the host state.

Both read the shared segments directly, so they work when no worker is attached, and neither
creates anything: looking must never change what the fleet does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from alternator_shm.fleet import FleetStats, cleanup, list_fleets
from alternator_shm.fleet.failsoft import default_shm_dir


def configure_status_parser(parser: argparse.ArgumentParser) -> None:
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--format", choices=("text", "json", "prometheus"), default="text",
                     help="text (default), json, or the Prometheus text exposition format "
                          "(needs alternator-shm[metrics])")
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="the same as --format json")
    parser.add_argument("--namespace", default=None, help="only this namespace")
    parser.add_argument("--shm-dir", default=default_shm_dir(), help=argparse.SUPPRESS)
    add_watch_arguments(parser)


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--watch`` (live view, alternator_shm._watch), ``--interval``, ``--iterations``."""
    parser.add_argument("--watch", action="store_true",
                        help="live view like top: states, in-flight, latency, picks/s "
                             "(q or Ctrl-C quits)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between screens with --watch (default 1)")
    parser.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="with --watch: quit after N screens")


def configure_cleanup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    parser.add_argument("--shm-dir", default=default_shm_dir(), help=argparse.SUPPRESS)


def _to_jsonable(stats: FleetStats) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(stats)
    data["nodes"] = list(data.get("nodes", []))
    return data


def _age(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s ago"


def _print_human(fleets: list[FleetStats]) -> None:
    if not fleets:
        print("no shared alternator-shm state for this user on this host")
        return
    for st in fleets:
        print(f"namespace {st.namespace or '?'}  (segment {st.segment_name})")
        if st.problem is not None:
            # listed, not hidden: new processes of this namespace balance alone until it is fixed
            print(f"  UNUSABLE: {st.problem}")
            if st.problem.startswith("owned by uid"):
                print("  (another user created this name: as root, remove the file)")
            else:
                print("  (fix: stop the processes attached to it, then `alternator-shm cleanup`)")
            print()
            continue
        leader = st.leader_pid if st.leader_pid is not None else "none"
        print(f"  leader pid {leader}   generation {st.generation}   picks {st.picks}")
        print(
            f"  last refresh {_age(st.last_refresh_age_s)}   refreshes {st.refreshes}   "
            f"consecutive failures {st.consecutive_refresh_failures}"
        )
        print(f"  {'node':40} {'picks':>10} {'failures':>9}  state")
        for node in st.nodes:
            ns = st.per_node.get(node)
            picks = ns.picks if ns else 0
            failures = ns.failures if ns else 0
            state = "QUARANTINED" if ns and ns.quarantined else "ok"
            print(f"  {node:40} {picks:>10} {failures:>9}  {state}")
        print()


def run_status(args: argparse.Namespace) -> int:
    def read() -> list[FleetStats]:
        fleets = list_fleets(args.shm_dir)
        if args.namespace is not None:
            fleets = [f for f in fleets if f.namespace == args.namespace]
        return fleets

    if args.watch:
        from alternator_shm._watch import watch

        if not args.interval > 0:
            print("alternator-shm status: --interval must be > 0", file=sys.stderr)
            return 2
        return watch(read, interval=args.interval, iterations=args.iterations)
    fleets = read()
    if args.format == "prometheus":
        try:
            from alternator_shm.metrics import exposition

            text = exposition(fleets)
        except ImportError:
            print("alternator-shm status: --format prometheus needs prometheus_client: "
                  "pip install 'alternator-shm[metrics]'", file=sys.stderr)
            return 2
        sys.stdout.write(text)
        return 0
    if args.format == "json":
        json.dump([_to_jsonable(f) for f in fleets], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_human(fleets)
    return 0


def run_cleanup(args: argparse.Namespace) -> int:
    removed = cleanup(args.namespace, args.shm_dir)
    for name in removed:
        print(f"removed {name}")
    if not removed:
        print("nothing to remove (segments in use are kept)")
    return 0
