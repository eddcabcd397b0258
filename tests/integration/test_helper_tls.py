"""https: CA trust, ignoring certificate errors, the TLS key log, and client certificates.

The emulated cluster serves certificates from a trustme CA that no system store trusts, so
verification is on by default and must fail until ``ca_file`` names that CA.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import trustme
from botocore.config import Config
from test_helper_support import (
    all_api_entries,
    api_counts,
    cleanup,
    localnodes_entries,
    make_helper,
    node_urls,
    unique_namespace,
)

from alternator_shm import DiscoveryError, Helper
from alternator_shm.emulator import Cluster

USERS = {"tls-key": "tls-secret"}
TABLE = "tls_table"
KEY = {"p": {"S": "k"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with Cluster(nodes=3, users=USERS, backend="null", https=True) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean(cluster: Any) -> None:
    cluster.clear_logs()


def _calls(helper: Helper, count: int) -> None:
    client = helper.new_dynamodb_client()
    for _ in range(count):
        client.get_item(TableName=TABLE, Key=KEY)


def test_https_with_ca_file(cluster: Any) -> None:
    assert cluster.scheme == "https"
    with make_helper(cluster, ca_file=cluster.ca_file) as h:
        assert sorted(h.live_nodes()) == node_urls(cluster)
        assert all(u.startswith("https://") for u in h.live_nodes())
        _calls(h, 6)
    assert set(api_counts(cluster).values()) == {2}
    assert all(e.auth_ok for _, e in all_api_entries(cluster))


def test_https_fails_without_ca_file(cluster: Any) -> None:
    config = Config(retries={"total_max_attempts": 1})
    with make_helper(cluster, ca_file=None, botocore_config=config) as h:
        with pytest.raises(DiscoveryError):
            h.check_if_rack_datacenter_feature_is_supported()
        with pytest.raises(botocore.exceptions.SSLError):
            _calls(h, 1)
    # The handshake failed: no HTTP request ever reached a node.
    assert all(not n.log for n in cluster.nodes)


def test_https_ignore_server_certificate_error(cluster: Any) -> None:
    with make_helper(cluster, ca_file=None, ignore_server_certificate_error=True) as h:
        assert sorted(h.live_nodes()) == node_urls(cluster)
        _calls(h, 3)
    assert set(api_counts(cluster).values()) == {1}
    assert any(localnodes_entries(n) for n in cluster.nodes)


def _client_randoms(path: Path) -> set[str]:
    """One client random per TLS connection (TLS 1.2 CLIENT_RANDOM or TLS 1.3 secrets)."""
    if not path.exists():
        return set()
    randoms = set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            randoms.add(parts[1])
    return randoms


def test_key_log_file_gets_discovery_and_api_connections(cluster: Any, tmp_path: Path) -> None:
    path = tmp_path / "sslkeys.log"
    with make_helper(cluster, key_log_file=str(path)) as h:
        h.update_live_nodes()
        discovery = _client_randoms(path)
        assert discovery, "discovery's TLS connection was not key-logged"
        lines = path.read_text().splitlines()
        assert any(
            line.startswith(("CLIENT_RANDOM ", "CLIENT_HANDSHAKE_TRAFFIC_SECRET "))
            for line in lines
        )
        assert not any(all_api_entries(cluster))
        _calls(h, 3)  # one new TLS connection per node
        api = _client_randoms(path) - discovery
        assert len(api) >= 3, "API connections were not key-logged"
    assert set(api_counts(cluster).values()) == {1}


# -- client certificates (mTLS) ----------------------------------------------------------------
# The emulator does not ask for client certificates, so a stdlib TLS server that REQUIRES one
# plays a node here: it answers /localnodes and records the certificate it was shown.


class _LocalnodesHandler(BaseHTTPRequestHandler):
    server: _MTLSServer

    def do_GET(self) -> None:
        self.server.peers.append(self.connection.getpeercert())  # type: ignore[attr-defined]
        body = json.dumps([self.server.server_address[0]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _MTLSServer(ThreadingHTTPServer):
    daemon_threads = True
    peers: list[Any]


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[_MTLSServer, str, tuple[str, str]]]:
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client = ca.issue_cert("client.example", common_name="alternator-shm-test-client")
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_path))
    client.private_key_pem.write_to_path(str(key_path))

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    server = _MTLSServer(("127.0.0.1", 0), _LocalnodesHandler)
    server.peers = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server, str(ca_path), (str(cert_path), str(key_path))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("with_cert", [True, False], ids=["client-cert", "no-client-cert"])
def test_client_cert_is_presented(mtls: Any, with_cert: bool) -> None:
    server, ca_path, cert = mtls
    ns = unique_namespace()
    h = Helper(
        ["127.0.0.1"],
        port=server.server_address[1],
        scheme="https",
        ca_file=ca_path,
        client_cert=cert if with_cert else None,
        namespace=ns,
    )
    try:
        if with_cert:
            # This server ignores ?rack=, like an old Alternator: the probe says unsupported.
            assert h.check_if_rack_datacenter_feature_is_supported() is False
            assert server.peers
            assert "alternator-shm-test-client" in repr(server.peers[0])
        else:
            with pytest.raises(DiscoveryError):
                h.check_if_rack_datacenter_feature_is_supported()
            assert server.peers == []
    finally:
        h.close()
        cleanup(ns)
