"""Fail-soft against a segment truncated under attached processes (same user).

Issue 8 #6 asks that a call never fail because of shared memory, whatever the same user does
to the segment. A ``truncate``/``: >`` of ``/dev/shm/rrlb3.*`` while processes have it mapped
makes the kernel drop its pages from every mapping, and the next access is a SIGBUS: before the
``_mapguard`` extension (``fleet/mapguard.py``), every attached process died of it, with every
in-flight call. Now the signal is absorbed, each process goes local (fail-soft) and no call
fails. The processes are children, so a SIGBUS cannot take the test runner with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from test_helper_support import helper_options, module_cluster

from alternator_shm.fleet import mapguard, segment

USERS = {"trunc-key": "trunc-secret"}

pytestmark = pytest.mark.skipif(
    not mapguard.available(), reason="the optional _mapguard extension is not built here"
)


cluster = module_cluster(nodes=3, users=USERS, backend="null")


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from alternator_shm import Helper
    options = eval(sys.argv[1])
    go = sys.argv[2]
    seeds = options.pop("seeds")
    h = Helper(seeds, **options)
    client = h.new_dynamodb_client(region_name="us-east-1")
    client.list_tables()
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        client.list_tables()  # keep using the mapping while it is truncated
        time.sleep(0.01)
    failures = 0
    for _ in range(20):
        try:
            client.list_tables()
        except Exception as exc:
            failures += 1
            print("error", type(exc).__name__, exc, flush=True)
    st = h.stats()
    print("failures", failures, "mode", st.mode, flush=True)
    print("reason", st.mode_reason, flush=True)
    h.close()
    """
)


def test_segment_truncated_under_attached_processes_fails_no_call(cluster: Any, tmp_path) -> None:
    options = helper_options(cluster, seeds=list(cluster.seeds))
    options["credentials"] = tuple(options["credentials"])
    base = os.path.join(segment.DEFAULT_SHM_DIR, segment.base_name(options["namespace"]))
    go = str(tmp_path / "go")
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, repr(options), go],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        os.truncate(base, 0)  # the same user, while both have the segment mapped
        time.sleep(0.5)  # both keep calling through the truncated mapping meanwhile
        open(go, "w").close()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        for path in (base, base + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode != -signal.SIGBUS, "killed by SIGBUS"
        assert p.returncode == 0, err[-2000:]
        assert "failures 0 mode local" in out, out + err[-2000:]
        assert "truncated" in out or "bad header" in out, out
