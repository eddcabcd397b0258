"""Host-wide shared state of alternator-shm: node table, round-robin counter, node health and
the elected refresher, in POSIX shared memory.

One module per concern; only :mod:`~alternator_shm.fleet.layout` knows byte offsets:
``segment`` (names, create/attach/validate, cleanup), ``election`` (leader lock), ``table``
(double-buffered self-validating node table), ``counter`` (shared atomic words), ``health``
(per-node failures and quarantine), ``refresher`` (the daemon thread), ``local`` (per-process
state and fork handling), ``stats`` (snapshots). ``standalone`` is the process-local twin of
the shared fleet and ``failsoft`` switches a process to it when shared memory cannot be used.
This package imports nothing from the rest of alternator_shm except :mod:`alternator_shm.errors`.
"""

from __future__ import annotations

from alternator_shm.fleet.shared import SharedFleet, cleanup, cleanup_segment, list_fleets
from alternator_shm.fleet.stats import FleetStats, NodeStats

__all__ = ["FleetStats", "NodeStats", "SharedFleet", "cleanup", "cleanup_segment", "list_fleets"]
