"""The operator commands: ``status``, ``cleanup``, ``check``, ``--help`` and ``--version``.

``status`` and ``cleanup`` are checked against a namespace made by a Helper in another process,
both while that process is attached and after it exited; ``check`` against the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from alternator_shm import __version__
from alternator_shm.emulator import Cluster
from alternator_shm.fleet import cleanup

pytestmark = pytest.mark.timeout(60)

CALLS = 6

# A worker that makes CALLS calls, reports, then stays attached until its stdin closes.
_WORKER = textwrap.dedent(
    """
    import json, sys
    from alternator_shm import Helper
    seeds, port, key, secret, ns = sys.argv[1].split(","), int(sys.argv[2]), *sys.argv[3:6]
    h = Helper(seeds, port=port, credentials=(key, secret), namespace=ns,
               refresh_interval=0.3)
    ddb = h.new_dynamodb_client()
    for i in range(CALLS):
        ddb.get_item(TableName="t", Key={"p": {"S": str(i)}})
    h.update_live_nodes()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    h.close()
    """
).replace("CALLS", str(CALLS))


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alternator_shm", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    topology = [("dc1", "rack1"), ("dc1", "rack2"), ("dc1", "rack1")]
    with Cluster(nodes=3, topology=topology, users={"cli": "cli-secret"},
                 backend="null") as c:
        yield c


@pytest.fixture
def namespace() -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex}"
    yield ns
    cleanup(ns)


def _start_worker(cluster: Cluster, namespace: str) -> subprocess.Popen[str]:
    key, secret = cluster.credentials
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, ",".join(cluster.seeds), str(cluster.port), key,
         secret, namespace],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"worker failed: {proc.communicate(timeout=10)[1][-3000:]}")
    assert json.loads(line) == {"ready": True}
    return proc


def _stop_worker(proc: subprocess.Popen[str]) -> None:
    try:
        proc.communicate(input="\n", timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _status(namespace: str) -> dict[str, Any] | None:
    out = _cli("status", "--json", "--namespace", namespace)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert all(e["namespace"] == namespace for e in entries)
    return entries[0] if entries else None


def test_status_shows_a_namespace_while_attached_and_after_exit(
    cluster: Cluster, namespace: str
) -> None:
    proc = _start_worker(cluster, namespace)
    try:
        live = _status(namespace)
        assert live is not None
        assert live["leader_pid"] == proc.pid
        assert live["generation"] >= 1
        assert sorted(live["nodes"]) == sorted(n.url for n in cluster.nodes)
        assert live["picks"] == CALLS
        per_node = {url: v["picks"] for url, v in live["per_node"].items()}
        assert sorted(per_node.values()) == [CALLS // 3] * 3
        assert not any(v["quarantined"] for v in live["per_node"].values())
        human = _cli("status", "--namespace", namespace)
        assert human.returncode == 0
        assert namespace in human.stdout and str(proc.pid) in human.stdout
        for node in cluster.nodes:
            assert node.url in human.stdout
    finally:
        _stop_worker(proc)
    assert proc.returncode == 0
    # Nobody is attached any more; the table and counters are still readable.
    after = _status(namespace)
    assert after is not None
    assert after["leader_pid"] in (None, proc.pid)  # never a live impostor
    assert after["generation"] == live["generation"]
    assert after["picks"] == CALLS
    assert sorted(after["nodes"]) == sorted(live["nodes"])


def test_cleanup_removes_only_unused_state(cluster: Cluster, namespace: str) -> None:
    proc = _start_worker(cluster, namespace)
    try:
        kept = _cli("cleanup", "--namespace", namespace)
        assert kept.returncode == 0
        assert _status(namespace) is not None, "cleanup removed a segment in use"
        # The attached worker still routes through its shared table.
        assert _status(namespace)["picks"] == CALLS  # type: ignore[index]
    finally:
        _stop_worker(proc)
    removed = _cli("cleanup", "--namespace", namespace)
    assert removed.returncode == 0
    assert "removed" in removed.stdout
    assert _status(namespace) is None
    again = _cli("cleanup", "--namespace", namespace)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_status_when_nothing_matches() -> None:
    out = _cli("status", "--namespace", f"t-none-{uuid.uuid4().hex}")
    assert out.returncode == 0
    assert "no shared alternator-shm state" in out.stdout
    js = _cli("status", "--json", "--namespace", f"t-none-{uuid.uuid4().hex}")
    assert json.loads(js.stdout) == []


def test_check_good_and_bad_datacenter(cluster: Cluster) -> None:
    seed = cluster.seeds[0]
    good = _cli("check", seed, "--port", str(cluster.port), "--dc", "dc1", "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["scope_ok"] is True
    assert report["rack_datacenter_feature_supported"] is True
    assert sorted(report["live_nodes"]) == sorted(n.url for n in cluster.nodes)

    rack = _cli("check", seed, "--port", str(cluster.port), "--dc", "dc1", "--rack", "rack2")
    assert rack.returncode == 0, rack.stdout
    assert "OK" in rack.stdout

    bad = _cli("check", seed, "--port", str(cluster.port), "--dc", "nosuchdc")
    assert bad.returncode != 0
    assert "nosuchdc" in bad.stdout

    bad_rack = _cli("check", seed, "--port", str(cluster.port), "--dc", "dc1",
                    "--rack", "nosuchrack", "--json")
    assert bad_rack.returncode != 0
    assert json.loads(bad_rack.stdout)["scope_ok"] is False


def test_check_unreachable_node() -> None:
    # A loopback address with nothing listening: refused at once.
    out = _cli("check", "127.0.0.1", "--port", "9", "--json")
    assert out.returncode != 0
    assert json.loads(out.stdout)["live_nodes"] == []


def test_help_and_version() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("demo", "emulator", "status", "check", "cleanup"):
        assert command in out.stdout
    version = _cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"alternator-shm {__version__}"
    for command in ("demo", "status", "check", "cleanup"):
        sub = _cli(command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)
        assert "usage:" in sub.stdout


def test_console_script_matches_module() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "alternator-shm")
    if not os.path.exists(exe):
        pytest.skip("console script not installed next to this interpreter")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == f"alternator-shm {__version__}"


def test_missing_command_is_an_error() -> None:
    out = _cli()
    assert out.returncode == 2
    assert "usage:" in out.stderr
