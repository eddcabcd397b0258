"""Fork-completeness: locks, inherited sockets and close() under forks, signals and threads.

Children are real processes forked two ways: ``os.fork()`` (our at-fork hooks run) and
``os.fork()`` with our hooks switched off (as in uWSGI's C-level forks), so the pid check on use
is exercised on its own. Every child is waited for with a deadline and SIGKILLed if it hangs.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
import pytest
from test_helper_support import (
    cluster_credentials,
    make_helper,
    module_cluster,
    run_child,
    wait_children,
)

from alternator_shm import _forksafe

USERS = {"fork-key": "fork-secret"}
TABLE = "fork_table"
KEY = {"p": {"S": "k"}}


def _os_fork() -> int:
    return os.fork()


def _c_level_fork() -> int:
    """``os.fork()`` without our at-fork hooks, as a fork made from C (uWSGI) behaves.

    A literal libc ``fork()`` of this multi-threaded test process can hang the *interpreter*
    itself (a pending GIL hand-off to a thread that does not exist in the child); switching
    our hooks off isolates what we own: the pid checks on use.
    """
    _forksafe.AT_FORK_HOOKS = False
    try:
        return os.fork()
    finally:
        _forksafe.AT_FORK_HOOKS = True


FORKS: dict[str, Callable[[], int]] = {"os.fork": _os_fork, "c-level-fork": _c_level_fork}


cluster = module_cluster(nodes=3, users=USERS, backend="null")


class _SlowClientCreation:
    """Holds the parent's thread inside ``new_dynamodb_client()`` until released."""

    def __init__(self, session: boto3.Session) -> None:
        self.parent = os.getpid()
        self.inside = threading.Event()
        self.release = threading.Event()
        session.events.register("creating-client-class.dynamodb", self._hold)

    def _hold(self, **kwargs: Any) -> None:
        if os.getpid() == self.parent and not self.release.is_set():
            self.inside.set()
            self.release.wait(60)


@pytest.mark.parametrize("fork", list(FORKS), ids=list(FORKS))
def test_fork_while_another_thread_builds_a_client(cluster: Any, fork: str) -> None:
    key, secret = cluster_credentials(cluster)
    session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret)
    slow = _SlowClientCreation(session)
    with make_helper(cluster, credentials=None, session=session) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)  # attached, pools warm
        slow.release.clear()
        builder = threading.Thread(target=h.new_dynamodb_client, daemon=True)
        builder.start()
        assert slow.inside.wait(30)

        def child() -> int:
            h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
            h.new_dynamodb_resource().Table(TABLE).get_item(Key={"p": "k"})
            h.close()
            return 0

        try:
            pids = [run_child(child, FORKS[fork]) for _ in range(30)]
            codes = wait_children(pids, 60)
        finally:
            slow.release.set()
            builder.join(30)
        assert list(codes.values()) == [0] * 30, codes


def _client_sockets(port: int) -> set[int]:
    """Inodes of this process's TCP sockets connected to ``port`` (client side)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            continue
        try:
            with socket.socket(fileno=os.dup(int(fd))) as s:
                if s.type != socket.SOCK_STREAM or s.family != socket.AF_INET:
                    continue
                if s.getpeername()[1] == port:
                    inodes.add(int(target[8:-1]))
        except OSError:
            continue
    return inodes


@pytest.mark.parametrize("fork", list(FORKS), ids=list(FORKS))
def test_child_closes_inherited_sockets_on_first_use(
    cluster: Any, fork: str, tmp_path: Any
) -> None:
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client()
        for _ in range(6):
            client.get_item(TableName=TABLE, Key=KEY)
        inherited = _client_sockets(cluster.port)
        assert len(inherited) >= 3
        report = tmp_path / "child.txt"

        def child() -> int:
            # After os.fork() the at-fork hook has closed them already, before any use: a
            # child that never touches the Helper must not keep the parent's connections open.
            unused = _client_sockets(cluster.port) & inherited
            client.get_item(TableName=TABLE, Key=KEY)  # first use in the child
            used = _client_sockets(cluster.port) & inherited
            report.write_text(f"{len(unused)} {len(used)}")
            return 0

        codes = wait_children([run_child(child, FORKS[fork])], 60)
        assert list(codes.values()) == [0]
        unused, used = map(int, report.read_text().split())
        assert used == 0, "the child still holds its parent's connections after first use"
        if fork == "os.fork":
            assert unused == 0, "the child holds its parent's connections until first use"
        # The parent's connections were not disturbed by the child.
        client.get_item(TableName=TABLE, Key=KEY)


def test_close_from_a_signal_handler_while_building_a_client(cluster: Any) -> None:
    """SIGTERM-style handler calling close() while the same thread holds the Helper's lock."""
    key, secret = cluster_credentials(cluster)

    def child() -> int:
        session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret)
        closed: list[bool] = []
        with make_helper(cluster, credentials=None, session=session) as h:
            h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)

            def on_signal(signum: int, frame: Any) -> None:
                h.close()
                closed.append(True)

            signal.signal(signal.SIGUSR1, on_signal)
            session.events.register(
                "creating-client-class.dynamodb",
                lambda **_: os.kill(os.getpid(), signal.SIGUSR1),
            )
            client = h.new_dynamodb_client()  # the handler runs inside, lock held
            assert closed == [True]
            client.get_item(TableName=TABLE, Key=KEY)  # still usable after close()
        return 0

    codes = wait_children([run_child(child, _os_fork)], 60)
    assert list(codes.values()) == [0]


def test_close_while_other_threads_are_mid_request(cluster: Any) -> None:
    for node in cluster.nodes:
        node.inject_fault("latency", delay=0.05, count=10_000)
    outcomes: list[str] = []
    try:
        with make_helper(cluster) as h:
            client = h.new_dynamodb_client()
            client.get_item(TableName=TABLE, Key=KEY)
            stop = threading.Event()

            def run() -> None:
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        client.get_item(TableName=TABLE, Key=KEY)
                        outcomes.append("ok")
                    except botocore.exceptions.BotoCoreError as e:
                        outcomes.append(type(e).__name__)
                    except Exception as e:  # anything else is a failure of close()
                        outcomes.append(f"BAD {e!r}")

            threads = [threading.Thread(target=run, daemon=True) for _ in range(8)]
            for t in threads:
                t.start()
            for _ in range(20):
                time.sleep(0.02)
                h.close()
            stop.set()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads), "a request hung after close()"
    finally:
        for node in cluster.nodes:
            node.clear_faults()
    assert outcomes and not [o for o in outcomes if o.startswith("BAD")], outcomes
