"""``alternator-shm cleanup``: remove shared state that no process uses any more.

Every application of a user on a host has its own namespace, so a bare ``cleanup`` removes
nothing: it lists the namespaces and asks which (``--namespace NS``, repeatable) or ``--all``.
A segment some process is still attached to is always kept, and every decision is printed.
Nothing runs this automatically: a restarted server starts warm with the last node table.
"""

from __future__ import annotations

import argparse

from alternator_shm.cli import UsageError
from alternator_shm.cli.status import add_shm_dir, select
from alternator_shm.fleet import FleetStats, cleanup, list_fleets

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--namespace", action="append", metavar="NS",
                       help="remove this namespace's state if unused (repeatable)")
    which.add_argument("--all", action="store_true",
                       help="remove every unused namespace of this user, other apps' included")
    add_shm_dir(parser)


def _describe(st: FleetStats) -> str:
    leader = f"leader pid {st.leader_pid}" if st.leader_pid is not None else "no leader"
    return f"{st.namespace}  ({st.segment_name}, {leader})"


def run(args: argparse.Namespace) -> int:
    fleets = list_fleets(args.shm_dir)
    if not args.all and not args.namespace:
        if not fleets:
            print("no shared alternator-shm state for this user on this host")
            return 0
        print("namespaces of this user on this host:")
        for st in fleets:
            print(f"  {_describe(st)}")
        raise UsageError("say which to remove: --namespace NS (repeatable) or --all")
    chosen = fleets if args.all else select(fleets, args.namespace)
    if not chosen:
        print("no shared alternator-shm state for this user on this host")
        return 0
    for st in chosen:
        removed = cleanup(st.namespace, args.shm_dir)
        verdict = "removed" if removed else "kept (a process is attached)"
        print(f"{verdict}: {_describe(st)}")
    return 0
