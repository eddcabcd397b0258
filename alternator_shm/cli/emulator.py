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

from alternator_shm.cli import UsageError
from alternator_shm.cli._extras import require_emulator
from alternator_shm.cli.check import port_argument
from alternator_shm.emulator import PROFILES, Cluster, DynamoDBLocalNotInstalled
from alternator_shm.emulator._cluster import BACKENDS

__all__ = ["configure", "run"]

DEFAULT_NODES = 3


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not 0 <= s < 86400:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {value}")
    return s


def _dc_spec(value: str) -> tuple[str, int]:
    name, sep, count = value.partition(":")
    try:
        n = int(count) if sep else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DC:COUNT, got {value!r}") from None
    if not name or n < 1:
        raise argparse.ArgumentTypeError(f"expected DC:COUNT with COUNT >= 1, got {value!r}")
    return name, n


def _user(value: str) -> tuple[str, str]:
    key, sep, secret = value.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError(f"expected KEY:SECRET, got {value!r}")
    return key, secret


def configure(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--nodes", type=_positive_int, default=None, metavar="N",
                      help=f"N nodes in dc1, over rack1..rackN (default {DEFAULT_NODES})")
    size.add_argument("--dc", type=_dc_spec, action="append", metavar="DC:COUNT",
                      help="COUNT nodes in DC over rack1, rack2, ... (repeatable; "
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
    parser.add_argument("--failure-detect-delay", type=_seconds, default=0.0, metavar="S",
                        help="seconds before a killed node leaves /localnodes (default 0)")
    parser.add_argument("--process-per-node", action="store_true",
                        help="run each node as a process (kill = SIGKILL, pause = SIGSTOP)")
    parser.add_argument("--forward-transactions", action="store_true",
                        help="execute TransactWriteItems / TransactGetItems on the backend "
                             "instead of refusing them as Alternator does")


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
            print(f"alternator emulator: {len(cluster.nodes)} nodes, profile {args.profile}, "
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
