"""Review of issue 8, item 9 (counter fallback): the ``flock`` backend's bounded wait covers
``advance()``, but every attempt also counts itself in flight host-wide (fleet/load.py) with a
compare-exchange that goes through the same flock lock. A process SIGSTOPped inside that lock
then fails calls, or sends a whole process to local mode for 30 s and more. Real processes, a
literal SIGSTOP inside the critical section, the emulator on loopback; each failed before its fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_helper_support import make_helper, module_cluster

from alternator_shm.fleet import SharedFleet
from alternator_shm.fleet.counter import FlockWords

USERS = {"flk-key": "flk-secret"}
TABLE = "flock_table"


def _flock_client(helper: Any) -> Any:
    """A client of ``helper`` on a flock-backend segment, its table created, first call done."""
    SharedFleet(helper.namespace, counter_backend="flock").nodes()  # the segment is flock
    client = helper.new_dynamodb_client()
    with contextlib.suppress(Exception):  # the module's cluster may have it already
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    client.get_item(TableName=TABLE, Key={"p": {"S": "warm"}})
    return client


cluster = module_cluster(nodes=3, users=USERS, backend="null")


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"T"


@contextlib.contextmanager
def _stopped_inside_the_counter_lock(namespace: str) -> Iterator[int]:
    """A child that attaches, enters the flock critical section and SIGSTOPs itself there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            ops = SharedFleet(namespace).attachment.ops
            assert isinstance(ops, FlockWords)
            with ops.critical():
                os.write(w, b"!")
                os.kill(os.getpid(), signal.SIGSTOP)
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"!"
        deadline = time.monotonic() + 10
        while not _stopped(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert _stopped(pid)
        yield pid
    finally:
        os.close(r)
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_call_in_flight_when_a_process_stops_inside_the_counter_lock_does_not_fail(
    cluster: Any,
) -> None:
    with make_helper(cluster) as helper:
        client = _flock_client(helper)
        assert helper.stats().counter_backend == "flock"
        for node in cluster.nodes:
            node.inject_fault("latency", delay=4.0)  # each call stays in flight 4 s
        errors: list[str] = []

        def call() -> None:
            try:
                client.get_item(TableName=TABLE, Key={"p": {"S": "k"}})
            except Exception as exc:  # the assertion below counts it
                errors.append(f"{type(exc).__name__}: {exc}")

        try:
            t = threading.Thread(target=call)
            t.start()
            time.sleep(0.5)  # the attempt is on the wire, counted in flight
            with _stopped_inside_the_counter_lock(helper.namespace):
                t.join(20)
        finally:
            for node in cluster.nodes:
                node.clear_faults()
        assert not t.is_alive()
        assert not errors, errors


def test_a_stopped_counter_lock_holder_does_not_send_the_process_local(cluster: Any) -> None:
    """Issue 8: 'Counter fallback with a bounded wait: past it, that attempt picks locally
    (counted in stats)'. Not: the process leaves the host's fleet (no shared health, no exact
    round-robin) for at least 30 s because another process was stopped for a moment."""
    with make_helper(cluster) as helper:
        client = _flock_client(helper)
        assert helper.stats().mode == "shared" and helper.stats().counter_backend == "flock"
        with _stopped_inside_the_counter_lock(helper.namespace):
            client.get_item(TableName=TABLE, Key={"p": {"S": "k"}})
        client.get_item(TableName=TABLE, Key={"p": {"S": "k2"}})
        st = helper.stats()
        assert st.mode == "shared", (st.mode, st.mode_reason)
