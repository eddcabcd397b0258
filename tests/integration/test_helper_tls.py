"""https: CA trust, ignoring certificate errors, the TLS key log, and client certificates.

The emulated cluster serves certificates from a trustme CA that no system store trusts, so
verification is on by default and must fail until ``ca_file`` names that CA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from botocore.config import Config
from test_helper_support import (
    MTLS_CLIENT_CN,
    all_api_entries,
    api_counts,
    cleanup,
    localnodes_entries,
    make_helper,
    module_cluster,
    node_urls,
    unique_namespace,
)

from alternator_shm import DiscoveryError, Helper

USERS = {"tls-key": "tls-secret"}
TABLE = "tls_table"
KEY = {"p": {"S": "k"}}


cluster = module_cluster(nodes=3, users=USERS, backend="null", https=True)
pytestmark = pytest.mark.usefixtures("clean_cluster")


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


# -- client certificates (mTLS): the ``mtls`` node of conftest.py --------------------------------


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
            assert MTLS_CLIENT_CN in repr(server.peers[0])
        else:
            with pytest.raises(DiscoveryError):
                h.check_if_rack_datacenter_feature_is_supported()
            assert server.peers == []
    finally:
        h.close()
        cleanup(ns)
