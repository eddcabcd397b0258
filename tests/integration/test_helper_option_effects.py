"""Each Helper option changes what the cluster sees (null backend, enforced SigV4).

Every test here would fail if the option were ignored: the emulator's request log shows the
headers, signatures and refresh polls as they arrived on the wire.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, NoCredentialsError
from test_helper_support import (
    all_api_entries,
    api_counts,
    cluster_credentials,
    header,
    localnodes_entries,
    make_helper,
    module_cluster,
    node_urls,
    unique_namespace,
)

from alternator_shm import __version__

USERS = {"opt-key": "opt-secret"}
TABLE = "options_table"
KEY = {"p": {"S": "k"}}


cluster = module_cluster(nodes=5, users=USERS, backend="null")
pytestmark = pytest.mark.usefixtures("clean_cluster")


@pytest.fixture
def no_env_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    """Make boto3's default chain see nothing but what the test puts in the environment."""
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def _calls(client: Any, count: int, key: Any = KEY) -> None:
    for _ in range(count):
        client.get_item(TableName=TABLE, Key=key)


def _assert_authenticated(cluster: Any, expected: int) -> None:
    pairs = all_api_entries(cluster)
    assert len(pairs) == expected
    assert all(e.auth_ok is True and e.status == 200 for _, e in pairs), [e for _, e in pairs]


def test_port_and_scheme_make_the_node_urls(cluster: Any) -> None:
    with make_helper(cluster) as h:
        assert sorted(h.live_nodes()) == node_urls(cluster)
        assert all(
            u.startswith("http://") and u.endswith(f":{cluster.port}") for u in h.live_nodes()
        )
        _calls(h.new_dynamodb_client(), 5)
    assert set(api_counts(cluster).values()) == {1}


def test_credentials_tuple(cluster: Any) -> None:
    with make_helper(cluster, credentials=cluster_credentials(cluster)) as h:
        _calls(h.new_dynamodb_client(), 3)
    _assert_authenticated(cluster, 3)
    key = cluster_credentials(cluster)[0]
    for _, entry in all_api_entries(cluster):
        assert f"Credential={key}/" in (header(entry, "Authorization") or "")


def test_credentials_botocore_object(cluster: Any, no_env_credentials: Any) -> None:
    key, secret = cluster_credentials(cluster)
    with make_helper(cluster, credentials=Credentials(key, secret)) as h:
        _calls(h.new_dynamodb_client(), 3)
        _calls(h.new_dynamodb_resource().meta.client, 2, {"p": "k"})
    _assert_authenticated(cluster, 5)
    cluster.clear_logs()
    with (
        make_helper(cluster, credentials=Credentials(key, "wrong")) as h,
        pytest.raises(ClientError),
    ):
        _calls(h.new_dynamodb_client(), 1)
    assert [e.auth_ok for _, e in all_api_entries(cluster)] == [False]


def test_credentials_default_chain_from_environment(
    cluster: Any, no_env_credentials: pytest.MonkeyPatch
) -> None:
    key, secret = cluster_credentials(cluster)
    # Nothing in the chain yet.
    with make_helper(cluster, credentials=None) as h, pytest.raises(NoCredentialsError):
        _calls(h.new_dynamodb_client(), 1)
    no_env_credentials.setenv("AWS_ACCESS_KEY_ID", key)
    no_env_credentials.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with make_helper(cluster, credentials=None) as h:
        _calls(h.new_dynamodb_client(), 3)
    _assert_authenticated(cluster, 3)


def test_session(cluster: Any, no_env_credentials: Any) -> None:
    key, secret = cluster_credentials(cluster)
    session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret)
    seen: list[str] = []
    session.events.register("before-call.dynamodb", lambda model, **_: seen.append(model.name))
    with make_helper(cluster, credentials=None, session=session) as h:
        _calls(h.new_dynamodb_client(), 2)
        h.new_dynamodb_resource().Table(TABLE).get_item(Key={"p": "k"})
    assert seen == ["GetItem", "GetItem", "GetItem"]  # clients came from the given session
    _assert_authenticated(cluster, 3)


def test_region(cluster: Any) -> None:
    with make_helper(cluster, region="eu-test-7") as h:
        _calls(h.new_dynamodb_client(), 2)
    _assert_authenticated(cluster, 2)
    for _, entry in all_api_entries(cluster):
        assert "/eu-test-7/dynamodb/aws4_request" in (header(entry, "Authorization") or "")
    cluster.clear_logs()
    with make_helper(cluster) as h:
        _calls(h.new_dynamodb_client(), 1)
    ((_, entry),) = all_api_entries(cluster)
    assert "/alternator/dynamodb/aws4_request" in (header(entry, "Authorization") or "")


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (None, f"alternator-shm/{__version__}"),
        ("", None),
        ("my-app/1.2 (tests)", "my-app/1.2 (tests)"),
    ],
    ids=["default", "none", "custom"],
)
@pytest.mark.parametrize("optimize_headers", [False, True], ids=["plain", "optimized"])
def test_user_agent(
    cluster: Any, user_agent: str | None, expected: str | None, optimize_headers: bool
) -> None:
    with make_helper(cluster, user_agent=user_agent, optimize_headers=optimize_headers) as h:
        _calls(h.new_dynamodb_client(), 2)
    _assert_authenticated(cluster, 2)
    if optimize_headers and user_agent is None:
        expected = None  # optimize_headers drops the User-Agent unless one is configured
    for _, entry in all_api_entries(cluster):
        assert header(entry, "User-Agent") == expected, entry.headers


