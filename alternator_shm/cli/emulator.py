"""``alternator-shm emulator``: run a local Alternator cluster in the foreground.

Prints the seeds, port and credentials, then waits; Ctrl-C (SIGINT) or SIGTERM stops every
node and the storage, so nothing is left running. Options that make no sense (no nodes, both
``--nodes`` and ``--dc``, a user without a secret) are refused before anything starts.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from alternator_shm.cli import UsageError, plural
from alternator_shm.cli._extras import require_emulator
from alternator_shm.cli._numbers import integer, seconds
from alternator_shm.cli.check import port_argument
from alternator_shm.emulator import PROFILES, Cluster, DynamoDBLocalNotInstalled
from alternator_shm.emulator._cluster import BACKENDS

__all__ = ["configure", "run", "validate"]

DEFAULT_NODES = 3


# Every node has its own address in one 127.a.b.0/24 block: .1 to .254.
MAX_NODES = 254
_COUNT = integer(1, MAX_NODES)


def _dc_spec(value: str) -> tuple[str, int]:
    name, sep, count = value.partition(":")
    try:
        n = _COUNT(count) if sep else 1
    except argparse.ArgumentTypeError:
        n = 0
    if not name or not n:
        raise argparse.ArgumentTypeError(
            f"expected DC:COUNT with COUNT {_COUNT.describe()}, got {value!r}")
    return name, n


def _user(value: str) -> tuple[str, str]:
    key, sep, secret = value.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError(f"expected KEY:SECRET, got {value!r}")
    return key, secret


def configure(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--nodes", type=_COUNT, default=None, metavar="N",
                      help=f"N nodes in dc1, one per rack rack1..rackN, 1 to {MAX_NODES} "
                           f"(default {DEFAULT_NODES})")
    size.add_argument("--dc", type=_dc_spec, action="append", metavar="DC:COUNT",
                      help="COUNT nodes (default 1) in DC, one per rack rack1..rackCOUNT "
                           f"(repeatable, one per DC, {MAX_NODES} nodes in all at most; "
                           "instead of --nodes)")
    parser.add_argument("--port", type=port_argument, default=None,
                        help="the port every node listens on (default: a free one)")
    parser.add_argument("--enforce-auth", type=_user, action="append", metavar="KEY:SECRET",
                        help="enforce SigV4 and accept this user (repeatable; default: no auth)")
    parser.add_argument("--backend", choices=BACKENDS, default="moto",
                        help="storage: moto (default, in-process), dynamodb-local "
                             "(AWS DynamoDB Local, needs Java) or null (instant minimal answers)")
    parser.add_argument("--https", action="store_true",
                        help="serve TLS with a per-cluster CA (its file is printed)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="current",
                        help="server version to behave like (default current)")
    parser.add_argument("--failure-detect-delay", type=seconds(0, 3600), default=0.0,
                        metavar="S", help="seconds before a killed node leaves /localnodes, "
                                          "0 to 3600 (default 0)")
    parser.add_argument("--process-per-node", action="store_true",
                        help="run each node as a process (kill = SIGKILL, pause = SIGSTOP)")
    parser.add_argument("--forward-transactions", action="store_true",
                        help="execute TransactWriteItems / TransactGetItems on the backend "
                             "instead of refusing them as Alternator does")


def validate(args: argparse.Namespace) -> None:
    """One --dc per datacenter, and no more nodes than one address block holds."""
    if not args.dc:
        return
    seen: set[str] = set()
    for dc, _count in args.dc:
        if dc in seen:
            raise UsageError(f"--dc {dc} is given twice (give each datacenter once, with its "
                             "node count: --dc DC:COUNT)")
        seen.add(dc)
    total = sum(count for _dc, count in args.dc)
    if total > MAX_NODES:
        raise UsageError(f"--dc asks for {plural(total, 'node')}; the emulator runs at most "
                         f"{MAX_NODES} nodes")


def _layout(nodes: list[tuple[str, str]]) -> str:
    """``3 nodes in 2 datacenters (dc1: 2 nodes in 2 racks, dc2: 1 node in 1 rack)``, counted
    from the nodes the cluster actually runs."""
    per_dc: dict[str, list[str]] = {}
    for dc, rack in nodes:
        per_dc.setdefault(dc, []).append(rack)
    parts = [f"{dc}: {plural(len(racks), 'node')} in {plural(len(set(racks)), 'rack')}"
             for dc, racks in per_dc.items()]
    return (f"{plural(len(nodes), 'node')} in {plural(len(per_dc), 'datacenter')} "
            f"({', '.join(parts)})")


def _topology(args: argparse.Namespace) -> list[tuple[str, str]]:
    if not args.dc:
        return [("dc1", f"rack{i + 1}") for i in range(args.nodes or DEFAULT_NODES)]
    return [(dc, f"rack{i + 1}") for dc, count in args.dc for i in range(count)]


def run(args: argparse.Namespace) -> int:
    require_emulator("alternator-shm emulator", backend=args.backend, https=args.https)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        users = dict(args.enforce_auth) if args.enforce_auth else None
        try:
            cluster = Cluster(
                topology=_topology(args),
                port=args.port,
                backend=args.backend,
                users=users,
                profile=args.profile,
                failure_detect_delay=args.failure_detect_delay,
                https=args.https,
                process_per_node=args.process_per_node,
                forward_transactions=args.forward_transactions,
            )
        except DynamoDBLocalNotInstalled as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        except OSError as exc:
            raise UsageError(f"cannot start the emulator: {exc}") from None
        with cluster:
            key, secret = cluster.credentials
            layout = _layout([(node.dc, node.rack) for node in cluster.nodes])
            print(f"alternator emulator: {layout}, profile {args.profile}, "
                  f"backend {args.backend}")
            for node in cluster.nodes:
                print(f"  node {node.url}  dc={node.dc} rack={node.rack}")
            print(f"seeds: {','.join(cluster.seeds)}")
            print(f"port: {cluster.port}")
            print(f"scheme: {cluster.scheme}")
            if cluster.ca_file:
                print(f"ca_file: {cluster.ca_file}")
            auth = "enforced" if users else "not enforced"
            print(f"credentials: {key}:{secret} ({auth})")
            print("ready (Ctrl-C to stop)", flush=True)
            while not stop.wait(0.5):
                pass
        print("stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
