"""``alternator-shm emulator``: run a local Alternator cluster in the foreground.

Prints the seeds, port and credentials, then waits; Ctrl-C (SIGINT) or SIGTERM stops every
node and the storage, so nothing is left running.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from alternator_shm.emulator._cluster import BACKENDS, Cluster, parse_users
from alternator_shm.emulator._profiles import PROFILES


def _dc_spec(value: str) -> tuple[str, int]:
    name, sep, count = value.partition(":")
    try:
        n = int(count) if sep else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DC:COUNT, got {value!r}") from None
    if not name or n < 1:
        raise argparse.ArgumentTypeError(f"expected DC:COUNT, got {value!r}")
    return name, n


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="node count (without --dc)")
    parser.add_argument(
        "--dc",
        type=_dc_spec,
        action="append",
        metavar="DC:COUNT",
        help="add COUNT nodes in DC, spread over rack1, rack2, ... (repeatable)",
    )
    parser.add_argument("--port", type=int, default=None, help="shared port (default: free)")
    parser.add_argument(
        "--enforce-auth",
        action="append",
        metavar="KEY:SECRET",
        help="enforce SigV4 for this user (repeatable)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="moto")
    parser.add_argument("--https", action="store_true", help="TLS with a self-signed CA")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="current")
    parser.add_argument("--failure-detect-delay", type=float, default=0.0)
    parser.add_argument("--process-per-node", action="store_true")
    parser.add_argument("--forward-transactions", action="store_true")


def _topology(args: argparse.Namespace) -> list[tuple[str, str]]:
    if not args.dc:
        return [("dc1", f"rack{i + 1}") for i in range(args.nodes)]
    return [(dc, f"rack{i + 1}") for dc, count in args.dc for i in range(count)]


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        users = parse_users(args.enforce_auth) if args.enforce_auth else None
        with Cluster(
            topology=_topology(args),
            port=args.port,
            backend=args.backend,
            users=users,
            profile=args.profile,
            failure_detect_delay=args.failure_detect_delay,
            https=args.https,
            process_per_node=args.process_per_node,
            forward_transactions=args.forward_transactions,
        ) as cluster:
            key, secret = cluster.credentials
            print(f"alternator emulator: {len(cluster.nodes)} nodes, profile {args.profile}, "
                  f"backend {args.backend}")  # fmt: skip
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


def main() -> int:
    parser = argparse.ArgumentParser(prog="alternator-shm emulator")
    configure_parser(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
