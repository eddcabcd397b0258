"""What a new user meets first, outside the CLI: the Makefile, and a scheme mistake.

* ``make demo`` / ``make test`` install into a project-local virtual environment (or the
  active one), never with the bare interpreter's pip (checked with ``make -n``, which runs
  nothing).
* ``scheme="https"`` against a plain-HTTP node is a clear TLS error at once: the node answers
  the ClientHello with Seastar's "400 Can't parse the request" and closes, so the client does
  not wait for a read timeout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from alternator_shm import Helper
from alternator_shm.emulator import Cluster
from alternator_shm.fleet import cleanup

ROOT = Path(__file__).resolve().parents[1]


def _make_n(target: str, virtual_env: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    if virtual_env is not None:
        env["VIRTUAL_ENV"] = virtual_env
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_installs_into_a_virtual_environment(target: str) -> None:
    own = _make_n(target, None)
    assert "-m venv .venv" in own
    pip_lines = [ln for ln in own.splitlines() if "pip install" in ln]
    assert pip_lines and all(ln.startswith(".venv/bin/python -m pip") for ln in pip_lines), own
    active = _make_n(target, "/opt/some-venv")
    assert "-m venv" not in active
    pip_lines = [ln for ln in active.splitlines() if "pip install" in ln]
    assert pip_lines and all(ln.startswith("/opt/some-venv/bin/python -m pip") for ln in pip_lines)
    expected = "'.[test,lint]'" if target == "test" else "'.[emulator]'"
    assert all(expected in ln for ln in pip_lines), pip_lines


@pytest.fixture(scope="module")
def plain_cluster() -> Iterator[Cluster]:
    with Cluster(nodes=2, backend="null", users={"k": "s"}) as cluster:
        yield cluster


def test_a_plain_http_node_answers_a_tls_hello_at_once(plain_cluster: Cluster) -> None:
    hello = bytes.fromhex("16030100a5010000a10303") + os.urandom(32)
    with socket.create_connection((plain_cluster.seeds[0], plain_cluster.port), 10) as sock:
        sock.sendall(hello)
        reply = sock.recv(4096)  # within the 10 s socket timeout, not never
    assert reply.startswith(b"HTTP/1.1 400 Bad Request"), reply
    assert reply.endswith(b"Can't parse the request")


def test_https_against_a_plain_http_node_is_a_tls_error(plain_cluster: Cluster) -> None:
    ns = f"t-{uuid.uuid4().hex}"
    helper = Helper(plain_cluster.seeds, port=plain_cluster.port, scheme="https",
                    credentials=plain_cluster.credentials, namespace=ns)
    try:
        with pytest.raises(botocore.exceptions.SSLError, match="WRONG_VERSION_NUMBER"):
            helper.new_dynamodb_client().list_tables()
    finally:
        helper.close()
        cleanup(ns)
