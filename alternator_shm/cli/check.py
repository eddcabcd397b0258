"""``alternator-shm check NODE...``: ask a cluster what discovery would see, before deploying.

One discovery round plus the two checks of :class:`~alternator_shm.Helper` (is the dc / rack
scope populated, does the server honour ``?dc=`` / ``?rack=``), without touching shared memory.
Nothing is reported fine unless a node answered: an unreachable seed makes every verdict
"unknown" and the exit status 1. Bad arguments (a URL or ``host:port`` as NODE, a port out of
range) are refused before any traffic is sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from alternator_shm.cli import UsageError
from alternator_shm.cli._numbers import integer
from alternator_shm.discovery import CONNECT_TIMEOUT, READ_TIMEOUT, Discovery
from alternator_shm.errors import AlternatorError, ConfigurationError
from alternator_shm.transport import Transport, TransportOptions

__all__ = ["configure", "node_argument", "port_argument", "run", "validate"]


def node_argument(value: str) -> str:
    """A host name or IP, refusing the URL and ``host:port`` forms with what to write instead."""
    if "://" in value:
        scheme, _, rest = value.partition("://")
        raise argparse.ArgumentTypeError(
            f"NODE {value!r} is a URL; give the host alone: {rest.split('/')[0].split(':')[0]} "
            f"--scheme {scheme.lower()}"
        )
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    host, sep, port = value.rpartition(":")
    if sep and host and ":" not in host:
        raise argparse.ArgumentTypeError(
            f"NODE {value!r} includes a port; give it separately: {host} --port {port}"
        )
    return value


#: A TCP port (also the emulator's ``--port``).
port_argument = integer(1, 65535)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodes", nargs="+", metavar="NODE", type=node_argument,
                        help="host name or IP of a node (no scheme, no port); several allowed")
    parser.add_argument("--port", type=port_argument, default=8000,
                        help="Alternator port, 1 to 65535 (default 8000)")
    parser.add_argument("--scheme", choices=("http", "https"), default="http",
                        help="http (default) or https")
    parser.add_argument("--dc", "--datacenter", dest="datacenter", default=None, metavar="DC",
                        help="datacenter the workers will be routed to")
    parser.add_argument("--rack", default=None, help="rack the workers will be routed to")
    parser.add_argument("--no-fallback", dest="fallback", action="store_false",
                        help="do not fall back rack -> datacenter -> cluster for live nodes")
    parser.add_argument("--ca-file", default=None, metavar="PEM",
                        help="CA bundle to trust for https")
    parser.add_argument("--insecure", action="store_true",
                        help="ignore server certificate errors (https)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def validate(args: argparse.Namespace) -> None:
    """Refuse options that would change nothing: TLS ones without https, and --no-fallback
    without a dc / rack scope to fall back from."""
    if args.scheme != "https":
        for option, given in (("--insecure", args.insecure), ("--ca-file", args.ca_file)):
            if given:
                raise UsageError(f"{option} is for https (add --scheme https, or drop {option})")
    if not args.fallback and not (args.datacenter or args.rack):
        raise UsageError("--no-fallback needs --dc or --rack (there is no scope to fall back "
                         "from without them)")


def _tls_hint(args: argparse.Namespace, error: str) -> str:
    if args.scheme == "https" and ("WRONG_VERSION_NUMBER" in error or "SSLError" in error):
        return error + " (does the node serve plain HTTP? then use --scheme http)"
    return error


def _discovery(args: argparse.Namespace, transport: Transport) -> Discovery:
    try:
        return Discovery(args.nodes, scheme=args.scheme, port=args.port,
                         datacenter=args.datacenter, rack=args.rack, fallback=args.fallback,
                         transport=transport)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _report(args: argparse.Namespace) -> dict[str, object]:
    try:
        transport = Transport(TransportOptions(
            scheme=args.scheme, ca_file=args.ca_file,
            ignore_server_certificate_error=args.insecure,
            connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
        ))
    except (ConfigurationError, OSError) as exc:
        raise UsageError(str(exc)) from None
    report: dict[str, object] = {
        "seeds": args.nodes, "port": args.port, "scheme": args.scheme,
        "datacenter": args.datacenter, "rack": args.rack,
    }
    try:
        discovery = _discovery(args, transport)
        try:
            report["live_nodes"] = discovery.fetch()
        except AlternatorError as exc:
            report["live_nodes"] = []
            report["discovery_error"] = _tls_hint(args, str(exc))
        answered = "discovery_error" not in report
        try:
            discovery.check_if_rack_and_datacenter_set_correctly()
            # Without a dc / rack there is no scope to check: fine only if a node answered.
            report["scope_ok"] = True if answered else None
        except ConfigurationError as exc:
            report["scope_ok"] = False
            report["scope_error"] = str(exc)
        except AlternatorError as exc:
            report["scope_ok"] = None  # nobody answered: unknown, never "fine"
            report["scope_error"] = _tls_hint(args, str(exc))
        try:
            report["rack_datacenter_feature_supported"] = (
                discovery.check_if_rack_datacenter_feature_is_supported()
            )
        except AlternatorError as exc:
            report["rack_datacenter_feature_supported"] = None
            report["feature_check_error"] = _tls_hint(args, str(exc))
    finally:
        transport.close()
    return report


def _verdict(value: object) -> str:
    return "unknown" if value is None else ("yes" if value else "NO")


def run(args: argparse.Namespace) -> int:
    report = _report(args)
    feature = report["rack_datacenter_feature_supported"]
    # An old server ignores ?dc= / ?rack=: only a problem when a scope was asked for.
    feature_ok = feature is True or (feature is False and not (args.datacenter or args.rack))
    ok = report["scope_ok"] is True and bool(report["live_nodes"]) and feature_ok
    report["ok"] = ok
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if ok else 1
    scope = ", ".join(f"{k} {v}" for k, v in (("datacenter", args.datacenter),
                                               ("rack", args.rack)) if v) or "whole cluster"
    live = report["live_nodes"]
    print(f"seeds            {' '.join(args.nodes)} ({args.scheme}, port {args.port})")
    print(f"live nodes       {' '.join(live) if isinstance(live, list) and live else 'none'}")
    if "discovery_error" in report:
        print(f"  error: {report['discovery_error']}")
    print(f"scope populated  {_verdict(report['scope_ok'])} ({scope})")
    if report.get("scope_error") and report["scope_error"] != report.get("discovery_error"):
        print(f"  error: {report['scope_error']}")
    print(f"dc/rack honoured {_verdict(report['rack_datacenter_feature_supported'])}")
    print("OK" if ok else "PROBLEMS FOUND")
    return 0 if ok else 1
