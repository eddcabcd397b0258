"""Option pieces shared by the Helper and the fleet: node-health validation and the namespace
identity (which options make two Helpers share one table, and the default namespace name).

Every option that changes what the shared table holds or how its nodes are probed is part of
the identity: two Helpers that differ in one of them must not share a table silently. The
default namespace is a digest of all of them; with an explicit ``namespace=`` the leader records
them in the segment and a process joining with other values gets one warning naming them
(:mod:`alternator_shm.fleet.identity`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Protocol

from alternator_shm.errors import ConfigurationError
from alternator_shm.fleet.health import HealthSettings

__all__ = ["IdentitySource", "default_namespace", "health_settings", "identity_options"]


def health_settings(value: object) -> HealthSettings | None:
    """``node_health=`` as settings: True -> the spec's defaults, False -> None (off)."""
    if isinstance(value, HealthSettings):
        return value
    if value is True:
        return HealthSettings()
    if value is False:
        return None
    raise ConfigurationError(
        f"node_health must be True, False or a HealthSettings, got {value!r}"
    )


class IdentitySource(Protocol):
    """The validated options the identity is computed from (``helper._Options``)."""

    @property
    def seeds(self) -> tuple[str, ...]: ...
    @property
    def port(self) -> int: ...
    @property
    def scheme(self) -> str: ...
    @property
    def datacenter(self) -> str | None: ...
    @property
    def rack(self) -> str | None: ...
    @property
    def fallback(self) -> bool: ...
    @property
    def node_health(self) -> object: ...
    @property
    def refresh_interval(self) -> float: ...
    @property
    def idle_refresh_interval(self) -> float: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def client_cert(self) -> tuple[str, str] | None: ...
    @property
    def ignore_server_certificate_error(self) -> bool: ...


def _health_text(value: object) -> str:
    settings = health_settings(value)
    if settings is None:
        return "off"
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    values["recovery_probe_interval"] = settings.recovery_spacing  # derived default resolved
    return ",".join(f"{name}={value!r}" for name, value in values.items())


def identity_options(o: IdentitySource) -> dict[str, str]:
    """name -> canonical text of every option that shapes the shared table or its probing."""
    return {
        "scheme": o.scheme,
        "port": str(o.port),
        "seeds": ",".join(sorted(o.seeds)),
        "datacenter": o.datacenter or "",
        "rack": o.rack or "",
        "fallback": str(bool(o.fallback)),
        "node_health": _health_text(o.node_health),
        "refresh_interval": repr(float(o.refresh_interval)),
        "idle_refresh_interval": repr(float(o.idle_refresh_interval)),
        "ca_file": o.ca_file or "",
        "client_cert": ",".join(o.client_cert) if o.client_cert else "",
        "ignore_server_certificate_error": str(bool(o.ignore_server_certificate_error)),
    }


def default_namespace(identity: Mapping[str, str]) -> str:
    """``alt-<digest>`` of the identity (the segment name adds the euid and layout version)."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(identity.items()))
    return "alt-" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
