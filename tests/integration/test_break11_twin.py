"""Review of issue 11 (the local twin runs the same node health): probes that found faults.

Real HTTP against the emulator, real shared-memory failures (another user owns the lock file's
name, as in test_helper_failsoft.py; needs root). Each test failed on the code as reviewed
and passes since its fix.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from test_helper_support import (
    helper_options,
    make_helper,
    run_child,
    squatted,
    wait_children,
    wait_for,
)

from alternator_shm.emulator import Cluster
from alternator_shm.fleet import segment
from alternator_shm.fleet.health import HealthSettings

USERS = {"b11t-key": "b11t-secret"}
TABLE = "b11t_table"
SETTINGS = HealthSettings(probe_period=60.0, probe_timeout=1.0)  # no twin probe in the test

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _calls(client: Any, count: int) -> list[str]:
    failures = []
    for i in range(count):
        try:
            client.get_item(TableName=TABLE, Key={"p": {"S": f"k{i}"}})
        except Exception as exc:  # counted
            failures.append(repr(exc))
    return failures


def _states(h: Any) -> set[str]:
    return {s.state for s in h.stats().per_node.values()}


@needs_root
@pytest.mark.slow
def test_second_local_episode_does_not_route_by_the_first_ones_stale_health(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALTERNATOR_SHM_REJOIN_INTERVAL", "0.2")
    with Cluster(nodes=3, users=USERS, backend="null", failure_detect_delay=60.0) as c:
        options = helper_options(c, node_health=SETTINGS)
        base = os.path.join(segment.DEFAULT_SHM_DIR, segment.base_name(options["namespace"]))
        seg_path, lock_path = base, base + ".lock"
        with make_helper(c, **options) as h:
            client = h.new_dynamodb_client()
            # Episode 1 (local): the cluster is briefly unreachable; the twin marks all DOWN.
            with squatted(lock_path):
                assert _calls(client, 3) == []
                assert h.stats().mode == "local"
                for node in c.nodes:
                    node.kill()
                assert wait_for(lambda: (_calls(client, 1), _states(h) == {"down"})[1], 60)
                for node in c.nodes:
                    node.start()
            # Shared again: the host's fleet sees a healthy cluster; calls succeed.
            assert wait_for(lambda: h.stats().mode == "shared", 30)
            assert wait_for(lambda: _states(h) == {"active"}, 30)
            assert _calls(client, 6) == []
            # Episode 2: the segment is removed and its lock name taken (systemd RemoveIPC,
            # then another user): this process balances alone again.
            assert wait_for(lambda: h.stats().is_leader, 20)
            os.unlink(seg_path)
            os.unlink(lock_path)
            with squatted(lock_path):
                failures: list[str] = []

                def local() -> bool:
                    failures.extend(_calls(client, 1))
                    return h.stats().mode == "local"

                assert wait_for(local, 30)
                began = time.monotonic()
                failures.extend(_calls(client, 20))
                states = _states(h)
                took = time.monotonic() - began
        # Nothing is wrong with the cluster: no call may fail (failsoft: "the switch itself
        # loses nothing").
        assert failures == [], (len(failures), failures[:2], states, f"{took:.1f}s")


@pytest.mark.slow
def test_fork_of_a_local_process_while_its_prober_logs_keeps_probing_in_the_child() -> None:
    settings = HealthSettings(probe_period=1.0, probe_timeout=0.3)
    with Cluster(nodes=3, users=USERS, backend="null", failure_detect_delay=60.0) as c, \
            make_helper(c, shared="off", node_health=settings) as h:
        client = h.new_dynamodb_client()
        assert _calls(client, 3) == []
        victim = c.nodes[1]
        url = victim.url.rstrip("/")
        victim.kill()
        assert wait_for(lambda: (_calls(client, 1),
                                 h.stats().per_node[url].state == "down")[1], 30)
        victim.start()
        # Fork while another thread holds the twin's Prober lock: the refresher thread was
        # once caught there by a slow logging handler (its probe-timeout record); holding the
        # lock from this thread is the same state, made deterministic.
        prober = h._fleet._standalone._prober  # white box: the one lock at stake
        assert prober is not None
        holder_inside, release = threading.Event(), threading.Event()

        def hold() -> None:
            with prober._locked():
                holder_inside.set()
                release.wait(30)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        try:
            assert holder_inside.wait(10)

            def child() -> int:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    _calls(client, 1)
                    if h.stats().per_node[url].state == "active":
                        return 0
                    time.sleep(0.05)
                return 1

            pid = run_child(child)
        finally:
            release.set()
            holder.join(10)
        code = wait_children([pid], 45)[pid]
        # The parent recovers it (its thread was only slowed down) ...
        assert wait_for(lambda: h.stats().per_node[url].state == "active", 15)
        # ... the child must too: it probes on its own (shared="off").
        assert code == 0, code
