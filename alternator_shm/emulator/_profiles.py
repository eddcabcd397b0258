"""Version profiles: the server behaviours a client can observe that changed between releases.

Each flag cites the release that introduced it, so a test can reproduce what a client would
meet against an older cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Liveness = Literal["alive", "normal", "alive_normal"]


@dataclass(frozen=True)
class Profile:
    name: str
    dc_rack_params: bool  # /localnodes?dc=&rack= honoured (2025.1+); ignored before
    liveness: Liveness  # which gossip states /localnodes lists
    compression: bool  # gzip/deflate request bodies and response compression (2026.1+)
    new_signature_message: bool  # "wrong signature" (2026.1+) vs the old token message
    server_header: str | None  # "Seastar httpd" before 2026.2, none after


_SEASTAR = "Seastar httpd"

PROFILES: dict[str, Profile] = {
    "current": Profile("current", True, "alive_normal", True, True, None),
    "2026.1": Profile("2026.1", True, "alive_normal", True, True, _SEASTAR),
    "2025.1": Profile("2025.1", True, "alive_normal", False, False, _SEASTAR),
    "6.2": Profile("6.2", False, "alive_normal", False, False, _SEASTAR),
    "6.1": Profile("6.1", False, "normal", False, False, _SEASTAR),
    # <= 6.0: liveness is is_alive only, so JOINING nodes are listed (bug #19694).
    "6.0": Profile("6.0", False, "alive", False, False, _SEASTAR),
}
PROFILES["2026.2"] = PROFILES["current"]
PROFILES["6.2.2"] = PROFILES["6.2"]
PROFILES["5.4"] = PROFILES["6.0"]


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None
