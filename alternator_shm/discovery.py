"""Node discovery: ``GET /localnodes`` with a routing scope, strict parsing, scope fallback.

Alternator answers ``GET /localnodes`` (no authentication) with a JSON list of the addresses of
the live nodes of one datacenter: by default the contacted node's own, or the one named by
``?dc=``, optionally narrowed to one rack by ``?rack=``. An unknown dc or rack yields ``[]``;
servers older than 2025.1 ignore both parameters (see ALTERNATOR_PROTOCOL.md §1).

:class:`Discovery` turns that into the node table we route over:

* candidates are the nodes we already know (in order), then the seeds, so a cluster whose seeds
  were all replaced is still found;
* a rack or datacenter scope takes the first non-empty answer; the cluster scope is the union
  of the answers of every datacenter reachable from the candidates;
* with ``fallback`` an empty scope widens: rack -> datacenter -> cluster;
* answers are parsed strictly (a JSON list of at most 4096 host names / IP addresses); a bad
  answer is a failure of that candidate, never a partial table.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from alternator_shm._version import __version__
from alternator_shm.errors import ConfigurationError, DiscoveryError
from alternator_shm.fleet import events as _events
from alternator_shm.transport import Transport

__all__ = [
    "MAX_NODES",
    "Discovery",
    "Scope",
    "node_url",
    "parse_localnodes",
    "scope_chain",
]

log = logging.getLogger(__name__)

#: Most entries accepted in one ``/localnodes`` answer.
MAX_NODES = 4096
#: Discovery timeouts (connect, read) in seconds: /localnodes is tiny, so a node slower
#: than this is treated as unreachable and the next candidate is asked.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0
# A 4096-entry list of 253-character names is ~1.1 MB; anything much bigger is not an answer.
_MAX_BODY_BYTES = 2 * 1024 * 1024
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_HEADERS = {"User-Agent": f"alternator-shm/{__version__}", "Accept": "application/json"}
_FEATURE_PROBE_RACK = "fakeRack"


def node_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with an IPv6 literal in brackets (``http://[::1]:8000``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _canonical_host(entry: str) -> str | None:
    """The canonical form of one host (IP address or DNS name), or None if it is not one."""
    bracketed = entry.startswith("[") and entry.endswith("]")
    candidate = entry[1:-1] if bracketed else entry
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id:
                return None  # a zone id cannot be used in a URL without %25-escaping
            return str(address)
        return None if bracketed else str(address)
    if bracketed:  # brackets around something that is not an IPv6 literal
        return None
    name = entry[:-1] if entry.endswith(".") else entry
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # "1.2.3.999" or "300": a malformed IPv4, not a host name
        return None
    return name.lower()


def parse_localnodes(body: bytes) -> list[str]:
    """Parse a ``/localnodes`` answer strictly: deduplicated, sorted hosts.

    Accepts only a JSON list of at most :data:`MAX_NODES` strings, each an IPv4 address, an
    IPv6 address (bare, as the server sends it, or bracketed) or a DNS host name. Anything else
    raises :class:`DiscoveryError` saying what was wrong; nothing is silently dropped, because
    a half-understood answer must not replace a good node table.
    """
    if len(body) > _MAX_BODY_BYTES:
        raise DiscoveryError(f"/localnodes answer too large ({len(body)} bytes)")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise DiscoveryError(f"/localnodes answer is not JSON: {_snippet(body)}") from e
    if not isinstance(value, list):
        raise DiscoveryError(
            f"/localnodes answer is not a JSON list but {type(value).__name__}: {_snippet(body)}"
        )
    if len(value) > MAX_NODES:
        raise DiscoveryError(f"/localnodes answer has {len(value)} entries (max {MAX_NODES})")
    hosts: set[str] = set()
    for entry in value:
        if not isinstance(entry, str):
            raise DiscoveryError(f"/localnodes entry is not a string: {entry!r:.80}")
        host = _canonical_host(entry)
        if host is None:
            raise DiscoveryError(
                f"/localnodes entry is not an IP address or host name: {entry!r:.80}"
            )
        hosts.add(host)
    return sorted(hosts)


def _snippet(body: bytes) -> str:
    return repr(body[:80]) + ("..." if len(body) > 80 else "")


@dataclass(frozen=True)
class Scope:
    """One routing scope: a rack, a datacenter, or the whole cluster.

    ``datacenter=None`` with ``kind`` "rack" or "datacenter" means the contacted node's own
    datacenter (server semantics of a query without ``dc``). ``kind`` is derived from the
    fields when not given.
    """

    datacenter: str | None = None
    rack: str | None = None
    kind: str = field(default="", compare=True)

    def __post_init__(self) -> None:
        if not self.kind:
            kind = "rack" if self.rack else "datacenter" if self.datacenter else "cluster"
            object.__setattr__(self, "kind", kind)
        if self.kind not in ("rack", "datacenter", "cluster"):
            raise ConfigurationError(f"unknown scope kind {self.kind!r}")
        if self.kind == "rack" and not self.rack:
            raise ConfigurationError("a rack scope needs a rack name")

    def query(self) -> str:
        """The URL-encoded query string (``dc=..&rack=..``); "" for the cluster."""
        if self.kind == "cluster":
            return ""
        params: list[tuple[str, str]] = []
        if self.datacenter:
            params.append(("dc", self.datacenter))
        if self.kind == "rack" and self.rack:
            params.append(("rack", self.rack))
        return urlencode(params, quote_via=quote)

    def describe(self) -> str:
        dc = f"datacenter {self.datacenter!r}" if self.datacenter else "the seed's datacenter"
        if self.kind == "rack":
            return f"rack {self.rack!r} in {dc}"
        if self.kind == "datacenter":
            return dc
        return "the whole cluster"


def scope_chain(datacenter: str | None, rack: str | None, fallback: bool) -> list[Scope]:
    """The scopes to try in order: rack -> datacenter -> cluster (each level only if asked).

    A rack without a datacenter is that rack in the contacted node's datacenter (the server
    gets ``rack=`` only). Without ``fallback`` only the narrowest scope is returned.
    """
    datacenter = datacenter or None
    rack = rack or None
    chain: list[Scope] = []
    if rack is not None:
        chain.append(Scope(datacenter, rack, "rack"))
    if datacenter is not None or (rack is not None and fallback):
        chain.append(Scope(datacenter, None, "datacenter"))
    chain.append(Scope(None, None, "cluster"))
    return chain if fallback else chain[:1]


class _Failure(Exception):
    """One candidate could not give a usable answer (kept internal; message says why)."""


class Discovery:
    """Asks the cluster which nodes to route to. Stateless between calls; thread-safe."""

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        scheme: str,
        port: int,
        datacenter: str | None = None,
        rack: str | None = None,
        fallback: bool = True,
        transport: Transport,
    ) -> None:
        if isinstance(seeds, str):
            raise ConfigurationError("seeds must be a list of host names or IPs, not a string")
        if not seeds:
            raise ConfigurationError("at least one seed node is required")
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"scheme must be 'http' or 'https', not {scheme!r}")
        if not 0 < port < 65536:
            raise ConfigurationError(f"port out of range: {port}")
        seed_urls: list[str] = []
        for seed in seeds:
            host = _canonical_host(seed) if isinstance(seed, str) else None
            if host is None:
                raise ConfigurationError(
                    f"seed {seed!r} is not a host name or IP address (no scheme, no port)"
                )
            url = node_url(scheme, host, port)
            if url not in seed_urls:
                seed_urls.append(url)
        self.scheme = scheme
        self.port = port
        self.datacenter = datacenter or None
        self.rack = rack or None
        self.fallback = fallback
        self.seeds: tuple[str, ...] = tuple(seed_urls)
        self.scopes: tuple[Scope, ...] = tuple(scope_chain(self.datacenter, self.rack, fallback))
        self._transport = transport

    # -- one candidate -------------------------------------------------------------------------

    def _get(self, node: str, query: str) -> list[str]:
        """``/localnodes`` of one node as node URLs, or :class:`_Failure`."""
        url = f"{node}/localnodes" + (f"?{query}" if query else "")
        try:
            response = self._transport.request("GET", url, headers=_HEADERS)
        except Exception as e:  # every transport failure is "this candidate failed"
            raise _Failure(f"{type(e).__name__}: {e}") from e
        if response.status != 200:
            raise _Failure(f"HTTP {response.status}")
        try:
            hosts = parse_localnodes(response.data)
        except DiscoveryError as e:
            raise _Failure(str(e)) from e
        return [node_url(self.scheme, host, self.port) for host in hosts]

    def _candidates(self, known: Sequence[str]) -> list[str]:
        candidates: list[str] = []
        seen: set[str] = set()
        for url in (*known, *self.seeds):
            if url not in seen:
                seen.add(url)
                candidates.append(url)
        return candidates

    def _ask_scope(
        self,
        scope: Scope,
        candidates: Sequence[str],
        failed: dict[str, str],
        answered: list[str] | None = None,
    ) -> list[str]:
        """Nodes of one scope (possibly empty). Records unreachable candidates in ``failed``.

        A candidate that already failed during this fetch is not asked again for a wider
        scope: it would only cost another timeout.
        """
        query = scope.query()
        union: set[str] = set()
        for candidate in candidates:
            if candidate in failed:
                continue
            # Every node of a datacenter answers the same list: once a candidate is in the
            # union, its datacenter has been asked already.
            if scope.kind == "cluster" and candidate in union:
                continue
            try:
                nodes = self._get(candidate, query)
            except _Failure as e:
                failed[candidate] = str(e)
                continue
            if answered is not None:
                answered.append(candidate)
            if not nodes:
                continue
            if scope.kind != "cluster":
                return nodes
            union.update(nodes)
        return sorted(union)

    # -- public API ----------------------------------------------------------------------------

    def fetch(self, known: Sequence[str] = ()) -> list[str]:
        """The current node URLs (sorted) for the first non-empty scope of the chain.

        Asks ``known`` first (in order), then the seeds. Raises :class:`DiscoveryError` saying
        which scopes and candidates failed and why when no scope yields a node.
        """
        candidates = self._candidates(known)
        failed: dict[str, str] = {}
        empty: list[str] = []
        for scope in self.scopes:
            nodes = self._ask_scope(scope, candidates, failed)
            if nodes:
                if empty or failed:
                    log.warning(
                        "discovery used %s%s%s",
                        scope.describe(),
                        f" (no nodes in: {'; '.join(empty)})" if empty else "",
                        f" (unreachable: {_describe_failures(failed)})" if failed else "",
                        extra=_events.fields("discovery_fallback", scope=scope.describe()),
                    )
                return nodes
            empty.append(scope.describe())
            if len(failed) == len(candidates):
                break  # nobody is reachable: wider scopes would fail the same way
        if len(failed) == len(candidates):
            message = f"no node answered /localnodes: {_describe_failures(failed)}"
        else:
            message = f"no nodes found in {', '.join(empty)}"
            if failed:
                message += f"; unreachable: {_describe_failures(failed)}"
        log.warning("discovery failed: %s", message,
                    extra=_events.fields("discovery_failed", error=message))
        raise DiscoveryError(message)

    def check_if_rack_and_datacenter_set_correctly(self, known: Sequence[str] = ()) -> None:
        """Check that the configured scope itself (no fallback) has nodes.

        Raises :class:`ConfigurationError` naming the scope when the nodes that answered
        returned no node for it, :class:`DiscoveryError` when no node answered at all.
        Nothing to check (returns) without a datacenter or rack.
        """
        if self.datacenter is None and self.rack is None:
            return
        scope = self.scopes[0]
        candidates = self._candidates(known)
        failed: dict[str, str] = {}
        answered: list[str] = []
        if self._ask_scope(scope, candidates, failed, answered):
            return
        if not answered:
            raise DiscoveryError(f"no node answered /localnodes: {_describe_failures(failed)}")
        raise ConfigurationError(
            f"no nodes found in {scope.describe()} (asked {', '.join(answered)}); "
            "check the datacenter and rack names"
        )

    def check_if_rack_datacenter_feature_is_supported(self, known: Sequence[str] = ()) -> bool:
        """Whether the server honours ``?rack=`` / ``?dc=`` (ScyllaDB 2025.1+).

        Asks one node for ``?rack=fakeRack``: a new server answers ``[]`` (no such rack), an
        old one ignores the parameter and lists its datacenter. Both questions go to the same
        node, so a topology difference between nodes cannot fake an answer.
        """
        failed: dict[str, str] = {}
        for candidate in self._candidates(known):
            try:
                fake = self._get(candidate, urlencode({"rack": _FEATURE_PROBE_RACK}))
                if fake:
                    return False
                plain = self._get(candidate, "")
            except _Failure as e:
                failed[candidate] = str(e)
                continue
            if plain:
                return True
            failed[candidate] = "empty /localnodes answer, cannot tell"
        raise DiscoveryError(
            f"cannot tell whether rack/dc are supported: {_describe_failures(failed)}"
        )

    def probe(self, node: str) -> bool:
        """Health check: ``GET node/`` answers 200 ``healthy: ...`` within the timeouts."""
        try:
            response = self._transport.request("GET", node.rstrip("/") + "/", headers=_HEADERS)
        except Exception as e:
            log.debug("probe of %s failed: %s", node, e)
            return False
        return response.status == 200 and response.data.startswith(b"healthy:")


def _describe_failures(failed: dict[str, str]) -> str:
    shown = [f"{node} ({why})" for node, why in list(failed.items())[:8]]
    if len(failed) > len(shown):
        shown.append(f"and {len(failed) - len(shown)} more")
    return "; ".join(shown) if shown else "no candidates"
