"""alternator-shm: host-wide load balancing of boto3 DynamoDB traffic over ScyllaDB Alternator.

Public names only; see API.md for the contract.
"""

from __future__ import annotations

import logging

from alternator_shm._version import __version__
from alternator_shm.errors import (
    AlternatorError,
    ConfigurationError,
    DiscoveryError,
    NoLiveNodesError,
    SharedStateError,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AlternatorError",
    "ConfigurationError",
    "DiscoveryError",
    "NoLiveNodesError",
    "SharedStateError",
    "__version__",
]
