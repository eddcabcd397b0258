"""Discovery against the emulated Alternator cluster: scopes, fallback, checks, faults, TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_helper_support import module_cluster

from alternator_shm.discovery import Discovery
from alternator_shm.errors import ConfigurationError, DiscoveryError
from alternator_shm.transport import Transport, TransportOptions

emulator = pytest.importorskip("alternator_shm.emulator", reason="emulator not available")
Cluster: Any = emulator.Cluster

TOPOLOGY = [
    ("dc1", "rack1"),
    ("dc1", "rack1"),
    ("dc1", "rack2"),
    ("dc2", "rack1"),
    ("dc2", "rack2"),
]


cluster = module_cluster(topology=TOPOLOGY, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


def _discovery(c: Any, seeds: list[int] | None = None, **kwargs: Any) -> Discovery:
    options = kwargs.pop("transport", None) or TransportOptions(scheme=c.scheme, ca_file=c.ca_file)
    hosts = [c.nodes[i].ip for i in (seeds if seeds is not None else [0])]
    return Discovery(hosts, scheme=c.scheme, port=c.port, transport=Transport(options), **kwargs)


def _urls(c: Any, *indexes: int) -> list[str]:
    return sorted(c.nodes[i].url for i in indexes)


def test_scopes(cluster: Any) -> None:
    assert _discovery(cluster, datacenter="dc1").fetch() == _urls(cluster, 0, 1, 2)
    assert _discovery(cluster, datacenter="dc2").fetch() == _urls(cluster, 3, 4)
    assert _discovery(cluster, datacenter="dc1", rack="rack1").fetch() == _urls(cluster, 0, 1)
    # rack without dc: that rack in the contacted node's dc
    assert _discovery(cluster, seeds=[3], rack="rack2").fetch() == _urls(cluster, 4)


def test_cluster_scope_is_the_union_of_reachable_dcs(cluster: Any) -> None:
    assert _discovery(cluster, seeds=[0]).fetch() == _urls(cluster, 0, 1, 2)
    assert _discovery(cluster, seeds=[0, 4]).fetch() == _urls(cluster, 0, 1, 2, 3, 4)
    # A known node from another dc counts as a candidate too.
    d = _discovery(cluster, seeds=[0])
    assert d.fetch(known=[cluster.nodes[3].url]) == _urls(cluster, 0, 1, 2, 3, 4)


def test_fallback_rack_then_dc_then_cluster(cluster: Any) -> None:
    assert _discovery(cluster, datacenter="dc2", rack="nope").fetch() == _urls(cluster, 3, 4)
    assert _discovery(cluster, seeds=[0, 3], datacenter="nope").fetch() == _urls(
        cluster, 0, 1, 2, 3, 4
    )
    result = _discovery(cluster, datacenter="nope", fallback=False).fetch()
    assert result == [] and result.empty and "datacenter 'nope'" in result.note


def test_checks(cluster: Any) -> None:
    _discovery(cluster, datacenter="dc2", rack="rack2").check_if_rack_and_datacenter_set_correctly()
    with pytest.raises(ConfigurationError, match="datacenter 'wrongDC'"):
        _discovery(cluster, datacenter="wrongDC").check_if_rack_and_datacenter_set_correctly()
    with pytest.raises(ConfigurationError, match="rack 'wrongRack'"):
        _discovery(
            cluster, datacenter="dc1", rack="wrongRack"
        ).check_if_rack_and_datacenter_set_correctly()
    assert _discovery(cluster).check_if_rack_datacenter_feature_is_supported() is True


@pytest.mark.parametrize("profile, supported", [("6.2", False), ("2025.1", True)])
def test_feature_check_by_server_version(profile: str, supported: bool) -> None:
    with Cluster(topology=TOPOLOGY[:3], backend="null", profile=profile) as old:
        d = _discovery(old, datacenter="dc1", rack="rack2")
        assert d.check_if_rack_datacenter_feature_is_supported() is supported
        if not supported:
            # An old server ignores ?rack=: the "rack" answer is the whole local dc.
            assert d.fetch() == _urls(old, 0, 1, 2)


def test_garbage_and_errors_skip_to_the_next_candidate(cluster: Any) -> None:
    cluster.nodes[0].inject_fault("localnodes_garbage")
    cluster.nodes[1].inject_fault("localnodes_500")
    d = _discovery(cluster, seeds=[0, 1, 2], datacenter="dc1")
    assert d.fetch() == _urls(cluster, 0, 1, 2)
    only_bad = _discovery(cluster, seeds=[0, 1], datacenter="dc1")
    with pytest.raises(DiscoveryError) as info:
        only_bad.fetch()
    assert "HTTP 500" in str(info.value) and cluster.nodes[0].url in str(info.value)


def test_killed_node_leaves_the_list_and_fails_the_probe() -> None:
    with Cluster(nodes=3, backend="null") as c:
        d = _discovery(c, seeds=[0])
        assert d.probe(c.nodes[2].url) is True
        c.nodes[2].kill()
        assert d.fetch() == _urls(c, 0, 1)
        assert d.probe(c.nodes[2].url) is False
        # The known (dead) node is asked first, the seed still answers.
        assert d.fetch(known=[c.nodes[2].url]) == _urls(c, 0, 1)


def test_https_discovery_writes_the_key_log(tmp_path: Path) -> None:
    with Cluster(nodes=2, backend="null", https=True) as c:
        key_log = tmp_path / "keys.log"
        options = TransportOptions(scheme="https", ca_file=c.ca_file, key_log_file=str(key_log))
        assert _discovery(c, transport=options).fetch() == _urls(c, 0, 1)
        labels = {line.split()[0] for line in key_log.read_text().splitlines() if line.strip()}
        assert labels & {"CLIENT_RANDOM", "CLIENT_TRAFFIC_SECRET_0"}
        # Verification is on by default: without the CA nothing is trusted.
        with pytest.raises(DiscoveryError, match="SSLError"):
            _discovery(c, transport=TransportOptions(scheme="https")).fetch()
        insecure = TransportOptions(scheme="https", ignore_server_certificate_error=True)
        assert _discovery(c, transport=insecure).fetch() == _urls(c, 0, 1)
