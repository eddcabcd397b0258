"""A faithful local N-node ScyllaDB Alternator cluster, for tests and demos.

Each node binds its own loopback IP on one shared port (``/localnodes`` returns bare IPs), all
nodes share one storage backend, and nodes can be killed, paused, drained, restarted and
faulted. This sub-package imports nothing from the rest of ``alternator_shm`` on purpose: it
plays the server, and must not share code with the client it tests.
"""

from __future__ import annotations

from alternator_shm.emulator._backends import (
    DynamoDBLocalNotInstalled,
    DynamoDBLocalServer,
    find_dynamodb_local,
)
from alternator_shm.emulator._cluster import Cluster, Node, parse_users, random_user
from alternator_shm.emulator._log import RequestLogEntry
from alternator_shm.emulator._profiles import PROFILES, Profile

__all__ = [
    "PROFILES",
    "Cluster",
    "DynamoDBLocalNotInstalled",
    "DynamoDBLocalServer",
    "Node",
    "Profile",
    "RequestLogEntry",
    "find_dynamodb_local",
    "parse_users",
    "random_user",
]
