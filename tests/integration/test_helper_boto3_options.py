"""Every boto3 client option has its plain-boto3 effect, or is refused at client creation.

Each test runs the same calls through a plain boto3 client (``endpoint_url`` = one node) and a
Helper client on the same emulator, and compares what the wire, the proxy or the node saw.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from test_helper_support import (
    MTLS_CLIENT_CN,
    ForwardProxy,
    all_api_entries,
    api_seen,
    cluster_credentials,
    header,
    make_helper,
    module_cluster,
    plain_client,
    unique_namespace,
)

from alternator_shm import ConfigurationError, Helper, __version__

USERS = {"b3-key": "b3-secret"}
TABLE = "b3_table"
KEY = {"p": {"S": "k"}}
ONE_ATTEMPT = Config(retries={"total_max_attempts": 1})


cluster = module_cluster(nodes=3, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


tls_cluster = module_cluster("tls_cluster", nodes=3, users=USERS, backend="null", https=True)


def _ok(client: Any, key: Any = KEY) -> bool:
    try:
        client.get_item(TableName=TABLE, Key=key)
        return True
    except botocore.exceptions.SSLError:
        return False


# -- TLS trust: verify, AWS_CA_BUNDLE, ca_bundle in the config file ------------------------------


@pytest.fixture
def untrusted_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CA setting anywhere: the emulator's CA is then trusted by nobody."""
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    return monkeypatch


def _tls_helper(cluster: Any) -> Any:
    return make_helper(cluster, ca_file=None, botocore_config=ONE_ATTEMPT)


@pytest.mark.parametrize("verify", ["default", "false", "ca-file"])
def test_verify(tls_cluster: Any, untrusted_env: Any, verify: str) -> None:
    kwargs: dict[str, Any] = {"config": ONE_ATTEMPT}
    if verify == "false":
        kwargs["verify"] = False
    elif verify == "ca-file":
        kwargs["verify"] = tls_cluster.ca_file
    expected = _ok(plain_client(tls_cluster, **kwargs))
    assert expected is (verify != "default")
    with _tls_helper(tls_cluster) as h:
        assert _ok(h.new_dynamodb_client(**kwargs)) is expected
        assert _ok(h.new_dynamodb_resource(**kwargs).meta.client, {"p": "k"}) is expected


