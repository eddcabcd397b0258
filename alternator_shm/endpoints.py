"""Canonical endpoint identity, shared by routing, health and any plan over the node table.

The cross-language query-plan spec (``feature-specs/query-plan.md``, "Plan construction") makes
one endpoint one identity whatever its spelling: scheme and host are case-folded, the default
port (80 for http, 443 for https) is dropped, user info, path, query and fragment are ignored,
IPv6 hosts keep their brackets. Duplicates keep the first spelling as their representative and
identities sort bytewise by canonical string (``vectors/endpoint-order.tsv``).

A leaf module: it imports nothing from the package, so :mod:`alternator_shm.fleet` may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["canonical_endpoint", "canonical_order", "order_key", "representative_order"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# The spelling node tables use (lower case, no user info): canonical without urlsplit.
_PLAIN = re.compile(
    r"(https?)://([a-z0-9][a-z0-9.\-]*|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?(?:[/?#].*)?", re.S
)


def canonical_endpoint(endpoint: str) -> str:
    """``scheme://host[:port]`` of ``endpoint``; ValueError if it lacks a scheme or a host."""
    m = _PLAIN.fullmatch(endpoint)
    if m is not None:
        scheme, host, port_text = m.groups()
        if port_text is None:
            return f"{scheme}://{host}"
        port_number = int(port_text)
        if port_number <= 65535:
            if _DEFAULT_PORTS[scheme] == port_number:
                return f"{scheme}://{host}"
            return f"{scheme}://{host}:{port_number}"
    parts = urlsplit(endpoint.strip())  # surrounding white space dropped, as URL parsers do
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower-cased, brackets and user info removed
    if not scheme or not host:
        raise ValueError(f"not an endpoint (needs scheme://host): {endpoint!r}")
    if not host.isascii() or not host.isprintable() or " " in host:
        # The spec folds ASCII case only and orders ASCII bytes: an internationalized name
        # must be given in its ASCII (IDNA) form.
        raise ValueError(f"not an endpoint (host must be printable ASCII): {endpoint!r}")
    port = parts.port  # ValueError for a port outside 0..65535 or not a number
    if ":" in host:
        host = f"[{host}]"
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _dedupe(endpoints: Iterable[str]) -> dict[str, str]:
    """canonical -> first spelling, in input order."""
    first: dict[str, str] = {}
    for endpoint in endpoints:
        first.setdefault(canonical_endpoint(endpoint), endpoint)
    return first


def order_key(canonical: str) -> bytes:
    """Sort key of a canonical endpoint: its ASCII bytes (the spec's bytewise order)."""
    return canonical.encode("ascii")


def canonical_order(endpoints: Iterable[str]) -> list[str]:
    """Distinct canonical identities, sorted bytewise (ASCII) by canonical string."""
    return sorted(_dedupe(endpoints), key=order_key)


def representative_order(endpoints: Iterable[str]) -> list[str]:
    """The first spelling of each identity, in :func:`canonical_order`."""
    first = _dedupe(endpoints)
    return [first[c] for c in sorted(first, key=order_key)]
