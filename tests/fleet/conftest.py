"""Shared fixtures of the fleet tests: unique namespaces, fleets closed and segments removed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _fleet_procs import NODES  # re-exported for fixtures

from alternator_shm.fleet import SharedFleet, cleanup

__all__ = ["NODES"]



@pytest.fixture
def ns() -> Iterator[str]:
    name = f"test-fleet-{uuid.uuid4().hex}"
    yield name
    cleanup(name)


@pytest.fixture
def make_fleet(ns: str) -> Iterator[Callable[..., SharedFleet]]:
    made: list[SharedFleet] = []
    pid = os.getpid()

    def make(namespace: str | None = None, **kwargs: Any) -> SharedFleet:
        kwargs.setdefault("poll_interval", 0.02)
        fleet = SharedFleet(namespace or ns, **kwargs)
        made.append(fleet)
        return fleet

    yield make
    if os.getpid() == pid:
        for fleet in made:
            fleet.close()
        cleanup(ns)
