"""Fixtures for the emulator's own tests (helpers live in _emulator_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _emulator_helpers import SECRET, TOPOLOGY, USER

from alternator_shm.emulator import Cluster


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """A 3-node, 2-DC cluster with auth enforced, for tests that do not change topology."""
    with Cluster(topology=TOPOLOGY, users={USER: SECRET}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def null_cluster() -> Iterator[Cluster]:
    with Cluster(nodes=3, backend="null", users={USER: SECRET}) as cluster:
        yield cluster
