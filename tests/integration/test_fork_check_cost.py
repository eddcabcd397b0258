"""The fork checks of the data path cost no system call (issue 16: where the client's CPU goes).

Every layer of an attempt asks "am I still the process that built this?" (fleet, fail-soft,
load, transport, locks): seven ``os.getpid()`` system calls per attempt. With the ``_pidcache``
extension and a kernel-wiped fork mark, ``_forkmark.getpid`` answers from memory and asks the
kernel again only in a new process, however it was forked (tested with the fork mark in
``tests/fleet/test_fleet_pick_path.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from test_helper_support import helper_options

from alternator_shm import _forkmark
from alternator_shm.emulator import Cluster
from alternator_shm.fleet import cleanup

needs_cache = pytest.mark.skipif(not _forkmark.pid_cached,
                                 reason="_pidcache not built or no MADV_WIPEONFORK")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with Cluster(nodes=3, users={"pid-key": "pid-secret"}, backend="null") as c:
        yield c


_COUNTING = textwrap.dedent(
    """
    import asyncio, json, os, sys, threading
    real = os.getpid
    main = threading.get_ident()
    calls = [0]
    counting = [False]

    def getpid():
        if counting[0] and threading.get_ident() == main:
            calls[0] += 1
        return real()

    os.getpid = getpid  # before any import of ours: module-level bindings see it too
    from alternator_shm import Helper, _forkmark
    from alternator_shm.fleet import cleanup

    seeds, options, attempts = json.loads(sys.argv[1])
    options["credentials"] = tuple(options["credentials"])
    result = {"cached": _forkmark.pid_cached}
    h = Helper(seeds, **options)
    try:
        client = h.new_dynamodb_client()
        for _ in range(10):
            client.list_tables()
        calls[0], counting[0] = 0, True
        for _ in range(attempts):
            client.list_tables()
        counting[0] = False
        result["sync"] = calls[0]

        async def run():
            async with h.new_async_dynamodb_client() as ddb:
                for _ in range(10):
                    await ddb.list_tables()
                calls[0], counting[0] = 0, True
                for _ in range(attempts):
                    await ddb.list_tables()
                counting[0] = False
            return calls[0]

        result["async"] = asyncio.run(run())
    finally:
        h.close()
        cleanup(h.namespace)
    print(json.dumps(result))
    """
)


@needs_cache
def test_an_attempt_makes_no_getpid_system_call(cluster: Any) -> None:
    pytest.importorskip("aiobotocore")
    options = helper_options(cluster)
    seeds = list(cluster.seeds)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _COUNTING, json.dumps([seeds, options, 30])],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    finally:
        cleanup(options["namespace"])
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"cached": True, "sync": 0, "async": 0}  # was 7 per sync attempt
