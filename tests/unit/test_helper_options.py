"""Helper options: validation, laziness and pickling (no cluster needed)."""

from __future__ import annotations

import pickle
import threading
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials

from alternator_shm import ConfigurationError, Helper


def _ns() -> str:
    return f"t-{uuid.uuid4().hex}"


BAD_OPTIONS: list[tuple[str, Any, dict[str, Any]]] = [
    ("seeds-empty", [], {}),
    ("seeds-string", "127.0.0.1", {}),
    ("seed-not-a-string", [42], {}),
    ("seed-blank", [" "], {}),
    ("seed-with-scheme", ["http://127.0.0.1"], {}),
    ("seed-with-port", ["127.0.0.1:8000"], {}),
    ("seed-with-path", ["host/path"], {}),
    ("seed-garbage", ["no spaces allowed"], {}),
    ("port-zero", ["127.0.0.1"], {"port": 0}),
    ("port-too-big", ["127.0.0.1"], {"port": 70000}),
    ("port-string", ["127.0.0.1"], {"port": "8000"}),
    ("port-bool", ["127.0.0.1"], {"port": True}),
    ("scheme-ftp", ["127.0.0.1"], {"scheme": "ftp"}),
    ("scheme-upper", ["127.0.0.1"], {"scheme": "HTTP"}),
    ("datacenter-empty", ["127.0.0.1"], {"datacenter": ""}),
    ("datacenter-int", ["127.0.0.1"], {"datacenter": 1}),
    ("rack-empty", ["127.0.0.1"], {"rack": ""}),
    ("fallback-not-bool", ["127.0.0.1"], {"fallback": "yes"}),
    ("credentials-one", ["127.0.0.1"], {"credentials": ("only-key",)}),
    ("credentials-empty-secret", ["127.0.0.1"], {"credentials": ("key", "")}),
    ("credentials-dict", ["127.0.0.1"], {"credentials": {"key": "secret"}}),
    ("region-empty", ["127.0.0.1"], {"region": ""}),
    ("region-none", ["127.0.0.1"], {"region": None}),
    ("optimize-not-bool", ["127.0.0.1"], {"optimize_headers": 1}),
    ("ignore-cert-not-bool", ["127.0.0.1"], {"ignore_server_certificate_error": "true"}),
    ("ca-file-missing", ["127.0.0.1"], {"ca_file": "/nonexistent/ca.pem"}),
    ("client-cert-one", ["127.0.0.1"], {"client_cert": ("/etc/hostname",)}),
    ("client-cert-missing", ["127.0.0.1"], {"client_cert": ("/nonexistent.crt", "/no.key")}),
    ("request-compression-negative", ["127.0.0.1"], {"request_compression": -1}),
    ("request-compression-bool", ["127.0.0.1"], {"request_compression": True}),
    ("request-compression-float", ["127.0.0.1"], {"request_compression": 1.5}),
    ("response-compression-not-bool", ["127.0.0.1"], {"response_compression": None}),
    ("user-agent-bytes", ["127.0.0.1"], {"user_agent": b"ua"}),
    ("refresh-zero", ["127.0.0.1"], {"refresh_interval": 0}),
    ("refresh-negative", ["127.0.0.1"], {"refresh_interval": -1.0}),
    ("refresh-string", ["127.0.0.1"], {"refresh_interval": "1"}),
    ("idle-refresh-zero", ["127.0.0.1"], {"idle_refresh_interval": 0}),
    ("namespace-empty", ["127.0.0.1"], {"namespace": ""}),
    ("namespace-int", ["127.0.0.1"], {"namespace": 7}),
    ("botocore-config-dict", ["127.0.0.1"], {"botocore_config": {"retries": {}}}),
    ("session-botocore", ["127.0.0.1"], {"session": object()}),
]


