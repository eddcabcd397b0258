"""Node killed (issue 16, bench_compare section 6): an attempt that cannot reach a node asks
the host's leader for a table refresh at once, so a node the cluster already dropped leaves
the table now instead of after ``refresh_interval`` more attempts to it. Health thresholds are
untouched (one failure does not make the node DOWN)."""

from __future__ import annotations

import time

from test_helper_support import make_helper

from alternator_shm.emulator import Cluster

USERS = {"rf-key": "rf-secret"}
TABLE = "rf_table"
KEY = {"p": {"S": "k"}}


def test_a_refused_attempt_refreshes_the_table_long_before_the_interval() -> None:
    with Cluster(nodes=3, users=USERS, backend="null") as cluster, make_helper(
        cluster, refresh_interval=120, idle_refresh_interval=120
    ) as h:
        client = h.new_dynamodb_client()
        assert len(h.live_nodes()) == 3
        victim = cluster.nodes[1]
        dead = victim.url.rstrip("/")
        sent: list[str] = []
        client.meta.events.register_first(
            "before-send.dynamodb", lambda request, **kw: sent.append(request.url)
        )
        victim.kill()
        # calls (each succeeds: a refused attempt is retried elsewhere) until the table drops
        # the dead node; without the refresh request that takes the 120 s interval
        deadline = time.monotonic() + 20
        while dead in h.stats().nodes and time.monotonic() < deadline:
            client.get_item(TableName=TABLE, Key=KEY)
        assert dead not in h.stats().nodes
        to_dead = [u for u in sent if u.startswith(dead)]
        assert 1 <= len(to_dead) < 10  # refused at least once; DOWN never needed
