"""Key-route affinity: one partition key's qualifying writes go to one preferred coordinator.

Conditional writes run as lightweight transactions (Paxos) on Alternator; two coordinators
working on one partition at once contend and retry. Following the public cross-language spec
(``scylladb/alternator-client-python``, ``feature-specs/key-route-affinity.md`` and
``query-plan.md``), every process on the host -- and every Go, Java or Python client following
the spec with the same node list -- derives the same node order from the same key.

Two steps per call, kept apart so the plan sees the freshest node table:

1. :meth:`Affinity.target` (when botocore builds the parameters): does this call qualify, and
   what are its key hashes? Tables whose partition key is unknown start a background lookup
   and the call is routed normally (``None``).
2. :meth:`Affinity.plan` (at the first attempt): the ordered candidate list over the ring of
   discovered nodes, kept in the request context so every retry walks the same plan.

Health is not looked at here (the ring holds every discovered node); routing applies it only
when picking from the plan, so a node's health never remaps other keys.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alternator_shm.affinity._keys import (
    SINGLE_WRITES,
    AffinityMode,
    batch_targets,
    hash_key,
    qualifies,
)
from alternator_shm.affinity._metadata import DescribeTable, PartitionKeys
from alternator_shm.affinity._plan import (
    GoRand,
    Ring,
    SeededPlan,
    canonical_endpoint,
    preferred_order,
    seeded_order,
)

__all__ = [
    "MODES",
    "Affinity",
    "AffinityMode",
    "DescribeTable",
    "GoRand",
    "PartitionKeys",
    "Ring",
    "SeededPlan",
    "Target",
    "canonical_endpoint",
    "hash_key",
    "preferred_order",
    "qualifies",
    "seeded_order",
]

_log = logging.getLogger(__name__)

MODES: tuple[AffinityMode, ...] = ("rmw", "any_write")


@dataclass(frozen=True)
class Target:
    """The key hashes of one qualifying call: one seed, or one per BatchWriteItem vote."""

    seeds: tuple[int, ...]
    batch: bool = False


class Affinity:
    """The affinity policy of one Helper (mode, partition keys, ring cache) in one process."""

    def __init__(self, mode: AffinityMode, partition_keys: Mapping[str, str] | None = None):
        if mode not in MODES:
            raise ValueError(f"affinity mode must be one of {MODES}, got {mode!r}")
        self.mode: AffinityMode = mode
        self.keys = PartitionKeys(partition_keys)
        self._ring: Ring | None = None

    def target(
        self,
        operation: str,
        params: Mapping[str, Any],
        describe: DescribeTable | None = None,
    ) -> Target | None:
        """The hashes of a qualifying call, or None to route it normally.

        ``describe`` runs ``DescribeTable`` for a table whose partition key is not known yet
        (in a background thread; this call never waits for it).
        """
        if not isinstance(params, Mapping) or not qualifies(self.mode, operation, params):
            return None
        if operation in SINGLE_WRITES:
            table = params.get("TableName")
            shape = params.get("Item" if operation == "PutItem" else "Key")
            if not isinstance(table, str) or not isinstance(shape, Mapping):
                return None
            name = self.keys.get(table, describe)
            seed = hash_key(shape.get(name)) if name is not None else None
            return None if seed is None else Target((seed,))
        names: dict[str, str | None] = {}  # one metadata read per table for the whole batch
        seeds: list[int] = []
        for table, shape in batch_targets(params):
            if table not in names:
                names[table] = self.keys.get(table, describe)
            name = names[table]
            seed = hash_key(shape.get(name)) if name is not None else None
            if seed is not None:
                seeds.append(seed)
        return Target(tuple(seeds), batch=True) if seeds else None

    def ring(self, nodes: tuple[str, ...]) -> Ring:
        """The canonical ring of ``nodes`` (rebuilt only when the node table changes)."""
        ring = self._ring
        if ring is None or ring.source != nodes:
            ring = self._ring = Ring(nodes)
        return ring

    def plan(self, target: Target, nodes: tuple[str, ...]) -> Sequence[str]:
        """The candidate order of a call over the discovered ``nodes`` (health not applied).

        A single write gets a lazy :class:`SeededPlan` (nodes picked as retries need them).
        """
        ring = self.ring(nodes)
        if not ring.nodes:
            return ()
        if not target.batch:
            return SeededPlan(target.seeds[0], ring)
        votes = Counter(SeededPlan(seed, ring)[0] for seed in target.seeds)
        return tuple(preferred_order(votes, ring))

    def close(self) -> None:
        """Stop the background partition-key lookups (the Helper can still be used later)."""
        self.keys.close()
