"""Exceptions raised by alternator-shm.

Everything we raise derives from :class:`AlternatorError`, so callers can catch the library's
own failures in one place; errors returned by DynamoDB itself stay botocore's ``ClientError``.
"""

from __future__ import annotations

__all__ = [
    "AlternatorError",
    "ConfigurationError",
    "DiscoveryError",
    "NoLiveNodesError",
    "SharedStateError",
]


class AlternatorError(Exception):
    """Base class of every error raised by alternator-shm."""


class ConfigurationError(AlternatorError, ValueError):
    """A bad option, or a routing scope (datacenter / rack) that returned no nodes."""


class DiscoveryError(AlternatorError):
    """No node answered ``/localnodes`` with a usable list."""


class NoLiveNodesError(AlternatorError):
    """There is no node to route a request to."""


class SharedStateError(AlternatorError):
    """The host-wide shared segment cannot be used.

    Raised when the segment or its lock file belongs to another user, is a symlink, is
    corrupted beyond repair, or when ``/dev/shm`` is full or missing.
    """