@pytest.mark.parametrize(
    ("seeds", "options"), [(s, o) for _, s, o in BAD_OPTIONS], ids=[i for i, _, _ in BAD_OPTIONS]
)
def test_bad_options_raise_configuration_error(seeds: Any, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Helper(seeds, **options)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Helper(["127.0.0.1"], scheme="gopher")  # type: ignore[arg-type]


def test_good_options_are_accepted_without_side_effects(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until first use")
    threads = threading.active_count()
    h = Helper(
        ["127.0.0.1", "[::1]", "Node-1.example.com"],
        port=9999,
        scheme="https",
        datacenter="dc1",
        rack="r1",
        fallback=False,
        credentials=Credentials("k", "s"),
        region="anything",
        optimize_headers=True,
        key_log_file=tmp_path / "keys.log",
        ignore_server_certificate_error=True,
        ca_file=ca,
        client_cert=(str(ca), str(ca)),
        request_compression=0,
        response_compression=True,
        user_agent="",
        refresh_interval=0.5,
        idle_refresh_interval=3,
        namespace=_ns(),
        botocore_config=Config(retries={"max_attempts": 2}),
    )
    # Built at import time in a pre-fork master: no thread, no socket, no file.
    assert threading.active_count() == threads
    assert not (tmp_path / "keys.log").exists()
    assert "9999" in repr(h) and "'https'" in repr(h)
    h.close()  # closing an unused Helper is harmless


def test_seeds_are_normalised() -> None:
    a = Helper(["127.0.0.2", "127.0.0.1", "127.0.0.1"], port=1234)
    b = Helper(["127.0.0.1", "127.0.0.2"], port=1234)
    assert a.namespace == b.namespace  # same cluster identity -> same default namespace
    assert "::1" in repr(Helper(["[::1]"]))


def test_default_namespace_is_derived_from_cluster_identity() -> None:
    base = Helper(["127.0.0.1"], port=1234)
    assert base.namespace == Helper(["127.0.0.1"], port=1234).namespace
    others = [
        Helper(["127.0.0.2"], port=1234),
        Helper(["127.0.0.1"], port=1235),
        Helper(["127.0.0.1"], port=1234, scheme="https"),
        Helper(["127.0.0.1"], port=1234, datacenter="dc1"),
        Helper(["127.0.0.1"], port=1234, datacenter="dc1", rack="r1"),
    ]
    names = {h.namespace for h in others} | {base.namespace}
    assert len(names) == len(others) + 1
    # Options that do not change which nodes are routed to do not split the shared state.
    assert Helper(["127.0.0.1"], port=1234, optimize_headers=True).namespace == base.namespace
    assert Helper(["127.0.0.1"], port=1234, namespace="mine").namespace == "mine"


def test_helper_pickles_with_its_options() -> None:
    ns = _ns()
    h = Helper(
        ["127.0.0.1", "127.0.0.3"],
        port=4321,
        datacenter="dc9",
        credentials=("k", "s"),
        request_compression=10,
        refresh_interval=0.3,
        namespace=ns,
        botocore_config=Config(retries={"max_attempts": 7}),
    )
    copy = pickle.loads(pickle.dumps(h))
    assert isinstance(copy, Helper)
    assert copy.namespace == ns
    assert repr(copy) == repr(h)
    assert copy._options == h._options
    assert copy._options.botocore_config is not None
    assert copy._options.botocore_config.retries == {"max_attempts": 7}


def test_helper_with_session_refuses_to_pickle() -> None:
    h = Helper(["127.0.0.1"], session=boto3.Session(region_name="x"))
    with pytest.raises(TypeError):
        pickle.dumps(h)


def test_endpoint_url_is_refused() -> None:
    ns = _ns()
    h = Helper(["127.0.0.1"], port=1, namespace=ns)
    try:
        with pytest.raises(ConfigurationError):
            h.new_dynamodb_client(endpoint_url="http://127.0.0.1:1")
    finally:
        h.close()
        from alternator_shm import fleet

        fleet.cleanup(ns)