@pytest.mark.parametrize("source", ["AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "config-file"])
def test_ca_bundle_from_environment_and_config_file(
    tls_cluster: Any, untrusted_env: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    if source == "config-file":
        config = tmp_path / "config"
        config.write_text(f"[default]\nca_bundle = {tls_cluster.ca_file}\n")
        untrusted_env.setenv("AWS_CONFIG_FILE", str(config))
    else:
        untrusted_env.setenv(source, tls_cluster.ca_file)
    assert _ok(plain_client(tls_cluster, config=ONE_ATTEMPT))
    with _tls_helper(tls_cluster) as h:
        # discovery trusts it too, not only the API clients
        assert sorted(h.update_live_nodes()) == sorted(n.url.rstrip("/") for n in tls_cluster.nodes)
        assert _ok(h.new_dynamodb_client())


def test_verify_refused_when_not_a_file(cluster: Any) -> None:
    with make_helper(cluster) as h, pytest.raises(ConfigurationError, match="verify"):
        h.new_dynamodb_client(verify="/nonexistent/ca.pem")


# -- proxies --------------------------------------------------------------------------------------


def test_proxies_forward_http(cluster: Any, proxy: ForwardProxy) -> None:
    url = proxy.url.replace("http://", "http://user:pa%20ss@")
    config = Config(proxies={"http": url})
    plain = plain_client(cluster, config=config)
    for _ in range(3):
        plain.get_item(TableName=TABLE, Key=KEY)
    expected = [(m, t.startswith("http://"), "Proxy-Authorization" in h) for m, t, h in proxy.seen]
    assert expected == [("POST", True, True)] * 3
    proxy.seen.clear()
    cluster.clear_logs()
    with make_helper(cluster) as h:
        client = h.new_dynamodb_client(config=config)
        for _ in range(3):
            client.get_item(TableName=TABLE, Key=KEY)
        got = [
            (m, t.startswith("http://"), "Proxy-Authorization" in hd)
            for m, t, hd in api_seen(proxy)
        ]
        assert got == expected
        # ... and the nodes did get the calls, round-robin, through the proxy
        assert len({n for n, _ in all_api_entries(cluster)}) == 3
        # A client without the option goes direct, as in boto3.
        proxy.seen.clear()
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
        assert api_seen(proxy) == []


def test_proxies_connect_tunnel_https(tls_cluster: Any, proxy: ForwardProxy) -> None:
    config = Config(proxies={"https": proxy.url})
    plain = plain_client(tls_cluster, config=config, verify=tls_cluster.ca_file)
    plain.get_item(TableName=TABLE, Key=KEY)
    assert [m for m, _, _ in proxy.seen] == ["CONNECT"]
    proxy.seen.clear()
    with make_helper(tls_cluster, botocore_config=config) as h:
        h.update_live_nodes()  # discovery goes through the Helper's proxy too
        assert proxy.seen and all(m == "CONNECT" for m, _, _ in proxy.seen)
        proxy.seen.clear()
        client = h.new_dynamodb_client()
        for _ in range(3):
            client.get_item(TableName=TABLE, Key=KEY)
        tunnels = {t for m, t, _ in api_seen(proxy) if m == "CONNECT"}
        assert len(tunnels) == 3  # one tunnel per node, kept alive


def test_proxy_from_environment(
    cluster: Any, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    plain_client(cluster).get_item(TableName=TABLE, Key=KEY)
    plain_count = len(proxy.seen)
    proxy.seen.clear()
    with make_helper(cluster) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
        assert len(api_seen(proxy)) == plain_count == 1
        h.update_live_nodes()  # discovery goes through the proxy too, absolute-form
        assert any(
            m == "GET" and t.startswith("http://") and "/localnodes" in t
            for m, t, _ in proxy.seen
        )
    # NO_PROXY is honoured per node, as botocore applies it (host names, not CIDR ranges).
    monkeypatch.setenv("NO_PROXY", ",".join(cluster.seeds))
    proxy.seen.clear()
    plain_client(cluster).get_item(TableName=TABLE, Key=KEY)
    with make_helper(cluster) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
    assert proxy.seen == []


# -- sockets: keepalive, pool size ------------------------------------------------------------


def _keepalive_flags(port: int) -> set[int]:
    flags = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(fd))) as s:
                if s.family == socket.AF_INET and s.getpeername()[1] == port:
                    flags.add(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        except OSError:
            continue
    return flags


@pytest.mark.parametrize("keepalive", [True, False])
def test_tcp_keepalive(cluster: Any, keepalive: bool) -> None:
    plain = plain_client(cluster, config=Config(tcp_keepalive=keepalive))
    plain.get_item(TableName=TABLE, Key=KEY)
    assert _keepalive_flags(cluster.port) == {int(keepalive)}
    plain.close()
    with make_helper(cluster) as h:
        h.new_dynamodb_client(config=Config(tcp_keepalive=keepalive)).get_item(
            TableName=TABLE, Key=KEY
        )
        flags = _keepalive_flags(cluster.port)
    assert int(keepalive) in flags


slow_node = module_cluster("slow_node", nodes=1, users=USERS, backend="null")


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Connection pool is full" in record.getMessage():
            self.count += 1


def _pool_full_warnings(client: Any, threads: int = 30) -> int:
    handler = _Warnings()
    logger = logging.getLogger("urllib3.connectionpool")
    logger.addHandler(handler)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait(30)
            client.get_item(TableName=TABLE, Key=KEY)
        except BaseException as e:
            errors.append(e)

    try:
        workers = [threading.Thread(target=call) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
    finally:
        logger.removeHandler(handler)
    assert not errors, errors
    return handler.count


@pytest.mark.slow
def test_max_pool_connections_per_client_and_per_helper(slow_node: Any) -> None:
    slow_node.nodes[0].inject_fault("latency", delay=0.5, count=100_000)
    try:
        big = Config(max_pool_connections=40)
        assert _pool_full_warnings(plain_client(slow_node, config=big)) == 0
        assert _pool_full_warnings(plain_client(slow_node)) > 0
        with make_helper(slow_node) as h:
            assert _pool_full_warnings(h.new_dynamodb_client(config=big)) == 0
            assert _pool_full_warnings(h.new_dynamodb_client()) > 0
        with make_helper(slow_node, botocore_config=big) as h:
            assert _pool_full_warnings(h.new_dynamodb_client()) == 0
    finally:
        slow_node.nodes[0].clear_faults()


# -- user agent --------------------------------------------------------------------------------


def _user_agents(cluster: Any) -> list[str | None]:
    return [header(e, "User-Agent") for _, e in all_api_entries(cluster)]


def test_user_agent_extras_follow_our_token(cluster: Any) -> None:
    config = Config(user_agent_extra="extra/7 (x)", user_agent_appid="my app#1")
    plain_client(cluster, config=config).get_item(TableName=TABLE, Key=KEY)
    (plain,) = _user_agents(cluster)
    assert plain is not None and " app/my-app#1 " in plain and plain.endswith(" extra/7 (x)")
    cluster.clear_logs()
    with make_helper(cluster) as h:
        h.new_dynamodb_client(config=config).get_item(TableName=TABLE, Key=KEY)
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
    assert _user_agents(cluster) == [
        f"alternator-shm/{__version__} app/my-app#1 extra/7 (x)",
        f"alternator-shm/{__version__}",
    ]
    cluster.clear_logs()
    with make_helper(cluster, user_agent="svc/2", botocore_config=config) as h:
        h.new_dynamodb_client().get_item(TableName=TABLE, Key=KEY)
    assert _user_agents(cluster) == ["svc/2 app/my-app#1 extra/7 (x)"]


def test_user_agent_override_is_exactly_botocores(cluster: Any) -> None:
    config = Config(user_agent="legacy/1.0", user_agent_extra="more/2")
    plain_client(cluster, config=config).get_item(TableName=TABLE, Key=KEY)
    with make_helper(cluster) as h:
        h.new_dynamodb_client(config=config).get_item(TableName=TABLE, Key=KEY)
    plain, ours = _user_agents(cluster)
    assert ours == plain and plain is not None and plain.startswith("legacy/1.0")


# -- options passed through to botocore --------------------------------------------------------


def test_region_and_credentials_per_client(cluster: Any) -> None:
    key, secret = cluster_credentials(cluster)
    with make_helper(cluster, credentials=("wrong", "wrong")) as h:
        client = h.new_dynamodb_client(
            region_name="us-test-9", aws_access_key_id=key, aws_secret_access_key=secret
        )
        client.get_item(TableName=TABLE, Key=KEY)
    ((_, entry),) = all_api_entries(cluster)
    assert entry.auth_ok and "/us-test-9/dynamodb/" in (header(entry, "Authorization") or "")


def _outcome(client: Any) -> str:
    try:
        client.get_item(TableName=TABLE, Key={"p": {"S": 5}})
        return "ok"
    except Exception as e:
        return type(e).__name__


def test_parameter_validation_and_api_version(cluster: Any) -> None:
    loose = Config(parameter_validation=False)
    expected = [_outcome(plain_client(cluster)), _outcome(plain_client(cluster, config=loose))]
    assert expected[0] == "ParamValidationError" != expected[1]
    with make_helper(cluster) as h:
        got = [_outcome(h.new_dynamodb_client()), _outcome(h.new_dynamodb_client(config=loose))]
        assert got == expected
        h.new_dynamodb_client(api_version="2012-08-10").get_item(TableName=TABLE, Key=KEY)
        with pytest.raises(botocore.exceptions.DataNotFoundError):
            plain_client(cluster, api_version="1999-01-01")
        with pytest.raises(botocore.exceptions.DataNotFoundError):
            h.new_dynamodb_client(api_version="1999-01-01")


def test_retries_per_client(cluster: Any) -> None:
    for node in cluster.nodes:
        node.inject_fault("internal_error", count=100)
    try:
        with make_helper(cluster) as h:
            for attempts in (1, 2):
                cluster.clear_logs()
                client = h.new_dynamodb_client(
                    config=Config(retries={"total_max_attempts": attempts})
                )
                with pytest.raises(botocore.exceptions.ClientError):
                    client.get_item(TableName=TABLE, Key=KEY)
                assert len(all_api_entries(cluster)) == attempts
    finally:
        for node in cluster.nodes:
            node.clear_faults()


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"endpoint_url": "http://127.0.0.1:1"}, "seeds"),
        ({"use_ssl": True}, "scheme"),
        ({"config": Config(endpoint_discovery_enabled=True)}, "localnodes"),
        ({"config": "not a config"}, "Config"),
        ({"verify": 3}, "verify"),
        ({"config": Config(client_cert="/nonexistent.pem")}, "client_cert"),
        # plain boto3 takes 0 as "no limit" (urllib3 maxsize=0); ours has no such pool: refused,
        # never silently turned into the default 10.
        ({"config": Config(max_pool_connections=0)}, "max_pool_connections"),
        # botocore's "no timeout": refused (typed), never a bare TypeError.
        ({"config": Config(read_timeout=None)}, "read_timeout"),
        ({"config": Config(connect_timeout=None)}, "connect_timeout"),
    ],
    ids=[
        "endpoint_url",
        "use_ssl",
        "endpoint_discovery",
        "config-type",
        "verify-type",
        "cert",
        "pool-0",
        "read-timeout-none",
        "connect-timeout-none",
    ],
)
def test_refused_at_client_creation(cluster: Any, kwargs: dict[str, Any], names: str) -> None:
    with make_helper(cluster) as h:
        with pytest.raises(ConfigurationError, match=names):
            h.new_dynamodb_client(**kwargs)
        with pytest.raises(ConfigurationError, match=names):
            h.new_dynamodb_resource(**kwargs)
        h.new_dynamodb_client(use_ssl=False).get_item(TableName=TABLE, Key=KEY)  # consistent


