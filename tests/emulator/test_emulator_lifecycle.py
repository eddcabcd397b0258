"""Node control and gossip view: kill, pause, drain, restart, join, set_view (§7.3)."""

from __future__ import annotations

import json
import socket
import time

import botocore.exceptions
import pytest
import urllib3
from _emulator_helpers import client, create_table, get

from alternator_shm.emulator import Cluster, Node


def _listed(cluster: Cluster, node: int = 0) -> list[str]:
    return list(json.loads(get(cluster.nodes[node].url + "/localnodes").data))


def _refused(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Accepted, then reset before connect() returned (the "reset" hold on a busy host):
        # the port is open, so not refused.
        return False
    return False


def test_data_shared_across_nodes_and_restart() -> None:
    with Cluster(nodes=3) as cluster:
        c0, c1, c2 = (client(cluster, n) for n in cluster.nodes)
        create_table(c0, "shared")
        c1.put_item(TableName="shared", Item={"p": {"S": "k"}, "v": {"N": "7"}})
        assert c2.get_item(TableName="shared", Key={"p": {"S": "k"}})["Item"]["v"] == {"N": "7"}
        cluster.nodes[2].restart()
        c2 = client(cluster, cluster.nodes[2])
        assert c2.get_item(TableName="shared", Key={"p": {"S": "k"}})["Item"]["v"] == {"N": "7"}
        with Cluster(nodes=1) as other:  # another cluster's storage is separate
            assert "shared" not in client(other, other.nodes[0]).list_tables()["TableNames"]


def test_kill_refuses_and_disappears_after_delay() -> None:
    # The delay must outlast the first checks below on a loaded machine (no timing race).
    with Cluster(nodes=3, backend="null", failure_detect_delay=3.0) as cluster:
        victim = cluster.nodes[2]
        victim.kill()
        assert victim.state == "DOWN"
        assert _refused(victim.ip, cluster.port)
        assert victim.ip in _listed(cluster)  # the failure detector has not noticed yet
        deadline = time.monotonic() + 10
        while victim.ip in _listed(cluster) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _listed(cluster) == cluster.seeds[:2]
        victim.start()
        assert victim.state == "NORMAL"
        assert _listed(cluster) == cluster.seeds


def test_kill_resets_in_flight_connection() -> None:
    with Cluster(nodes=1, backend="null") as cluster:
        node = cluster.nodes[0]
        node.inject_fault("latency", delay=30)
        pool = urllib3.HTTPConnectionPool(node.ip, cluster.port, retries=False, timeout=20)
        import threading

        errors: list[BaseException] = []

        def call() -> None:
            try:
                pool.request("POST", "/", body=b"{}")
            except BaseException as err:
                errors.append(err)

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 5
        while not node.log and time.monotonic() < deadline:  # wait until it is in flight
            time.sleep(0.02)
            if node.fault_active("latency") and pool.num_connections:
                break
        time.sleep(0.2)
        node.kill()
        t.join(10)
        assert errors and isinstance(errors[0], urllib3.exceptions.ProtocolError)
        assert "reset" in str(errors[0]).lower()


def test_pause_times_out_then_resume() -> None:
    with Cluster(nodes=2, backend="null") as cluster:
        node = cluster.nodes[1]
        node.pause()
        assert node.state == "PAUSED"
        c = client(cluster, node, read_timeout=0.5)
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            c.list_tables()
        assert node.ip not in _listed(cluster)  # failure_detect_delay = 0
        node.resume()
        assert "TableNames" in c.list_tables()
        assert node.ip in _listed(cluster)


def test_drain_is_removed_immediately_even_with_delay() -> None:
    with Cluster(nodes=3, backend="null", failure_detect_delay=60) as cluster:
        cluster.nodes[1].drain()
        assert cluster.nodes[1].state == "DRAINED"
        assert _refused(cluster.seeds[1], cluster.port)
        assert _listed(cluster) == [cluster.seeds[0], cluster.seeds[2]]


def test_join_keeps_port_closed_until_delay() -> None:
    with Cluster(nodes=2, backend="null") as cluster:
        node = cluster.add_node(dc="dc1", rack="rack3", join_delay=3.0)  # outlasts the checks
        assert node.state == "JOINING"
        assert _refused(node.ip, cluster.port)
        assert node.ip not in _listed(cluster)
        deadline = time.monotonic() + 10
        while node.state != "NORMAL" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.state == "NORMAL"
        assert _listed(cluster) == cluster.seeds
        assert len(cluster.seeds) == 3
        node.decommission()
        assert node.ip not in cluster.seeds


def test_set_view_and_rpc_address() -> None:
    with Cluster(nodes=3, backend="null", rpc_addresses=[None, None, "10.0.0.3"]) as cluster:
        a, b, _ = cluster.seeds
        assert _listed(cluster) == [a, b, "10.0.0.3"]
        cluster.nodes[0].set_view([a, "10.9.9.9"])
        assert _listed(cluster, 0) == [a, "10.9.9.9"]
        assert _listed(cluster, 1) == [a, b, "10.0.0.3"]
        cluster.nodes[0].set_view(None)
        assert _listed(cluster, 0) == [a, b, "10.0.0.3"]


def test_stop_leaves_no_thread() -> None:
    import threading

    before = set(threading.enumerate())
    cluster = Cluster(nodes=2, backend="null")
    client(cluster, cluster.nodes[0]).list_tables()
    cluster.nodes[1].pause()
    cluster.stop()
    assert set(threading.enumerate()) - before == set()


def _reset_on_request(ip: str, port: int) -> bool:
    """True when the port accepts a connection and then resets (or closes) it unanswered."""
    try:
        sock = socket.create_connection((ip, port), timeout=5)
    except ConnectionRefusedError:
        return False
    except ConnectionResetError:
        return True  # accepted and reset before connect() even returned
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(100) == b""
    except ConnectionError:  # reset, or a broken pipe when the reset came first
        return True
    finally:
        sock.close()


def _wait_state(node: Node, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while node.state != state and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.state == state


@pytest.mark.parametrize("process_per_node", [False, True])
def test_listed_before_serving_until_serve(process_per_node: bool) -> None:
    with Cluster(nodes=2, backend="null", process_per_node=process_per_node) as cluster:
        node = cluster.add_node(dc="dc1", rack="rack3", serve_delay=None)
        _wait_state(node, "LISTED_NOT_SERVING")
        assert node.ip in _listed(cluster, 0)  # gossip NORMAL: the others list it...
        assert node.ip in _listed(cluster, 1)
        assert _refused(node.ip, cluster.port)  # ...but its port is not open yet
        node.serve()
        assert node.state == "NORMAL"
        assert "TableNames" in client(cluster, node).list_tables()
        assert node.log[-1].operation == "ListTables"


def test_listed_before_serving_reset_mode_and_hold_on_a_running_node() -> None:
    with Cluster(nodes=2, backend="null") as cluster:
        node = cluster.nodes[1]
        node.hold_serving(mode="reset")
        assert node.state == "LISTED_NOT_SERVING"
        assert node.ip in _listed(cluster, 0)
        assert not _refused(node.ip, cluster.port)
        assert _reset_on_request(node.ip, cluster.port)
        assert node.log == []  # nothing was answered
        node.serve()
        assert "TableNames" in client(cluster, node).list_tables()
        with pytest.raises(ValueError):
            node.hold_serving(mode="sometimes")  # type: ignore[arg-type]


def test_serve_does_not_revive_a_killed_node() -> None:
    with Cluster(nodes=2, backend="null") as cluster:
        node = cluster.nodes[1]
        node.kill()
        with pytest.raises(RuntimeError, match="DOWN"):
            node.serve()
        assert node.state == "DOWN" and _refused(node.ip, cluster.port)
        node.start()
        node.serve()  # serving already: a no-op
        assert node.state == "NORMAL"
        assert "TableNames" in client(cluster, node).list_tables()


def test_join_then_serve_delay_then_serving() -> None:
    with Cluster(nodes=2, backend="null") as cluster:
        node = cluster.add_node(join_delay=0.3, serve_delay=0.5)
        assert node.state == "JOINING" and node.ip not in _listed(cluster)
        _wait_state(node, "LISTED_NOT_SERVING")
        assert node.ip in _listed(cluster) and _refused(node.ip, cluster.port)
        _wait_state(node, "NORMAL")
        assert "TableNames" in client(cluster, node).list_tables()


def test_kill_while_listed_before_serving_stops_listing_it() -> None:
    with Cluster(nodes=2, backend="null") as cluster:
        node = cluster.add_node(serve_delay=None, before_serving="reset")
        _wait_state(node, "LISTED_NOT_SERVING")
        node.kill()
        assert node.state == "DOWN"
        assert _refused(node.ip, cluster.port)
        assert node.ip not in _listed(cluster)  # failure_detect_delay = 0
        node.start()
        assert node.state == "NORMAL" and node.ip in _listed(cluster)
