"""``balancing="adaptive"``: step around a node that is clearly slower or busier than the next.

The round-robin walk (:mod:`alternator_shm.routing`) proposes node A, the next eligible node
after the shared counter's position. Adaptive balancing then compares A with the next
:data:`CANDIDATES` eligible nodes after it (never a quarantined, down or already-tried node:
health decides *who* may be picked, balancing only *which* of them) by their expected delay::

    cost(node) = latency_ms(node) x (1 + in_flight(node))

using the host-wide figures of :mod:`alternator_shm.fleet.load` (latency decays with a 1 s
half-life since its last sample). A is replaced by the cheapest of them only when A's cost is
both :data:`FACTOR` times and :data:`SLACK_MS` more than that node's; otherwise A stays, so
nodes that are alike (within a factor 2, or a few ms apart) keep the exact fleet-wide
round-robin. Why this shape:

* **no stampede**: the alternative is one of the next few nodes *after the counter's position*,
  which itself rotates, so the traffic a slow node sheds spreads over its successors instead of
  every process piling onto one global "best" node; the in-flight term makes a node that has
  just received extra work look busier at once, to every process of the host;
* **recovery**: an avoided node gets no answers, so its latency estimate decays (half-life
  :data:`~alternator_shm.fleet.load.DECAY_S`) until it falls under the threshold and the node
  is tried again; if it is fast again the fresh answers keep it in rotation, else the new slow
  sample pushes it out again. A few probes per few seconds per host, never a burst: each probe
  also raises its in-flight count for every process.
* **unknown is neutral**: a node without a latency sample yet (a new node) is never avoided and
  never preferred.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["BALANCING_MODES", "CANDIDATES", "FACTOR", "SLACK_MS", "better_than"]

BALANCING_MODES: Final = ("round_robin", "adaptive")
#: Nodes after A considered as replacements.
CANDIDATES: Final = 2
#: A is avoided only if its expected delay is this many times the replacement's ...
FACTOR: Final = 2.0
#: ... and at least this many milliseconds more (absorbs jitter on fast local clusters).
SLACK_MS: Final = 20.0

LoadOf = Callable[[str], tuple[int, float | None]]


def _cost(load: tuple[int, float | None]) -> float | None:
    in_flight, latency = load
    return None if latency is None else latency * (1 + in_flight)


def better_than(first: str, others: Sequence[str], load_of: LoadOf) -> str:
    """``first``, or the cheapest of ``others`` if ``first`` is clearly costlier than it."""
    if not others:
        return first
    first_cost = _cost(load_of(first))
    if first_cost is None:
        return first
    best: str | None = None
    best_cost = 0.0
    for node in others:
        cost = _cost(load_of(node))
        if cost is not None and (best is None or cost < best_cost):
            best, best_cost = node, cost
    if best is not None and first_cost > FACTOR * best_cost and first_cost - best_cost > SLACK_MS:
        return best
    return first