# -- client certificates: the ``mtls`` node of conftest.py ---------------------------------------


def test_client_cert_in_config(mtls: Any) -> None:
    server, ca_path, cert = mtls
    port = server.server_address[1]
    url = f"https://127.0.0.1:{port}"
    creds = {"aws_access_key_id": "k", "aws_secret_access_key": "s", "region_name": "x"}
    with_cert = Config(client_cert=cert, retries={"total_max_attempts": 1})
    boto3.client("dynamodb", endpoint_url=url, verify=ca_path, config=with_cert, **creds).get_item(
        TableName=TABLE, Key=KEY
    )
    assert len(server.peers) == 1
    ns = unique_namespace()
    h = Helper(
        ["127.0.0.1"],
        port=port,
        scheme="https",
        ca_file=ca_path,
        namespace=ns,
        credentials=("k", "s"),
    )
    try:
        h.new_dynamodb_client(config=with_cert).get_item(TableName=TABLE, Key=KEY)
        assert MTLS_CLIENT_CN in repr(server.peers[-1])
        with pytest.raises(botocore.exceptions.BotoCoreError):
            h.new_dynamodb_client(config=ONE_ATTEMPT).get_item(TableName=TABLE, Key=KEY)
    finally:
        h.close()
        from alternator_shm import fleet

        fleet.cleanup(ns)
