"""``alternator-shm cleanup``: remove shared state that no process uses any more.

Every application of a user on a host has its own namespace, so a bare ``cleanup`` removes
nothing: it lists the namespaces and asks which (``--namespace NS``, ``--segment NAME``, both
repeatable) or ``--all``. What is removed is exactly the segment ``status`` showed: its segment
name, never a name recomputed from the namespace, so a segment whose header is corrupt or of
another format (``status`` marks it UNUSABLE and may show an empty namespace) can be removed
too. A segment some process is still attached to is always kept (the library's own check,
:func:`alternator_shm.fleet.cleanup_segment`), and every decision is printed; exit status 1
when a segment named on the command line was kept. Nothing runs this automatically: a
restarted server starts warm with the last node table.
"""

from __future__ import annotations

import argparse
import os

from alternator_shm.cli import UsageError, plural
from alternator_shm.cli.status import add_shm_dir, known_names, select
from alternator_shm.fleet import FleetStats, cleanup_segment, list_fleets

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--namespace", action="append", metavar="NS",
                       help="remove this namespace's state if unused (repeatable; the "
                            "namespace as `status` shows it)")
    which.add_argument("--segment", action="append", metavar="NAME",
                       help="remove this segment if unused, by the name `status` prints "
                            "(/rrlb...; repeatable): for a segment whose namespace is unreadable")
    which.add_argument("--all", action="store_true",
                       help="remove every unused namespace of this user, other apps' included")
    add_shm_dir(parser)


def _describe(st: FleetStats) -> str:
    leader = f"leader pid {st.leader_pid}" if st.leader_pid is not None else "no leader"
    return f"{st.namespace or '(unreadable)'}  ({st.segment_name}, {leader})"


def _by_namespace(fleets: list[FleetStats], namespaces: list[str]) -> list[FleetStats]:
    chosen = select(fleets, namespaces)
    for ns in dict.fromkeys(namespaces):
        named = [st.segment_name for st in chosen if st.namespace == ns]
        if len(named) > 1:
            raise UsageError(f"namespace {ns!r} names {plural(len(named), 'segment')} "
                             f"({', '.join(named)}); say which with --segment NAME")
    return chosen


def _segment_base(name: str, shm_dir: str) -> str | None:
    """``/rrlb...`` or ``rrlb...`` as status prints it, or a path to it inside ``shm_dir``."""
    if "/" not in name.lstrip("/"):
        return name.lstrip("/")
    directory, base = os.path.split(name)
    return base if os.path.realpath(directory) == os.path.realpath(shm_dir) else None


def _by_segment(fleets: list[FleetStats], names: list[str], shm_dir: str) -> list[FleetStats]:
    by_name = {st.segment_name: st for st in fleets}
    chosen = []
    for name in dict.fromkeys(names):
        base = _segment_base(name, shm_dir)
        st = by_name.get(f"/{base}") if base else None
        if st is None:
            raise UsageError(f"{name!r} is not a segment of this user in {shm_dir} "
                             f"(namespaces: {known_names(fleets)})")
        chosen.append(st)
    return chosen


def run(args: argparse.Namespace) -> int:
    fleets = list_fleets(args.shm_dir)
    segments = getattr(args, "segment", None)
    if not args.all and not args.namespace and not segments:
        if not fleets:
            print("no shared alternator-shm state for this user on this host")
            return 0
        print("namespaces of this user on this host:")
        for st in fleets:
            print(f"  {_describe(st)}")
        raise UsageError("say which to remove: --namespace NS or --segment NAME "
                         "(repeatable), or --all")
    if args.all:
        chosen = fleets
    elif segments:
        chosen = _by_segment(fleets, segments, args.shm_dir)
    else:
        chosen = _by_namespace(fleets, args.namespace)
    if not chosen:
        print("no shared alternator-shm state for this user on this host")
        return 0
    status = 0
    for st in chosen:
        try:
            kept = cleanup_segment(st.segment_name, args.shm_dir)
        except ValueError:
            kept = "already gone"  # listed a moment ago, removed since by someone else
        if kept is None:
            print(f"removed: {_describe(st)}")
        elif kept == "already gone":
            print(f"already gone: {_describe(st)}")
        else:
            print(f"kept ({kept}): {_describe(st)}")
            status = 0 if args.all else 1  # --all keeps what is in use by design
    return status
