"""HTTPS, process-per-node realism mode, the pytest fixture and the CLI."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import urllib3
from _emulator_helpers import client, create_table

from alternator_shm.emulator import (
    Cluster,
    DynamoDBLocalNotInstalled,
    DynamoDBLocalServer,
    find_dynamodb_local,
)


def test_https_with_ca_file() -> None:
    with Cluster(nodes=2, backend="null", https=True, users={"k": "s"}) as cluster:
        assert cluster.scheme == "https" and cluster.ca_file
        assert cluster.nodes[0].url.startswith("https://")
        trusted = urllib3.PoolManager(retries=False, ca_certs=cluster.ca_file)
        resp = trusted.request("GET", cluster.nodes[1].url + "/localnodes")
        assert json.loads(resp.data) == cluster.seeds
        with pytest.raises(urllib3.exceptions.SSLError):  # not trusted without the CA
            urllib3.PoolManager(retries=False).request("GET", cluster.nodes[0].url + "/")
        assert "TableNames" in client(cluster, cluster.nodes[0]).list_tables()


@pytest.mark.slow
def test_process_per_node_sigkill_and_sigstop() -> None:
    with Cluster(nodes=3, process_per_node=True, users={"k": "s"}) as cluster:
        # A generous read timeout: a loaded host can take seconds to answer through the node
        # processes, and a timed-out CreateTable retried is "Table already exists".
        c0, c1, c2 = (client(cluster, n, read_timeout=60) for n in cluster.nodes)
        create_table(c0, "pp")
        c1.put_item(TableName="pp", Item={"p": {"S": "a"}})
        assert c2.get_item(TableName="pp", Key={"p": {"S": "a"}})["Item"] == {"p": {"S": "a"}}
        runtime = cluster.nodes[2]._runtime
        pid = runtime.pid  # type: ignore[union-attr]
        assert psutil.Process(pid).cmdline()[2] == "alternator_shm.emulator.node"
        cluster.nodes[2].kill()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((cluster.seeds[2], cluster.port), timeout=2)
        cluster.nodes[1].pause()
        pid1 = cluster.nodes[1]._runtime.pid  # type: ignore[union-attr]
        assert psutil.Process(pid1).status() == psutil.STATUS_STOPPED
        cluster.nodes[1].resume()
        cluster.nodes[2].start()
        c2 = client(cluster, cluster.nodes[2])
        assert c2.get_item(TableName="pp", Key={"p": {"S": "a"}})["Item"] == {"p": {"S": "a"}}
        assert cluster.nodes[2].log[-1].operation == "GetItem"
        pids = [n._runtime.pid for n in cluster.nodes]  # type: ignore[union-attr]
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


@pytest.mark.alternator_cluster(nodes=2, backend="null", profile="2025.1")
def test_fixture_marker_kwargs(alternator_cluster: Cluster) -> None:
    assert len(alternator_cluster.nodes) == 2
    assert alternator_cluster.profile.name == "2025.1"
    assert alternator_cluster.users  # auth enforced with a random user by default
    assert "TableNames" in client(alternator_cluster, alternator_cluster.nodes[1]).list_tables()


def test_fixture_default(alternator_cluster: Cluster) -> None:
    assert len(alternator_cluster.seeds) == 3 and alternator_cluster.backend_name == "moto"
    key, _ = alternator_cluster.credentials
    assert alternator_cluster.users is not None and key in alternator_cluster.users


def test_cli_serves_every_node_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alternator_shm", "emulator", "--dc", "dc1:2", "--dc", "dc2:1",
         "--enforce-auth", "key:secret"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        info: dict[str, str] = {}
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("ready"):
                break
            name, sep, value = line.partition(": ")
            if sep:
                info[name.strip()] = value.strip()
        seeds, port = info["seeds"].split(","), int(info["port"])
        assert len(seeds) == 3 and info["credentials"].startswith("key:secret")

        class _C:
            ca_file = None
            credentials = ("key", "secret")

        class _N:
            def __init__(self, ip: str) -> None:
                self.url = f"http://{ip}:{port}"

        clients = [client(_C(), _N(ip)) for ip in seeds]  # type: ignore[arg-type]
        create_table(clients[0], "cli")
        for i, c in enumerate(clients):
            c.put_item(TableName="cli", Item={"p": {"S": str(i)}})
        for c in clients:
            assert c.scan(TableName="cli")["Count"] == 3
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert not any(ch.is_running() and ch.status() != "zombie" for ch in children)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((seeds[0], port), timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dynamodb_local_backend() -> None:
    try:
        find_dynamodb_local()
    except DynamoDBLocalNotInstalled as err:
        pytest.skip(str(err))
    with Cluster(nodes=2, backend="dynamodb-local") as cluster:
        c0, c1 = (client(cluster, n, read_timeout=30) for n in cluster.nodes)
        create_table(c0, "ddbl")
        c0.put_item(TableName="ddbl", Item={"p": {"S": "a"}})
        assert c1.get_item(TableName="ddbl", Key={"p": {"S": "a"}})["Item"] == {"p": {"S": "a"}}


@pytest.mark.parametrize("process_per_node", [False, True])
def test_clusters_sharing_one_dynamodb_local_are_isolated(
    dynamodb_local: DynamoDBLocalServer, process_per_node: bool
) -> None:
    with (
        Cluster(nodes=2, backend="dynamodb-local", dynamodb_local=dynamodb_local) as one,
        Cluster(
            nodes=2,
            backend="dynamodb-local",
            dynamodb_local=dynamodb_local,
            process_per_node=process_per_node,
        ) as two,
    ):
        a, b = (
            client(one, one.nodes[0], read_timeout=30),
            client(two, two.nodes[1], read_timeout=30),
        )
        create_table(a, "iso")
        assert "iso" not in b.list_tables()["TableNames"]
        create_table(b, "iso")  # no ResourceInUseException: a database of its own
        b.put_item(TableName="iso", Item={"p": {"S": "x"}})
        assert client(two, two.nodes[0]).get_item(TableName="iso", Key={"p": {"S": "x"}})["Item"]
        assert "Item" not in a.get_item(TableName="iso", Key={"p": {"S": "x"}})
    with pytest.raises(ValueError):
        Cluster(nodes=1, backend="moto", dynamodb_local=dynamodb_local)
