"""``alternator-shm check NODE...``: ask a real cluster what discovery would see.

Runs the two checks of :class:`Helper` plus one discovery round, without attaching to shared
memory, so an operator can validate dc / rack settings before deploying workers.
"""

from __future__ import annotations

import argparse
import json
import sys

from alternator_shm.discovery import CONNECT_TIMEOUT, READ_TIMEOUT, Discovery
from alternator_shm.errors import AlternatorError
from alternator_shm.transport import Transport, TransportOptions


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodes", nargs="+", metavar="NODE", help="seed host names or IPs")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--scheme", choices=("http", "https"), default="http")
    parser.add_argument("--dc", "--datacenter", dest="datacenter", default=None)
    parser.add_argument("--rack", default=None)
    parser.add_argument("--no-fallback", dest="fallback", action="store_false")
    parser.add_argument("--ca-file", default=None)
    parser.add_argument("--insecure", action="store_true",
                        help="ignore server certificate errors (https)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    transport = Transport(
        TransportOptions(
            scheme=args.scheme,
            ca_file=args.ca_file,
            ignore_server_certificate_error=args.insecure,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )
    )
    discovery = Discovery(
        args.nodes,
        scheme=args.scheme,
        port=args.port,
        datacenter=args.datacenter,
        rack=args.rack,
        fallback=args.fallback,
        transport=transport,
    )
    report: dict[str, object] = {"seeds": args.nodes, "datacenter": args.datacenter,
                                 "rack": args.rack}
    ok = True
    try:
        report["rack_datacenter_feature_supported"] = (
            discovery.check_if_rack_datacenter_feature_is_supported()
        )
    except AlternatorError as exc:
        report["rack_datacenter_feature_supported"] = None
        report["feature_check_error"] = str(exc)
        ok = False
    try:
        discovery.check_if_rack_and_datacenter_set_correctly()
        report["scope_ok"] = True
    except AlternatorError as exc:
        report["scope_ok"] = False
        report["scope_error"] = str(exc)
        ok = False
    try:
        report["live_nodes"] = discovery.fetch()
    except AlternatorError as exc:
        report["live_nodes"] = []
        report["discovery_error"] = str(exc)
        ok = False
    finally:
        transport.close()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in report.items():
            print(f"{key:36} {value}")
        print("OK" if ok else "PROBLEMS FOUND")
    return 0 if ok else 1
