"""pytest plugin (entry point ``alternator_shm``): the ``alternator_cluster`` fixture.

Usage::

    def test_crud(alternator_cluster):
        key, secret = alternator_cluster.credentials
        ...

    @pytest.mark.alternator_cluster(nodes=5, profile="2025.1", failure_detect_delay=1.0)
    def test_big(alternator_cluster): ...

The fixture is function-scoped: a fresh 3-node moto cluster with SigV4 enforced for a random
user. Any keyword of :class:`~alternator_shm.emulator.Cluster` can be given to the marker
(``users=None`` turns auth off). The emulator is imported lazily so that merely having this
package installed costs other test suites nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from alternator_shm.emulator import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alternator_cluster(**kwargs): keyword arguments for the alternator_cluster fixture's "
        "Cluster (nodes=, topology=, backend=, users=, profile=, https=, ...)",
    )


def _require_extra(kwargs: dict[str, Any]) -> None:
    """Fail the test with one line naming the install command when the extra is missing."""
    needed = ["moto", "werkzeug"] if kwargs.get("backend", "moto") == "moto" else []
    if kwargs.get("https"):
        needed.append("trustme")
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            pytest.fail(f"the alternator_cluster fixture needs {name} (the emulator extra): "
                        "pip install 'alternator-shm[emulator]'", pytrace=False)


@pytest.fixture
def alternator_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running local Alternator cluster (3 nodes, moto, SigV4 enforced), stopped afterwards."""
    from alternator_shm.emulator import Cluster, random_user

    kwargs: dict[str, Any] = {"nodes": 3, "backend": "moto"}
    key, secret = random_user()
    kwargs["users"] = {key: secret}
    marker = request.node.get_closest_marker("alternator_cluster")
    if marker is not None:
        kwargs.update(marker.kwargs)
    _require_extra(kwargs)
    with Cluster(**kwargs) as cluster:
        yield cluster
