"""A leader whose refresh is slow but bounded is not wedged (issue 8, "leadership tied to
progress").

A refresh may last its whole budget (``discovery.FETCH_TIMEOUT``, 4 s) when every node hangs on
``/localnodes``, but the leader stamps its heartbeat only between refreshes, and a follower
takes over once that heartbeat is older than ``max(3 x refresh_interval, 2 s)``. So a live
leader doing its bounded job was taken over, then took the leadership back: leadership
ping-ponged between the processes (6 takeovers in 10 s), each takeover logging a WARNING, with
two processes polling ``/localnodes`` at once (issue 8: "one poller per host in steady
state"). The leader now stamps its heartbeat during a refresh too, up to a cap.

The follower is a real second process (one process runs one refresher per namespace).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from test_helper_support import helper_options, make_helper, module_cluster

from alternator_shm import discovery

USERS = {"slow-key": "slow-secret"}


cluster = module_cluster(nodes=3, users=USERS, backend="null")


@pytest.mark.slow
def test_a_leader_in_a_slow_bounded_refresh_is_not_taken_over(cluster: Any) -> None:
    assert discovery.FETCH_TIMEOUT > 2.0  # the premise: a refresh can outlast the threshold
    options = helper_options(cluster)
    seconds = 2.5 * discovery.FETCH_TIMEOUT
    follower = textwrap.dedent(f"""
        import sys, time
        from alternator_shm import Helper
        h = Helper({list(cluster.seeds)!r}, **{options!r})
        client = h.new_dynamodb_client()
        client.list_tables()
        print("ready", flush=True)
        end = time.monotonic() + {seconds!r}
        while time.monotonic() < end:
            client.list_tables()
            time.sleep(0.05)
        print("takeovers", h.stats().takeovers, flush=True)
        h.close()
    """)
    try:
        with make_helper(cluster, **options) as a:
            client = a.new_dynamodb_client()
            client.list_tables()
            assert a.stats().is_leader
            proc = subprocess.Popen([sys.executable, "-c", follower], stdout=subprocess.PIPE,
                                    text=True)
            try:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ready"
                for node in cluster.nodes:
                    node.inject_fault("localnodes_hang")
                end = time.monotonic() + seconds
                while time.monotonic() < end:  # traffic keeps the active refresh interval
                    client.list_tables()
                    time.sleep(0.05)
                out, _ = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            follower_takeovers = int(out.split()[-1])
            takeovers = a.stats().takeovers + follower_takeovers
            assert takeovers == 0, f"{takeovers} takeovers of a leader that was only slow"
    finally:
        for node in cluster.nodes:
            node.clear_faults()
