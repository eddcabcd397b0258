"""Suite-wide hygiene: leave no test namespace behind in /dev/shm.

Tests use unique namespaces (``t-<uuid>``, ``test-...``) and most clean up after themselves;
this sweep removes whatever a failed or killed test left. ``cleanup`` only removes segments no
process is attached to, so sweeping while other xdist workers still run is safe.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alternator_shm.fleet import cleanup, list_fleets

_TEST_PREFIXES = ("t-", "test-", "demo-", "dbg-")


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_namespaces() -> Iterator[None]:
    yield
    for stats in list_fleets():
        if stats.namespace.startswith(_TEST_PREFIXES):
            cleanup(stats.namespace)
