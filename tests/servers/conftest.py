"""Fixtures of the server tests: an emulated 3-node cluster and a namespace of their own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from alternator_shm.emulator import Cluster
from alternator_shm.fleet import cleanup
from servers.servers_harness import APPS, REFRESH, FleetEnv

# 3 nodes over 2 racks of one datacenter; SigV4 enforced, so every routed call is re-signed
# for the node it actually reaches. The null backend answers instantly: these tests are about
# routing, not storage.
TOPOLOGY = [("dc1", "rack1"), ("dc1", "rack2"), ("dc1", "rack1")]


@pytest.fixture
def fleet_env(tmp_path: Path) -> Iterator[FleetEnv]:
    namespace = f"t-{uuid.uuid4().hex}"
    users = {"servers": f"secret-{uuid.uuid4().hex[:8]}"}
    with Cluster(nodes=3, topology=TOPOLOGY, users=users, backend="null") as cluster:
        key, secret = cluster.credentials
        env = dict(os.environ)
        env.update(
            ALTSHM_TEST_SEEDS=",".join(cluster.seeds),
            ALTSHM_TEST_PORT=str(cluster.port),
            ALTSHM_TEST_KEY=key,
            ALTSHM_TEST_SECRET=secret,
            ALTSHM_TEST_NS=namespace,
            ALTSHM_TEST_REFRESH=str(REFRESH),
            PYTHONPATH=os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            PYTHONUNBUFFERED="1",
        )
        try:
            yield FleetEnv(cluster, namespace, env, tmp_path)
        finally:
            # Servers are stopped inside the tests (context managers) before this runs.
            cleanup(namespace)
