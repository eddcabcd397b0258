"""alternator-shm: host-wide load balancing of boto3 DynamoDB traffic over ScyllaDB Alternator.

Public names only (``help(alternator_shm.Helper)`` documents every option; the README has the
guide and recipes). ``Helper`` and the stats classes are imported on first access so that
``import alternator_shm`` stays cheap (no boto3 import) for tools such as the CLI's ``status``
command.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from alternator_shm._version import __version__
from alternator_shm.errors import (
    AlternatorError,
    ConfigurationError,
    DiscoveryError,
    NoLiveNodesError,
    SharedStateError,
)

if TYPE_CHECKING:
    from alternator_shm.fleet import FleetStats, NodeStats
    from alternator_shm.fleet.health import HealthSettings
    from alternator_shm.helper import Helper

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AlternatorError",
    "ConfigurationError",
    "DiscoveryError",
    "FleetStats",
    "HealthSettings",
    "Helper",
    "NoLiveNodesError",
    "NodeStats",
    "SharedStateError",
    "__version__",
]

_LAZY = {
    "Helper": "alternator_shm.helper",
    "FleetStats": "alternator_shm.fleet",
    "NodeStats": "alternator_shm.fleet",
    "HealthSettings": "alternator_shm.fleet.health",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'alternator_shm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
