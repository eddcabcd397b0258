"""Version profiles: the server behaviours a client can observe that changed between releases.

Each flag cites the release that introduced it, so a test can reproduce what a client would
meet against an older cluster. A cluster's effective profile is the version profile with its
response-header options applied (:func:`with_header_options`); options a version does not
have are refused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

Liveness = Literal["alive", "normal", "alive_normal"]


@dataclass(frozen=True)
class Profile:
    name: str
    dc_rack_params: bool  # /localnodes?dc=&rack= honoured (2025.1+); ignored before
    liveness: Liveness  # which gossip states /localnodes lists
    compression: bool  # gzip/deflate request bodies and response compression (2026.1+)
    new_signature_message: bool  # "wrong signature" (2026.1+) vs the old token message
    server_header: str | None  # "Seastar httpd" before 2026.2, none after
    # alternator_http_response_{server_header,disable_date_header,disable_content_type_header}
    # config options (2026.3.0-rc0, commit 6b2fce03f9).
    header_options: bool = False
    # mTLS client authentication on the HTTPS port (merge bf190d0d9d, after the 2026.3 branch).
    mtls: bool = False
    date_header: bool = True  # False: alternator_http_response_disable_date_header=true
    content_type_header: bool = True  # False: ..._disable_content_type_header=true

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Profile:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


_SEASTAR = "Seastar httpd"

PROFILES: dict[str, Profile] = {
    # master after the 2026.3 branch: adds mTLS client authentication.
    "dev": Profile("dev", True, "alive_normal", True, True, None, True, True),
    "2026.3": Profile("2026.3", True, "alive_normal", True, True, None, True, False),
    "2026.2": Profile("2026.2", True, "alive_normal", True, True, None),
    "2026.1": Profile("2026.1", True, "alive_normal", True, True, _SEASTAR),
    "2025.1": Profile("2025.1", True, "alive_normal", False, False, _SEASTAR),
    "6.2": Profile("6.2", False, "alive_normal", False, False, _SEASTAR),
    "6.1": Profile("6.1", False, "normal", False, False, _SEASTAR),
    # <= 6.0: liveness is is_alive only, so JOINING nodes are listed (bug #19694).
    "6.0": Profile("6.0", False, "alive", False, False, _SEASTAR),
}
PROFILES["current"] = PROFILES["2026.3"]  # the newest release
PROFILES["6.2.2"] = PROFILES["6.2"]
PROFILES["5.4"] = PROFILES["6.0"]


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None


def with_header_options(
    profile: Profile,
    *,
    server_header: str | None = None,
    disable_date_header: bool = False,
    disable_content_type_header: bool = False,
) -> Profile:
    """Apply the 2026.3 response-header config options; refuse them on older versions.

    ``server_header`` follows ``alternator_http_response_server_header``: None keeps the
    version's default; control characters are stripped, and an empty or whitespace-only value
    sends no ``Server`` header.
    """
    asked = server_header is not None or disable_date_header or disable_content_type_header
    if not asked:
        return profile
    if not profile.header_options:
        raise ValueError(
            f"profile {profile.name!r} has no response-header options "
            "(server_header / disable_date_header / disable_content_type_header need 2026.3+)"
        )
    server = profile.server_header
    if server_header is not None:
        cleaned = "".join(c for c in server_header if ord(c) >= 0x20 and ord(c) != 0x7F)
        server = cleaned if cleaned.strip() else None
    return dataclasses.replace(
        profile,
        server_header=server,
        date_header=not disable_date_header,
        content_type_header=not disable_content_type_header,
    )
