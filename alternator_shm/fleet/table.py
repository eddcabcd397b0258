"""The double-buffered, self-validating node table.

The leader (the only writer: it holds the leader lock) writes the *inactive* slot — generation
zeroed first, then payload, length, format, digest, and the generation last — and then flips the
aligned 8-byte publish word ``(generation << 1) | slot``. A reader copies the slot and accepts it
only if the slot generation equals the publish word's, the blake2b digest over
(generation, length, format, payload) matches, and the publish word did not move during the copy.

No atomics and no fences are needed: a torn or reordered read is *detected*, not prevented. A
writer killed mid-write leaves the publish word on the previous, intact slot.

A table may carry a *note*: one printable line stored before the nodes (``#note``), covered by
the same digest, so it is always read together with the nodes it describes. Discovery uses it
to say which scope the nodes are for, and an empty table is publishable only with a note (the
reason: "the configured scope lists no live node"), so every process learns that verdict.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from collections.abc import Iterable

from alternator_shm.errors import SharedStateError
from alternator_shm.fleet import layout

__all__ = ["TableReader", "publish", "read_published", "validate_nodes", "validate_note"]

_HEAD = struct.Struct("=QII")  # generation, length, format (digest input prefix)
_LEN_FMT = struct.Struct("=II")
_PUB = layout.word_index(layout.PUBLISH_OFF)
_READ_TRIES = 64


_NOTE_MAX = 512


def validate_note(note: object) -> str:
    """Check a table note: a printable one-line string of at most 512 bytes ("" = none)."""
    if not isinstance(note, str):
        raise ValueError(f"table note must be a string, not {type(note).__name__}")
    if not note.isprintable() or len(note.encode("utf-8")) > _NOTE_MAX:
        raise ValueError(f"table note is not one printable line of <= {_NOTE_MAX} bytes")
    return note


def validate_nodes(nodes: object, note: str = "") -> tuple[str, ...]:
    """Check a refresh result and return it as a tuple; raise ValueError saying what is wrong.

    A node is a non-empty string without whitespace or control characters, not starting with
    ``#`` (it is stored one per line; ``#`` marks the note). Duplicates are dropped (they would
    bias the round-robin). The list, with ``note``, must fit in a slot, and be non-empty unless
    a note says why it is empty.
    """
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
        kind = type(nodes).__name__
        raise ValueError(f"refresh must return a sequence of node strings, not {kind}")
    result: list[str] = []
    seen: set[str] = set()
    for node in nodes:
        if not isinstance(node, str):
            raise ValueError(f"node {node!r} is not a string")
        if not node or node[0] == "#" or any(ch.isspace() or not ch.isprintable() for ch in node):
            raise ValueError(f"node {node!r} is empty or contains whitespace/control characters")
        if node not in seen:
            seen.add(node)
            result.append(node)
    if not result and not note:
        raise ValueError("refresh returned an empty node list")
    if len(result) > layout.MAX_NODES:
        raise ValueError(f"{len(result)} nodes exceed the table's {layout.MAX_NODES}")
    if len(encode(result, note)) > layout.PAYLOAD_MAX:
        raise ValueError(f"node list does not fit in {layout.PAYLOAD_MAX} bytes")
    return tuple(result)


def encode(nodes: Iterable[str], note: str = "") -> bytes:
    lines = "\n".join(nodes)
    return (f"#{note}\n{lines}" if note else lines).encode("utf-8")


def _digest(generation: int, length: int, fmt: int, payload: bytes) -> bytes:
    h = hashlib.blake2b(_HEAD.pack(generation, length, fmt), digest_size=layout.DIGEST_SIZE)
    h.update(payload)
    return h.digest()


def _decode(payload: bytes) -> tuple[tuple[str, ...], str] | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    note = ""
    if text.startswith("#"):
        note, _, text = text[1:].partition("\n")
        if not text:
            return (), note  # an empty table, published with its reason
    nodes = tuple(text.split("\n"))
    if not nodes or any(not n for n in nodes):
        return None
    return nodes, note


def read_slot(mm: mmap.mmap, words: memoryview, w: int) -> tuple[str, ...] | None:
    """The table published as ``w`` if it validates completely, else None (torn / stale)."""
    full = read_slot_with_note(mm, words, w)
    return None if full is None else full[0]


def read_slot_with_note(
    mm: mmap.mmap, words: memoryview, w: int
) -> tuple[tuple[str, ...], str] | None:
    """(nodes, note) published as ``w`` if it validates completely, else None."""
    generation, slot = w >> 1, w & 1
    base = layout.slot_offset(slot)
    if words[base // 8] != generation:
        return None
    length, fmt = _LEN_FMT.unpack_from(mm, base + layout.S_LENGTH)
    if fmt != layout.FORMAT_LINES or length > layout.PAYLOAD_MAX:
        return None
    start = base + layout.S_PAYLOAD
    payload = mm[start : start + length]
    digest = mm[base + layout.S_DIGEST : base + layout.S_DIGEST + layout.DIGEST_SIZE]
    if digest != _digest(generation, length, fmt, payload):
        return None
    if words[_PUB] != w:  # the writer moved on during our copy: the copy may be torn
        return None
    return _decode(payload)


def read_published(mm: mmap.mmap, words: memoryview) -> tuple[int, tuple[str, ...]] | None:
    """(publish word, nodes) of a validated read, () if nothing was ever published, None if
    every bounded attempt saw a torn slot."""
    for _ in range(_READ_TRIES):
        w = int(words[_PUB])
        if w == 0:
            return 0, ()
        nodes = read_slot(mm, words, w)
        if nodes is not None:
            return w, nodes
    return None


class TableReader:
    """Per-process cache of the published table: the steady state is one 8-byte load."""

    def __init__(self, mm: mmap.mmap, words: memoryview) -> None:
        self._mm = mm
        self._words = words
        # one attribute: threads see a consistent (word, nodes, note)
        self._cache: tuple[int, tuple[str, ...], str] = (-1, (), "")
        self.rejected = 0  # torn reads rejected (diagnostics / tests)

    def read(self) -> tuple[str, ...]:
        cache = self._cache
        if self._words[_PUB] == cache[0]:
            return cache[1]
        return self._reload()[1]

    def current(self) -> tuple[int, tuple[str, ...]]:
        """(publish word, nodes) of the table :meth:`read` returns now: the word tells which
        publication the nodes are (after every bounded read was torn, the last good one)."""
        cache = self._cache
        if self._words[_PUB] != cache[0]:
            cache = self._reload()
        return cache[0], cache[1]

    def note(self) -> str:
        """The note published with the current table ("" if none or nothing published)."""
        cache = self._cache
        if self._words[_PUB] == cache[0]:
            return cache[2]
        return self._reload()[2]

    def _reload(self) -> tuple[int, tuple[str, ...], str]:
        for _ in range(_READ_TRIES):
            w = int(self._words[_PUB])
            if w == 0:
                if self._cache[0] > 0:
                    # generations never go back while we are attached (a rebuild needs every
                    # process detached): the segment was zeroed or truncated underneath us
                    raise SharedStateError(
                        "the shared segment was truncated or zeroed underneath this process "
                        "(by the same user?); its table is gone"
                    )
                self._cache = (0, (), "")
                return self._cache
            full = read_slot_with_note(self._mm, self._words, w)
            if full is not None:
                self._cache = (w, full[0], full[1])
                return self._cache
            self.rejected += 1
        return self._cache  # keep the last good table; the next call tries again

    @property
    def generation(self) -> int:
        self.read()
        return max(self._cache[0], 0) >> 1


def publish(mm: mmap.mmap, words: memoryview, nodes: tuple[str, ...], note: str = "") -> int:
    """Publish ``nodes`` (already validated) with ``note`` and return the generation in force
    afterwards.

    Leader only. Republishing the current table is a no-op (no new generation), so followers'
    caches stay warm and the health slots are not garbage-collected for nothing.
    """
    w = int(words[_PUB])
    current = read_slot_with_note(mm, words, w) if w else None
    if current is not None and current == (nodes, note):
        return w >> 1
    generation = (w >> 1) + 1
    slot = 1 - (w & 1) if w else 0
    base = layout.slot_offset(slot)
    payload = encode(nodes, note)
    words[base // 8] = 0  # invalidate before touching the slot
    start = base + layout.S_PAYLOAD
    mm[start : start + len(payload)] = payload
    _LEN_FMT.pack_into(mm, base + layout.S_LENGTH, len(payload), layout.FORMAT_LINES)
    digest = _digest(generation, len(payload), layout.FORMAT_LINES, payload)
    mm[base + layout.S_DIGEST : base + layout.S_DIGEST + layout.DIGEST_SIZE] = digest
    words[base // 8] = generation
    words[_PUB] = (generation << 1) | slot  # one aligned native store: the commit point
    return generation
