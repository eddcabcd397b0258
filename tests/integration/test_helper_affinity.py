"""Key-route affinity on real HTTP against the emulator, from real (spawned) processes.

Which node served each request is read from the emulator's per-node logs; the expected node is
computed independently from the public algorithm (:mod:`alternator_shm.affinity` pure functions
checked against the cross-language vectors in tests/unit/test_affinity.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.dynamodb.conditions import Attr
from test_helper_support import (
    api_counts,
    make_helper,
    module_cluster,
    node_urls,
    spawn_context,
    wait_for,
)

from alternator_shm.affinity import Affinity, Ring, Target, hash_key, seeded_order
from alternator_shm.emulator import Cluster
from alternator_shm.fleet.health import State

USERS = {"aff-key": "aff-secret"}
TABLE = "aff_table"
CONDITION = "attribute_not_exists(never_set)"  # always true: every conditional put succeeds


null_cluster = module_cluster("null_cluster", nodes=5, users=USERS, backend="null")


@pytest.fixture(scope="module")
def moto_cluster() -> Iterator[Any]:
    with Cluster(nodes=3, users=USERS, backend="moto") as c, make_helper(c) as h:
        h.new_dynamodb_client().create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield c


def _plan(cluster: Any, key: str) -> tuple[str, ...]:
    seed = hash_key({"S": key})
    assert seed is not None
    return tuple(seeded_order(seed, Ring(node_urls(cluster))))


def _wait_table(helper: Any, cluster: Any) -> None:
    assert wait_for(lambda: sorted(helper.live_nodes()) == node_urls(cluster), 30)


def _spread(counts: Counter[str]) -> str:
    return ", ".join(f"{node.split('//')[1]}={n}" for node, n in sorted(counts.items()))


# -- same key from 4 processes ------------------------------------------------------------------


def worker_conditional_puts(
    helper: Any, key: str, calls: int, start: Any, results: Any, ident: int
) -> None:
    """Child: ``calls`` conditional puts of one key after the go; reports failures."""
    client = helper.new_dynamodb_client()
    helper.live_nodes()
    start.wait(60)
    failures = []
    for i in range(calls):
        try:
            client.put_item(
                TableName=TABLE,
                Item={"p": {"S": key}, "writer": {"N": str(ident)}, "i": {"N": str(i)}},
                ConditionExpression=CONDITION,
            )
        except Exception as exc:
            failures.append(repr(exc))
    results.put({"ident": ident, "failures": failures})
    helper.close()


def test_four_processes_send_one_keys_conditional_puts_to_one_node(moto_cluster: Any) -> None:
    key, calls, procs_count = "hot-key", 40, 4
    ctx = spawn_context()
    with make_helper(moto_cluster, key_route_affinity="rmw", partition_keys={TABLE: "p"}) as h:
        _wait_table(h, moto_cluster)
        start, results = ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=worker_conditional_puts, args=(h, key, calls, start, results, i))
            for i in range(procs_count)
        ]
        for p in procs:
            p.start()
        try:
            assert wait_for(lambda: h.stats().leader_pid is not None, 30)
            time.sleep(0.5)  # let every child finish attaching before the logs are cleared
            moto_cluster.clear_logs()
            start.set()
            reports = [results.get(timeout=120) for _ in procs]
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        assert [p.exitcode for p in procs] == [0] * procs_count
        assert all(not r["failures"] for r in reports), reports
        counts = api_counts(moto_cluster, "PutItem")
        preferred = _plan(moto_cluster, key)[0]
        print(f"\nsame key, {procs_count} processes x {calls} conditional puts: {_spread(counts)}")
        assert counts[preferred] == procs_count * calls, counts
        assert sum(counts.values()) == procs_count * calls


# -- many keys spread evenly --------------------------------------------------------------------


def test_thousand_keys_spread_evenly_each_on_its_own_node(null_cluster: Any) -> None:
    keys = [f"user-{i}" for i in range(1000)]
    with make_helper(null_cluster, key_route_affinity="any_write",
                     partition_keys={TABLE: "p"}) as h:
        client = h.new_dynamodb_client()
        _wait_table(h, null_cluster)
        null_cluster.clear_logs()
        for key in keys:
            client.put_item(TableName=TABLE, Item={"p": {"S": key}})
        counts = api_counts(null_cluster, "PutItem")
    expected = Counter(_plan(null_cluster, key)[0] for key in keys)
    print(f"\n1,000 keys over 5 nodes: {_spread(counts)}")
    assert counts == expected  # every key went to its own preferred node
    # Binomial(1000, 1/5): mean 200, sd 12.6; +-50 is four sd.
    assert all(150 <= n <= 250 for n in counts.values()), counts


def test_rmw_mode_leaves_unconditional_puts_round_robin(null_cluster: Any) -> None:
    with make_helper(null_cluster, key_route_affinity="rmw", partition_keys={TABLE: "p"}) as h:
        client = h.new_dynamodb_client()
        _wait_table(h, null_cluster)
        null_cluster.clear_logs()
        for i in range(50):
            client.put_item(TableName=TABLE, Item={"p": {"S": "same"}, "i": {"N": str(i)}})
        plain = api_counts(null_cluster, "PutItem")
        null_cluster.clear_logs()
        for i in range(20):
            client.put_item(TableName=TABLE, Item={"p": {"S": "same"}, "i": {"N": str(i)}},
                            ConditionExpression=CONDITION)
            client.update_item(TableName=TABLE, Key={"p": {"S": "same"}},
                               UpdateExpression="SET i = :i",
                               ExpressionAttributeValues={":i": {"N": str(i)}})
            client.get_item(TableName=TABLE, Key={"p": {"S": "same"}})  # reads: round-robin
        conditional = api_counts(null_cluster, "PutItem")
        updates = api_counts(null_cluster, "UpdateItem")
        reads = api_counts(null_cluster, "GetItem")
    assert set(plain.values()) == {10}, plain  # exact round-robin, as without affinity
    preferred = _plan(null_cluster, "same")[0]
    assert conditional[preferred] == updates[preferred] == 20, (conditional, updates)
    assert max(reads.values()) - min(reads.values()) <= 1, reads


def test_table_resource_conditions_get_affinity(null_cluster: Any) -> None:
    with make_helper(null_cluster, key_route_affinity="rmw", partition_keys={TABLE: "p"}) as h:
        table = h.new_dynamodb_resource().Table(TABLE)
        _wait_table(h, null_cluster)
        null_cluster.clear_logs()
        for i in range(10):
            table.put_item(Item={"p": "res-key", "i": i},
                           ConditionExpression=Attr("never_set").not_exists())
        counts = api_counts(null_cluster, "PutItem")
    assert counts[_plan(null_cluster, "res-key")[0]] == 10, counts


# -- BatchWriteItem voting ----------------------------------------------------------------------


def test_batch_write_votes_pick_one_node_whatever_the_item_order(null_cluster: Any) -> None:
    entries = [{"PutRequest": {"Item": {"p": {"S": f"b-{i}"}, "v": {"N": str(i)}}}}
               for i in range(9)]
    entries += [{"DeleteRequest": {"Key": {"p": {"S": f"d-{i}"}}}} for i in range(4)]
    nodes = tuple(node_urls(null_cluster))
    target = Target(tuple(hash_key({"S": k}) or 0 for k in
                          [f"b-{i}" for i in range(9)] + [f"d-{i}" for i in range(4)]),
                    batch=True)
    expected_first = Affinity("any_write").plan(target, nodes)[0]
    rng = random.Random(11)
    with make_helper(null_cluster, key_route_affinity="any_write",
                     partition_keys={TABLE: "p"}) as h:
        client = h.new_dynamodb_client()
        _wait_table(h, null_cluster)
        null_cluster.clear_logs()
        for round_ in range(12):
            shuffled = entries[:]
            rng.shuffle(shuffled)
            for entry in shuffled:  # non-key attributes change too
                if "PutRequest" in entry:
                    entry["PutRequest"]["Item"]["v"] = {"N": str(round_)}
            client.batch_write_item(RequestItems={TABLE: shuffled})
        counts = api_counts(null_cluster, "BatchWriteItem")
    assert counts[expected_first] == 12, counts


# -- retries along the plan ---------------------------------------------------------------------


@pytest.mark.alternator_cluster(nodes=4, failure_detect_delay=600.0)
def test_retries_after_the_preferred_node_dies_follow_the_plan(alternator_cluster: Any) -> None:
    cluster = alternator_cluster
    # The dead node stays listed (gossip has not noticed yet): the ring, hence every plan, is
    # unchanged, and the retry must go to each key's second node.
    with make_helper(cluster, key_route_affinity="rmw", partition_keys={TABLE: "p"}) as h:
        client = h.new_dynamodb_client()
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        _wait_table(h, cluster)
        victim = cluster.nodes[0].url
        keys = [k for k in (f"r-{i}" for i in range(400)) if _plan(cluster, k)[0] == victim][:12]
        assert len(keys) == 12
        seconds = Counter(_plan(cluster, k)[1] for k in keys)
        assert len(seconds) >= 2  # different keys have different second nodes
        cluster.nodes[0].kill()
        cluster.clear_logs()
        for key in keys:
            client.put_item(TableName=TABLE, Item={"p": {"S": key}},
                            ConditionExpression=CONDITION)
        counts = api_counts(cluster, "PutItem")
        assert +counts == seconds, (counts, seconds)
        # The victim is now down (12 failures >= 10): later calls skip it at final selection
        # only, and keys preferring live nodes are not remapped.
        assert h._shared().node_status(victim).state is State.DOWN
        cluster.clear_logs()
        others = [k for k in (f"o-{i}" for i in range(100)) if _plan(cluster, k)[0] != victim][:8]
        for key in keys[:4] + others:
            client.put_item(TableName=TABLE, Item={"p": {"S": key}},
                            ConditionExpression=CONDITION)
        counts = api_counts(cluster, "PutItem")
        expected = Counter(_plan(cluster, k)[1] for k in keys[:4])
        expected.update(_plan(cluster, k)[0] for k in others)
        assert +counts == expected, (counts, expected)


# -- partition key discovered with DescribeTable ------------------------------------------------


def test_unknown_partition_key_is_discovered_in_the_background(null_cluster: Any) -> None:
    with make_helper(null_cluster, key_route_affinity="any_write") as h:
        client = h.new_dynamodb_client()
        _wait_table(h, null_cluster)
        null_cluster.clear_logs()
        # The first write is routed normally (never waits for the lookup).
        client.put_item(TableName="disc_table", Item={"p": {"S": "found"}})
        affinity = h._affinity
        assert affinity is not None
        assert wait_for(lambda: affinity.keys.known().get("disc_table") == "p", 30)
        null_cluster.clear_logs()
        for _ in range(15):
            client.put_item(TableName="disc_table", Item={"p": {"S": "found"}})
        counts = api_counts(null_cluster, "PutItem")
        describes = sum(api_counts(null_cluster, "DescribeTable").values())
    assert counts[_plan(null_cluster, "found")[0]] == 15, counts
    assert describes == 0  # cached: no further lookups


# -- async client: same hashes, same plans ------------------------------------------------------


def test_sync_and_async_send_one_key_to_the_same_node(null_cluster: Any) -> None:
    pytest.importorskip("aiobotocore")
    keys = [f"both-{i}" for i in range(40)]
    with make_helper(null_cluster, key_route_affinity="rmw", partition_keys={TABLE: "p"}) as h:
        client = h.new_dynamodb_client()
        _wait_table(h, null_cluster)
        null_cluster.clear_logs()
        for key in keys:
            client.put_item(TableName=TABLE, Item={"p": {"S": key}}, ReturnValues="ALL_OLD")
        sync_counts = api_counts(null_cluster, "PutItem")
        null_cluster.clear_logs()

        async def main() -> None:
            async with h.new_async_dynamodb_client() as ddb:
                await asyncio.gather(*[
                    ddb.put_item(TableName=TABLE, Item={"p": {"S": key}}, ReturnValues="ALL_OLD")
                    for key in keys
                ])
                # Plain puts stay round-robin in "rmw" mode, async too.
                for i in range(25):
                    await ddb.put_item(TableName=TABLE, Item={"p": {"S": "plain"},
                                                              "i": {"N": str(i)}})

        null_cluster.clear_logs()
        asyncio.run(main())
        counts = api_counts(null_cluster, "PutItem")
    expected = Counter(_plan(null_cluster, key)[0] for key in keys)
    assert sync_counts == expected
    # 40 affinity puts exactly as the sync client, plus 25 round-robin ones (5 per node).
    assert counts == expected + Counter({node: 5 for node in node_urls(null_cluster)}), counts


def test_async_client_discovers_the_partition_key_on_its_loop(null_cluster: Any) -> None:
    pytest.importorskip("aiobotocore")
    with make_helper(null_cluster, key_route_affinity="any_write") as h:
        _wait_table(h, null_cluster)
        affinity_holder: list[Any] = []

        async def main() -> None:
            async with h.new_async_dynamodb_client() as ddb:
                await ddb.put_item(TableName="aio_disc", Item={"p": {"S": "k"}})  # normal route
                affinity = h._affinity
                assert affinity is not None
                affinity_holder.append(affinity)
                deadline = time.monotonic() + 30
                while "aio_disc" not in affinity.keys.known() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)  # the loop keeps running the lookup
                null_cluster.clear_logs()
                for _ in range(10):
                    await ddb.put_item(TableName="aio_disc", Item={"p": {"S": "k"}})

        asyncio.run(main())
        counts = api_counts(null_cluster, "PutItem")
    assert affinity_holder[0].keys.known().get("aio_disc") == "p"
    assert counts[_plan(null_cluster, "k")[0]] == 10, counts


def test_missing_table_is_looked_up_once_then_cooled_down(moto_cluster: Any) -> None:
    import botocore.exceptions

    with make_helper(moto_cluster, key_route_affinity="any_write") as h:
        client = h.new_dynamodb_client()
        _wait_table(h, moto_cluster)
        moto_cluster.clear_logs()
        affinity = h._affinity
        assert affinity is not None
        for i in range(6):
            with pytest.raises(botocore.exceptions.ClientError) as raised:
                client.put_item(TableName="no_such_table", Item={"p": {"S": f"k{i}"}})
            assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
            if i == 0:  # let the one lookup finish before the next misses
                assert wait_for(lambda: not affinity.keys._running, 30)
        describes = sum(api_counts(moto_cluster, "DescribeTable").values())
    # ResourceNotFound is permanent: one DescribeTable, no retries, no new lookup for 5 min.
    assert describes == 1
    assert affinity.keys.attempts == 1
