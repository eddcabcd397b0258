"""Endpoint canonical order and the Go-compatible seeded plan (``query-plan.md``).

Every client that follows the public spec (Go, Java, Python, and every process of ours) must
derive the *same* node order from the same 64-bit seed, so the pieces here are exact
re-statements of the spec's arithmetic, checked against ``query-plan.tsv`` and
``endpoint-order.tsv``:

* a node's identity is its canonical endpoint string (lowercase scheme and host, default port
  omitted); the ring is those identities sorted byte-wise, so ``http://127.0.0.100:8000``
  sorts before ``http://127.0.0.95:8000``;
* the seeded generator is Go's ``math/rand`` source (607-word additive lagged Fibonacci,
  seeded through the Park-Miller step), and a plan picks with ``Intn`` and removes by moving
  the last candidate into the hole. A conventional shuffle gives other orders.

The generator is evaluated lazily: seeding the full 607-word state costs ~1,900 Park-Miller
steps, but a plan over n nodes reads only about n state words, and each word depends on the
seed alone (``x_j = seed * 48271**j mod (2**31 - 1)``), so a word is computed the first time
it is read, with a precomputed power. The output is identical to seeding every word.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from alternator_shm.affinity._cooked import COOKED
from alternator_shm.endpoints import canonical_endpoint, order_key

__all__ = [
    "GoRand",
    "Ring",
    "SeededPlan",
    "canonical_endpoint",
    "preferred_order",
    "seeded_order",
]

_LEN = 607
_TAP = 273
_FEED = _LEN - _TAP
_M = (1 << 31) - 1
_A = 48271
_ZERO_SEED = 89_482_311
_MASK64 = (1 << 64) - 1
_MASK63 = (1 << 63) - 1
_INT31_MAX = (1 << 31) - 1

# Word i of the state mixes the Park-Miller values x_(21+3i), x_(22+3i), x_(23+3i) of the seed
# (20 warm-up steps, then three steps per word): the multipliers A**j mod M, precomputed.
_POW: tuple[tuple[int, int, int], ...] = tuple(
    (pow(_A, 21 + 3 * i, _M), pow(_A, 22 + 3 * i, _M), pow(_A, 23 + 3 * i, _M))
    for i in range(_LEN)
)
_COOKED_U64: tuple[int, ...] = tuple(v & _MASK64 for v in COOKED)


class Ring:
    """The affinity ring: discovered nodes in canonical order, one entry per identity.

    ``nodes`` keeps each identity's first spelling (what routing hands out); ``keys`` holds
    the matching canonical strings. Built from every discovered node, whatever its health,
    so a health change never remaps keys (AFF-REQ-006).
    """

    __slots__ = ("keys", "members", "nodes", "source")

    def __init__(self, nodes: Iterable[str]) -> None:
        source = tuple(nodes)
        first: dict[str, str] = {}
        for node in source:
            try:
                key = canonical_endpoint(node)
            except ValueError:
                continue
            first.setdefault(key, node)
        ordered = sorted(first, key=order_key)
        self.source = source
        self.keys: tuple[str, ...] = tuple(ordered)
        self.nodes: tuple[str, ...] = tuple(first[k] for k in ordered)
        self.members: frozenset[str] = frozenset(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


class GoRand:
    """Go's ``math/rand`` source seeded with a signed 64-bit ``seed`` (lazy state words)."""

    __slots__ = ("_feed", "_seed", "_tap", "_vec")

    def __init__(self, seed: int) -> None:
        s = seed % _M  # Python's modulo is already the non-negative residue the spec asks for
        self._seed = s if s else _ZERO_SEED
        self._vec: dict[int, int] = {}
        self._tap = 0
        self._feed = _FEED

    def _word(self, i: int) -> int:
        word = self._vec.get(i)
        if word is None:
            s = self._seed
            p0, p1, p2 = _POW[i]
            u = ((s * p0 % _M) << 40) ^ ((s * p1 % _M) << 20) ^ (s * p2 % _M)
            word = (u ^ _COOKED_U64[i]) & _MASK64
            self._vec[i] = word
        return word

    def uint64(self) -> int:
        self._tap = (self._tap - 1) % _LEN
        self._feed = (self._feed - 1) % _LEN
        x = (self._word(self._feed) + self._word(self._tap)) & _MASK64
        self._vec[self._feed] = x
        return x

    def int63(self) -> int:
        return self.uint64() & _MASK63

    def int31(self) -> int:
        return self.int63() >> 32

    def intn(self, n: int) -> int:
        """Uniform in ``[0, n)`` exactly as Go's ``Intn`` (``Int31n`` / ``Int63n``)."""
        if not 1 <= n <= _MASK63:
            raise ValueError(f"Intn bound out of range: {n}")
        if n <= _INT31_MAX:
            width, draw = 31, self.int31
        else:
            width, draw = 63, self.int63
        if n & (n - 1) == 0:
            return draw() & (n - 1)
        limit = (1 << width) - 1 - (1 << width) % n
        value = draw()
        while value > limit:
            value = draw()
        return value % n


def seeded_order(seed: int, ring: Ring, count: int | None = None) -> list[str]:
    """The seeded plan: ring nodes in pick-and-remove order (the first ``count`` of them)."""
    plan = SeededPlan(seed, ring)
    return plan[: len(ring) if count is None else count]


class SeededPlan(Sequence[str]):
    """:func:`seeded_order` computed only as far as it is read.

    A call almost always needs only its first node (a retry needs the second, ...), so picks
    are made on demand: the cost of a first attempt does not grow with the cluster size.
    Length and membership are the ring's, known without picking.
    """

    __slots__ = ("_candidates", "_out", "_rand", "_ring")

    def __init__(self, seed: int, ring: Ring) -> None:
        self._ring = ring
        self._rand = GoRand(seed)
        self._candidates = list(ring.nodes)
        self._out: list[str] = []

    def _fill(self, count: int) -> None:
        candidates, out, rand = self._candidates, self._out, self._rand
        while len(out) < count and candidates:
            index = rand.intn(len(candidates))
            out.append(candidates[index])
            candidates[index] = candidates[-1]
            candidates.pop()

    def __len__(self) -> int:
        return len(self._ring.nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._ring.members

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self._ring.nodes)):
            self._fill(i + 1)
            yield self._out[i]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            self._fill(len(self))
            return self._out[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        self._fill(index + 1)
        return self._out[index]

    def __repr__(self) -> str:
        return f"SeededPlan({self._out!r} + {len(self) - len(self._out)} not picked yet)"


def preferred_order(votes: dict[str, int], ring: Ring) -> list[str]:
    """BatchWriteItem order: voted nodes by votes descending, then canonical string; the rest
    of the ring follows in canonical order. Depends only on the vote counts."""
    key_of = dict(zip(ring.nodes, ring.keys, strict=True))
    voted = sorted(
        (node for node in votes if node in key_of),
        key=lambda node: (-votes[node], order_key(key_of[node])),
    )
    chosen = set(voted)
    return voted + [node for node in ring.nodes if node not in chosen]

