"""``python -m alternator_shm.emulator.node``: one emulated node in its own process.

Started by :class:`~alternator_shm.emulator.Cluster` with ``process_per_node=True``; it inherits
an already-listening socket (``--fd``) and asks the cluster's control server for gossip state,
faults and logging. It exits on SIGTERM, and by itself if its parent disappears.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
from types import FrameType

from alternator_shm.emulator import _api
from alternator_shm.emulator._process import USERS_ENV, RemoteContext, make_child_backend
from alternator_shm.emulator._profiles import Profile
from alternator_shm.emulator._server import FrontServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alternator_shm.emulator.node")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ip", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--backend", required=True, help="'null' or the storage URL")
    parser.add_argument("--account-id", default="123456789012")
    parser.add_argument("--profile-json", required=True, help="the cluster's effective Profile")
    parser.add_argument("--forward-transactions", action="store_true")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--client-ca", help="CA of client certificates (mTLS)")
    args = parser.parse_args(argv)

    users_json = os.environ.get(USERS_ENV)
    users = json.loads(users_json) if users_json else None
    ctx = RemoteContext(
        args.ip,
        args.control,
        Profile.from_json(args.profile_json),
        users,
        args.forward_transactions,
        make_child_backend(args.backend, args.account_id),
    )
    ssl_context = None
    if args.certfile:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.certfile, args.keyfile)
        if args.client_ca:  # require_client_auth=optional
            ssl_context.verify_mode = ssl.CERT_OPTIONAL
            ssl_context.load_verify_locations(cafile=args.client_ca)
    listener = socket.socket(fileno=args.fd)
    server = FrontServer(
        listener,
        lambda req, abort: _api.handle(ctx, req, abort),
        ssl_context=ssl_context,
        name=f"node-{args.ip}",
    )
    done = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    server.start()
    parent = os.getppid()
    while not done.wait(0.5):
        if os.getppid() != parent:  # orphaned: the cluster is gone, so are we
            break
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