def test_namespace_shares_the_counter(cluster: Any) -> None:
    shared = unique_namespace()
    with (
        make_helper(cluster, namespace=shared) as a,
        make_helper(cluster, namespace=shared) as b,
        make_helper(cluster) as c,
    ):
        assert a.namespace == b.namespace == shared != c.namespace
        nodes = a.live_nodes()
        assert b.live_nodes() == nodes
        picks = [a.next_node(), b.next_node(), a.next_node(), b.next_node(), c.next_node()]
        first = nodes.index(picks[0])
        # a and b advance ONE counter: their picks interleave as one round-robin.
        assert picks[:4] == [nodes[(first + i) % len(nodes)] for i in range(4)]
        sa, sc = a.stats(), c.stats()
        assert sa.namespace == shared and sc.namespace == c.namespace
        assert sa.segment_name != sc.segment_name
        assert sa.picks == b.stats().picks == 4
        assert sc.picks == 1
        assert sum(n.picks for n in sa.per_node.values()) == 4


def test_stats_and_helper_methods(cluster: Any) -> None:
    with make_helper(cluster) as h:
        assert h.start() is h
        nodes = h.update_live_nodes()
        assert sorted(nodes) == node_urls(cluster)
        assert h.live_nodes() == nodes
        _calls(h.new_dynamodb_client(), 10)
        s = h.stats()
        assert s.namespace == h.namespace
        assert list(s.nodes) == nodes
        assert s.generation >= 1
        assert s.picks == 10
        assert s.refreshes >= 1
        assert s.consecutive_refresh_failures == 0
        assert s.last_refresh_age_s >= 0
        assert s.leader_pid is not None
        assert {u: n.picks for u, n in s.per_node.items()} == {u: 2 for u in nodes}
        assert not any(n.quarantined or n.failures for n in s.per_node.values())
    assert set(api_counts(cluster).values()) == {2}


def _polls_during(cluster: Any, seconds: float, traffic: Any | None) -> int:
    cluster.clear_logs()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if traffic is not None:
            _calls(traffic, 1)
            time.sleep(0.01)
        else:
            time.sleep(0.05)
    return sum(len(localnodes_entries(n)) for n in cluster.nodes)


def _polls_reach(cluster: Any, wanted: int, traffic: Any | None, limit: float = 30.0) -> float:
    """Seconds until ``wanted`` polls arrived (traffic flowing if given); ``limit`` if never.

    Event-based, so a slow host only takes longer: a lower bound on a rate is never asserted
    over a fixed window (at 0.1 s, 4 polls take ~0.4 s; at a 60 s period they take minutes).
    """
    cluster.clear_logs()
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if sum(len(localnodes_entries(n)) for n in cluster.nodes) >= wanted:
            return time.monotonic() - started
        if traffic is not None:
            _calls(traffic, 1)
        time.sleep(0.01)
    return limit


def test_refresh_interval_while_traffic_flows(cluster: Any) -> None:
    with make_helper(cluster, refresh_interval=0.1, idle_refresh_interval=60) as fast:
        client = fast.new_dynamodb_client()
        fast.live_nodes()
        assert _polls_reach(cluster, 4, client) < 30.0  # ~0.4 s at 0.1 s; never at 60 s
    with make_helper(cluster, refresh_interval=30, idle_refresh_interval=60) as slow:
        client = slow.new_dynamodb_client()
        slow.live_nodes()
        _calls(client, 1)
        assert _polls_during(cluster, 1.5, client) <= 1


def test_idle_refresh_interval(cluster: Any) -> None:
    with make_helper(cluster, refresh_interval=0.1, idle_refresh_interval=0.1) as busy:
        busy.start()
        busy.live_nodes()
        assert _polls_reach(cluster, 4, None) < 30.0  # idle at 0.1 s: ~0.4 s
    with make_helper(cluster, refresh_interval=0.1, idle_refresh_interval=60) as quiet:
        quiet.start()
        quiet.live_nodes()
        time.sleep(0.3)  # let any "first table" follow-up poll pass
        assert _polls_during(cluster, 1.5, None) <= 1


def test_every_client_of_a_helper_shares_the_round_robin(cluster: Any) -> None:
    with make_helper(cluster) as h:
        clients = [h.new_dynamodb_client() for _ in range(3)]
        resource = h.new_dynamodb_resource()
        for _ in range(5):
            for client in clients:
                _calls(client, 1)
            resource.Table(TABLE).get_item(Key={"p": "k"})
    assert set(api_counts(cluster).values()) == {4}


def test_unique_table_names_are_not_needed_by_null_backend(cluster: Any) -> None:
    """Sanity check of the fixture: the null backend answers any table name."""
    with make_helper(cluster) as h:
        h.new_dynamodb_client().get_item(TableName=f"t{uuid.uuid4().hex}", Key=KEY)
    _assert_authenticated(cluster, 1)
