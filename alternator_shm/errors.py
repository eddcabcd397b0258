"""Exceptions raised by alternator-shm.

Everything we raise derives from :class:`AlternatorError`, so callers can catch the library's
own failures in one place; errors returned by DynamoDB itself stay botocore's ``ClientError``.
"""

from __future__ import annotations

import botocore.exceptions

__all__ = [
    "AlternatorError",
    "ConfigurationError",
    "DiscoveryError",
    "NoLiveNodesError",
    "SharedStateError",
    "UndecodableAnswerError",
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


class UndecodableAnswerError(AlternatorError, botocore.exceptions.ConnectionClosedError):
    """A node's compressed answer could not be decoded (``response_compression=True``).

    Broken or truncated gzip / deflate, or a ``Content-Encoding`` we did not ask for. A
    ``ConnectionClosedError`` for botocore, so both its retry modes retry the attempt on another
    node, as for any answer that never arrived whole; ``error`` says what was wrong.
    """

    fmt = 'Undecodable answer from endpoint URL "{endpoint_url}": {error}'
