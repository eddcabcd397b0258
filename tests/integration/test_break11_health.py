"""Review of issue 11 (node health per the spec, host-wide): probes that found faults.

Real HTTP against the emulator. Each test failed on the code as reviewed and passes since its fix.
"""

from __future__ import annotations

import time

from test_helper_support import make_helper, wait_for

from alternator_shm.emulator import Cluster
from alternator_shm.fleet.health import HealthSettings

USERS = {"b11h-key": "b11h-secret"}


def test_probe_timeout_above_two_seconds_is_honoured() -> None:
    """probe_timeout=10: a new node whose ``/localnodes`` answers HTTP 200 after ~2.5 s passes
    its admission probe (the spec: "Probe timeout: deadline after an individual probe starts")."""
    settings = HealthSettings(probe_period=30.0, probe_timeout=10.0)
    with (
        Cluster(nodes=3, users=USERS, backend="null") as c,
        make_helper(c, node_health=settings) as h,
    ):
        assert len(h.live_nodes()) == 3
        # Idle host (no calls): nothing refreshes until update_live_nodes(), so the fault is
        # in place before the leader first sees the node.
        new = c.add_node()
        new.inject_fault("localnodes_hang")  # answers /localnodes only once cleared
        url = new.url.rstrip("/")
        assert url in h.update_live_nodes()  # published; its admission probe is now running
        assert h.stats().per_node[url].state == "quarantined"
        time.sleep(2.5)
        new.clear_faults()  # the probe in flight gets its HTTP 200 at ~2.5 s: within 10 s
        active = wait_for(lambda: h.stats().per_node[url].state == "active", 6)
        assert active, h.stats().per_node[url]
