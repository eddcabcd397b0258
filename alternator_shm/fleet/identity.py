"""The options a namespace's table is refreshed and probed with, recorded in its segment.

Two Helpers that share a namespace share one table, one refresher and one set of probes; if
they disagree on an option that shapes them (scope, fallback, node health...), one of them is
silently overruled. The default namespace is derived from all such options, so that only
happens with an explicit ``namespace=``. To say so instead of staying silent, the leader records
its options here as ``name=digest`` lines (values hashed: this region has a fixed size) and
every process compares its own on joining (:func:`differences`).

Only the leader writes, and only when the text differs; the region is self-validating (length +
blake2b digest), so a reader that catches a write half-way sees no record and tries later.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Mapping

from alternator_shm.fleet import layout

__all__ = ["differences", "encode", "read", "write"]

_DIGEST = 16


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8"), digest_size=6).hexdigest()


def encode(options: Mapping[str, str]) -> bytes:
    """``name=digest(value)`` lines, sorted by name; at most ``IDENTITY_MAX`` bytes."""
    text = "".join(f"{name}={_digest(value)}\n" for name, value in sorted(options.items()))
    raw = text.encode("utf-8")
    if len(raw) > layout.IDENTITY_MAX:
        raise ValueError(f"identity record too large ({len(raw)} bytes)")
    return raw


def _u32(words: memoryview) -> memoryview:
    return words.cast("B").cast("I")


def read(mm: mmap.mmap, words: memoryview) -> dict[str, str] | None:
    """The recorded ``name -> digest`` map, or None if nothing valid is recorded."""
    n = int(_u32(words)[layout.IDENTITY_LEN_OFF // 4])
    if not 0 < n <= layout.IDENTITY_MAX:
        return None
    raw = bytes(mm[layout.IDENTITY_OFF : layout.IDENTITY_OFF + n])
    stored = bytes(mm[layout.IDENTITY_DIGEST_OFF : layout.IDENTITY_DIGEST_OFF + _DIGEST])
    if hashlib.blake2b(raw, digest_size=_DIGEST).digest() != stored:
        return None
    result: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        name, _, digest = line.partition("=")
        result[name] = digest
    return result


def write(mm: mmap.mmap, words: memoryview, raw: bytes) -> bool:
    """Leader only: record ``raw`` (from :func:`encode`) unless already there. True if written."""
    if not raw:
        return False
    u32 = _u32(words)
    digest = hashlib.blake2b(raw, digest_size=_DIGEST).digest()
    n = int(u32[layout.IDENTITY_LEN_OFF // 4])
    if n == len(raw) and bytes(
        mm[layout.IDENTITY_DIGEST_OFF : layout.IDENTITY_DIGEST_OFF + _DIGEST]
    ) == digest:
        return False
    u32[layout.IDENTITY_LEN_OFF // 4] = 0  # readers see "no record" while we write
    mm[layout.IDENTITY_OFF : layout.IDENTITY_OFF + len(raw)] = raw
    mm[layout.IDENTITY_DIGEST_OFF : layout.IDENTITY_DIGEST_OFF + _DIGEST] = digest
    u32[layout.IDENTITY_LEN_OFF // 4] = len(raw)
    return True


def differences(mine: bytes, recorded: Mapping[str, str] | None) -> list[str]:
    """Names of the options whose value differs from the record (sorted); [] if no record."""
    if recorded is None or not mine:
        return []
    own: dict[str, str] = {}
    for line in mine.decode("utf-8").splitlines():
        name, _, digest = line.partition("=")
        own[name] = digest
    return sorted(n for n in own.keys() | recorded.keys() if own.get(n) != recorded.get(n))
