"""Key-route affinity, pure logic: the cross-language vectors, classification, voting, metadata.

Every row of the public cross-language vectors (copied verbatim into ``tests/unit/vectors/``
from ``feature-specs/vectors/`` of ``scylladb/alternator-client-python``) must pass: they are
what makes one key pick one node in Go, Java, Python and every process of ours.
"""

from __future__ import annotations

import itertools
import pickle
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from alternator_shm import ConfigurationError, Helper
from alternator_shm.affinity import (
    Affinity,
    GoRand,
    PartitionKeys,
    Ring,
    SeededPlan,
    Target,
    canonical_endpoint,
    hash_key,
    qualifies,
    seeded_order,
)
from alternator_shm.affinity import _metadata as metadata
from alternator_shm.affinity._cooked import COOKED
from alternator_shm.fleet.health import State
from alternator_shm.routing import Router

VECTORS = Path(__file__).parent / "vectors"


def _rows(name: str) -> list[list[str]]:
    lines = (VECTORS / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


# -- hashing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", _rows("affinity-hash.tsv"), ids=lambda r: f"{r[0]}:{r[2]!r}")
def test_affinity_hash_vectors(row: list[str]) -> None:
    kind, encoding, payload, expected = row
    value: Any = bytes.fromhex(payload) if encoding == "hex" else payload
    assert hash_key({kind: value}) == int(expected)


def test_hash_vector_file_has_every_row() -> None:
    assert len(_rows("affinity-hash.tsv")) == 11


@pytest.mark.parametrize(
    "value",
    [
        {"BOOL": True},
        {"NULL": True},
        {"SS": ["a"]},
        {"NS": ["1"]},
        {"L": [{"S": "a"}]},
        {"M": {"a": {"S": "b"}}},
        {"S": 1},
        {"N": 42},
        {"N": " 42"},
        {"N": "inf"},
        {"N": "0x10"},
        {"B": 3},
        {"S": "a", "N": "1"},
        {},
        None,
        "plain",
        {"S": "\udc80"},
    ],
    ids=repr,
)
def test_unhashable_values_fall_back(value: Any) -> None:
    assert hash_key(value) is None


def test_numbers_are_not_normalised_and_types_are_distinct() -> None:
    assert len({hash_key({"N": n}) for n in ("42", "42.0", "4.2e1", "4.2E1")}) == 4
    assert hash_key({"S": "42"}) != hash_key({"N": "42"}) != hash_key({"B": b"42"})
    # A str blob is hashed as botocore sends it (UTF-8), the same as the bytes.
    assert hash_key({"B": "abc"}) == hash_key({"B": b"abc"}) == hash_key({"B": bytearray(b"abc")})


# -- endpoint order and the seeded generator ----------------------------------------------------


@pytest.mark.parametrize("row", _rows("endpoint-order.tsv"), ids=lambda r: r[0])
def test_endpoint_order_vectors(row: list[str]) -> None:
    _case, given, canonical, representative = row
    ring = Ring(given.split(","))
    assert ",".join(ring.keys) == canonical
    assert ",".join(ring.nodes) == representative


def test_ring_sorts_bytewise_not_numerically() -> None:
    ring = Ring(["http://127.0.0.95:8000", "http://127.0.0.100:8000", "http://127.0.0.2:8000"])
    assert ring.nodes == (
        "http://127.0.0.100:8000",
        "http://127.0.0.2:8000",
        "http://127.0.0.95:8000",
    )


@pytest.mark.parametrize("bad", ["", "127.0.0.1:8000", "http://", "/path", "http://h:99999"])
def test_canonical_endpoint_refuses_non_endpoints(bad: str) -> None:
    with pytest.raises(ValueError):
        canonical_endpoint(bad)


def test_cooked_table_matches_vector_file() -> None:
    rows = _rows("query-plan-rng-cooked.tsv")
    assert len(rows) == 607
    assert [int(i) for i, _ in rows] == list(range(607))
    assert tuple(int(v) for _, v in rows) == COOKED


@pytest.mark.parametrize("row", _rows("query-plan.tsv"), ids=lambda r: f"seed={r[0]}")
def test_query_plan_vectors(row: list[str]) -> None:
    seed, count, expected = row
    ring = Ring([f"http://node{i}.example.com:8043" for i in range(1, int(count) + 1)])
    order = seeded_order(int(seed), ring)
    labels = [node.split("node")[1].split(".")[0] for node in order]
    assert ",".join(labels) == expected


class _EagerGoRand:
    """The spec's generator written out literally (every state word seeded up front)."""

    def __init__(self, seed: int) -> None:
        m = (1 << 31) - 1
        mask = (1 << 64) - 1
        x = seed % m or 89_482_311

        def step(v: int) -> int:
            hi, lo = divmod(v, 44_488)
            v = 48_271 * lo - 3_399 * hi
            return v + m if v < 0 else v

        self.vec = [0] * 607
        for i in range(-20, 607):
            x = step(x)
            if i >= 0:
                u = (x << 40) & mask
                x = step(x)
                u ^= (x << 20) & mask
                x = step(x)
                u ^= x
                u ^= COOKED[i] & mask
                self.vec[i] = u
        self.tap, self.feed = 0, 334

    def int63(self) -> int:
        self.tap = (self.tap - 1) % 607
        self.feed = (self.feed - 1) % 607
        x = (self.vec[self.feed] + self.vec[self.tap]) & ((1 << 64) - 1)
        self.vec[self.feed] = x
        return x & ((1 << 63) - 1)


@pytest.mark.parametrize("seed", [0, -1, 1, 42, 2**31 - 1, 2**63 - 1, -(2**63), 987654321])
def test_lazy_generator_equals_eager_seeding(seed: int) -> None:
    # 1,500 outputs: well past the point (273) where reads hit words written by earlier outputs.
    lazy, eager = GoRand(seed), _EagerGoRand(seed)
    assert [lazy.int63() for _ in range(1500)] == [eager.int63() for _ in range(1500)]


def test_intn_bounds_and_63_bit_branch() -> None:
    rand = GoRand(7)
    with pytest.raises(ValueError):
        rand.intn(0)
    with pytest.raises(ValueError):
        rand.intn(2**63)
    big = 3 * 2**61 + 1  # > 2**31 - 1: drawn from Int63 with rejection
    ref = _EagerGoRand(7)
    limit = 2**63 - 1 - (2**63) % big
    expected = []
    for _ in range(50):
        v = ref.int63()
        while v > limit:
            v = ref.int63()
        expected.append(v % big)
    assert [rand.intn(big) for _ in range(50)] == expected
    assert all(0 <= GoRand(s).intn(1) == 0 for s in range(5))


# -- classification (AFF-REQ-001) ---------------------------------------------------------------

CLASSIFICATION: list[tuple[str, dict[str, Any], bool, bool]] = [
    # operation, params, qualifies under "rmw", under "any_write"
    ("PutItem", {}, False, True),
    ("PutItem", {"ConditionExpression": "attribute_not_exists(p)"}, True, True),
    ("PutItem", {"ConditionExpression": ""}, False, True),
    ("PutItem", {"Expected": {"a": {"Exists": False}}}, True, True),
    ("PutItem", {"Expected": {}}, False, True),
    ("PutItem", {"ReturnValues": "ALL_OLD"}, True, True),
    ("PutItem", {"ReturnValues": "NONE"}, False, True),
    ("PutItem", {"ReturnValues": ""}, True, True),
    ("DeleteItem", {}, False, True),
    ("DeleteItem", {"ConditionExpression": "a = :v"}, True, True),
    ("DeleteItem", {"Expected": {"a": {"Value": {"S": "x"}}}}, True, True),
    ("DeleteItem", {"ReturnValues": "ALL_OLD"}, True, True),
    ("DeleteItem", {"ReturnValues": "NONE"}, False, True),
    ("UpdateItem", {}, False, True),
    ("UpdateItem", {"UpdateExpression": "SET a = :v"}, True, True),
    ("UpdateItem", {"UpdateExpression": ""}, False, True),
    ("UpdateItem", {"ConditionExpression": "a = :v"}, True, True),
    ("UpdateItem", {"Expected": {"a": {"Exists": True}}}, True, True),
    ("UpdateItem", {"ReturnValues": "ALL_OLD"}, True, True),
    ("UpdateItem", {"ReturnValues": "UPDATED_OLD"}, True, True),
    ("UpdateItem", {"ReturnValues": "ALL_NEW"}, True, True),
    ("UpdateItem", {"ReturnValues": "UPDATED_NEW"}, False, True),
    ("UpdateItem", {"ReturnValues": "NONE"}, False, True),
    ("UpdateItem", {"AttributeUpdates": {"a": {"Action": "ADD", "Value": {"N": "1"}}}},
     True, True),
    ("UpdateItem", {"AttributeUpdates": {"a": {"Action": "DELETE", "Value": {"SS": ["x"]}}}},
     True, True),
    ("UpdateItem", {"AttributeUpdates": {"a": {"Action": "DELETE"}}}, False, True),
    ("UpdateItem", {"AttributeUpdates": {"a": {"Action": "PUT", "Value": {"S": "x"}}}},
     False, True),
    ("UpdateItem", {"AttributeUpdates": {"a": {"Value": {"S": "x"}}}}, False, True),
    ("BatchWriteItem", {"RequestItems": {}}, False, True),
    ("GetItem", {"ConsistentRead": True}, False, False),
    ("Query", {}, False, False),
    ("Scan", {}, False, False),
    ("BatchGetItem", {}, False, False),
    ("TransactWriteItems", {}, False, False),
    ("DescribeTable", {}, False, False),
]


@pytest.mark.parametrize(
    ("operation", "params", "rmw", "any_write"),
    CLASSIFICATION,
    ids=[f"{c[0]}-{sorted(c[1].items())!r}" for c in CLASSIFICATION],
)
def test_classification_table(
    operation: str, params: dict[str, Any], rmw: bool, any_write: bool
) -> None:
    assert qualifies("rmw", operation, params) is rmw
    assert qualifies("any_write", operation, params) is any_write


# -- targets, plans and voting ------------------------------------------------------------------

NODES = tuple(f"http://127.0.0.{i}:8000" for i in (95, 100, 7, 12, 250))


def _affinity(mode: Any = "any_write") -> Affinity:
    return Affinity(mode, {"t": "p", "u": "q"})


def test_single_write_uses_only_the_hash_key() -> None:
    aff = _affinity("rmw")
    a = aff.target("PutItem", {"TableName": "t", "Item": {"p": {"S": "k"}, "s": {"N": "1"}},
                               "ConditionExpression": "attribute_not_exists(p)"})
    b = aff.target("UpdateItem", {"TableName": "t", "Key": {"p": {"S": "k"}, "s": {"N": "2"}},
                                  "UpdateExpression": "SET x = :v"})
    c = aff.target("DeleteItem", {"TableName": "t", "Key": {"p": {"S": "k"}},
                                  "ReturnValues": "ALL_OLD"})
    assert a == b == c == Target((hash_key({"S": "k"}) or 0,))
    plan = aff.plan(a, NODES)
    assert len(plan) == len(NODES) and plan[0] in NODES and "http://x:1" not in plan
    assert list(plan) == seeded_order(a.seeds[0], Ring(NODES))
    assert sorted(plan) == sorted(NODES)
    assert plan[-1] == plan[len(NODES) - 1] and plan[1:3] == list(plan)[1:3]
    with pytest.raises(IndexError):
        plan[len(NODES)]


@pytest.mark.parametrize(
    "params",
    [
        {"TableName": "t", "Item": {"x": {"S": "k"}}},  # no partition key value
        {"TableName": "t", "Item": {"p": {"BOOL": True}}},  # unsupported type
        {"TableName": "t", "Item": "garbage"},
        {"TableName": 5, "Item": {"p": {"S": "k"}}},
        {"Item": {"p": {"S": "k"}}},
    ],
)
def test_unusable_single_writes_fall_back(params: dict[str, Any]) -> None:
    assert _affinity().target("PutItem", params) is None


def test_unconditional_put_in_rmw_mode_has_no_target() -> None:
    aff = _affinity("rmw")
    assert aff.target("PutItem", {"TableName": "t", "Item": {"p": {"S": "k"}}}) is None
    assert aff.target("BatchWriteItem", {"RequestItems": {"t": [
        {"PutRequest": {"Item": {"p": {"S": "k"}}}}]}}) is None


def _batch(entries: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    items: dict[str, list[Any]] = {}
    for table, entry in entries:
        items.setdefault(table, []).append(entry)
    return {"RequestItems": items}


def test_batch_votes_are_deterministic_whatever_the_order() -> None:
    aff = _affinity()
    ring = Ring(NODES)
    keys = [f"key-{i}" for i in range(12)]
    entries: list[tuple[str, dict[str, Any]]] = []
    for i, key in enumerate(keys):
        if i % 3 == 0:
            entries.append(("u", {"DeleteRequest": {"Key": {"q": {"S": key}}}}))
        else:
            entries.append(("t", {"PutRequest": {"Item": {"p": {"S": key}, "v": {"N": str(i)}}}}))
    plans = set()
    rng = random.Random(5)
    for _ in range(30):
        shuffled = entries[:]
        rng.shuffle(shuffled)
        # Non-key attributes never matter.
        for _table, entry in shuffled:
            if "PutRequest" in entry:
                entry["PutRequest"]["Item"]["v"] = {"N": str(rng.random())}
        target = aff.target("BatchWriteItem", _batch(shuffled))
        assert target is not None and target.batch
        plans.add(aff.plan(target, NODES))
    assert len(plans) == 1
    (plan,) = plans
    # Votes: each key's preferred node; order = votes desc, then canonical string.
    votes: dict[str, int] = {}
    for key in keys:
        first = seeded_order(hash_key({"S": key}) or 0, ring, 1)[0]
        votes[first] = votes.get(first, 0) + 1
    expected = sorted(votes, key=lambda n: (-votes[n], canonical_endpoint(n)))
    expected += [n for n in ring.nodes if n not in votes]
    assert list(plan) == expected


def test_batch_tie_breaks_on_canonical_string_and_skips_bad_entries() -> None:
    aff = _affinity()
    ring = Ring(NODES)
    # Find two keys preferring different nodes: one vote each, a tie.
    first: dict[str, str] = {}
    for i in itertools.count():
        node = seeded_order(hash_key({"S": f"k{i}"}) or 0, ring, 1)[0]
        first.setdefault(node, f"k{i}")
        if len(first) == 2:
            break
    (n1, k1), (n2, k2) = first.items()
    params = _batch([
        ("t", {"PutRequest": {"Item": {"p": {"S": k2}}}}),
        ("t", {"PutRequest": {"Item": {"p": {"S": k1}}}}),
        ("t", {"PutRequest": {"Item": {"p": {"BOOL": True}}}}),  # unsupported: skipped
        ("t", {"PutRequest": {"Item": {"p": {"S": "x"}}}, "DeleteRequest": {"Key": {}}}),
        ("t", {"Bogus": {}}),
        ("nometa", {"PutRequest": {"Item": {"p": {"S": "x"}}}}),  # unknown table: no vote
    ])
    target = aff.target("BatchWriteItem", params)  # describe=None: no lookup started
    assert target is not None and len(target.seeds) == 2
    plan = aff.plan(target, NODES)
    assert list(plan[:2]) == sorted([n1, n2], key=lambda n: canonical_endpoint(n).encode())
    assert sorted(plan) == sorted(NODES)


def test_batch_without_votes_falls_back() -> None:
    aff = _affinity()
    assert aff.target("BatchWriteItem", {"RequestItems": {}}) is None
    assert aff.target("BatchWriteItem", _batch([("nometa", {"PutRequest": {"Item": {}}})])) is None
    assert aff.target("BatchWriteItem", {"RequestItems": "x"}) is None


def test_health_never_changes_the_plan() -> None:
    aff = _affinity()
    target = aff.target("PutItem", {"TableName": "t", "Item": {"p": {"S": "stable"}}})
    assert target is not None
    # The ring is every discovered node; the order given by fleet does not matter either.
    assert list(aff.plan(target, NODES)) == list(aff.plan(target, tuple(reversed(NODES))))


def test_keys_spread_evenly_over_the_ring() -> None:
    ring = Ring(NODES)
    counts = dict.fromkeys(ring.nodes, 0)
    for i in range(5000):
        counts[seeded_order(hash_key({"S": f"user-{i}"}) or 0, ring, 1)[0]] += 1
    assert min(counts.values()) > 850 and max(counts.values()) < 1150, counts


# -- routing along a plan -----------------------------------------------------------------------


class _Fleet:
    def __init__(self) -> None:
        self.counter = 0
        self.quarantine: dict[str, int] = {}
        self.picks: list[str] = []

    def start(self) -> None:
        pass

    def nodes(self) -> tuple[str, ...]:
        return NODES

    def wait_for_nodes(self, timeout: float) -> tuple[str, ...]:
        return NODES

    def advance(self) -> int:
        self.counter += 1
        return self.counter - 1

    def record_pick(self, node: str) -> None:
        self.picks.append(node)

    def report_failure(self, node: str, generation: int | None = None) -> None:
        self.quarantine[node] = len(self.quarantine) + 1

    def report_success(self, node: str, generation: int | None = None) -> None:
        self.quarantine.pop(node, None)

    def health_view_of(self, nodes: tuple[str, ...]) -> dict[str, tuple[State, int]]:
        return {n: (State.QUARANTINED, 0) for n in self.quarantine}

    def empty_reason(self) -> str | None:
        return None


def test_router_walks_the_plan_healthy_first_then_cycles() -> None:
    fleet = _Fleet()
    router = Router(fleet, NODES[:1])
    plan = tuple(seeded_order(12345, Ring(NODES)))
    lazy = SeededPlan(12345, Ring(NODES))
    assert router.choose([], lazy) == plan[0]
    assert "not picked yet" in repr(lazy)  # the first attempt read only what it needed
    fleet.picks.clear()
    tried: list[str] = []
    for _ in range(len(plan)):
        tried.append(router.choose(tried, plan))
    assert tried == list(plan)
    # Retries beyond the plan start a new cycle in the same order.
    tried.append(router.choose(tried, plan))
    assert tried[-1] == plan[0]
    assert fleet.counter == 0  # the round-robin counter is untouched
    assert fleet.picks == tried
    # Quarantined nodes come after the healthy ones, in plan order.
    fleet.quarantine = {plan[0]: 1, plan[2]: 2}
    tried = []
    for _ in range(len(plan)):
        tried.append(router.choose(tried, plan))
    assert tried == [plan[1], plan[3], plan[4], plan[0], plan[2]]
    # Empty plan: ordinary round-robin.
    assert router.choose([], ()) in NODES and fleet.counter == 1


# -- partition-key metadata (AFF-REQ-002) -------------------------------------------------------


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "DescribeTable",
    )


def _described(name: str = "pk") -> dict[str, Any]:
    return {"Table": {"KeySchema": [{"AttributeName": "sk", "KeyType": "RANGE"},
                                    {"AttributeName": name, "KeyType": "HASH"}]}}


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (_client_error("ResourceNotFoundException", 400), True),
        (_client_error("AccessDeniedException", 400), True),
        (_client_error("ValidationException", 400), True),
        (_client_error("UnrecognizedClientException", 403), True),
        (_client_error("", 404), True),
        (_client_error("", 429), False),
        (_client_error("ThrottlingException", 400), False),
        (_client_error("ProvisionedThroughputExceededException", 400), False),
        (_client_error("InternalServerError", 500), False),
        (_client_error("", 503), False),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), False),
        (OSError("reset"), False),
    ],
    ids=repr,
)
def test_failure_classification(error: BaseException, permanent: bool) -> None:
    assert metadata.is_permanent(error) is permanent


def test_lookup_is_background_deduplicated_and_cached() -> None:
    gate = threading.Event()
    calls: list[str] = []

    def describe(table: str) -> Mapping[str, Any]:
        calls.append(table)
        assert gate.wait(10)
        return _described()

    keys = PartitionKeys()
    started = time.monotonic()
    for _ in range(50):  # concurrent misses: never blocking, one lookup
        assert keys.get("t", describe) is None
    assert time.monotonic() - started < 5
    assert _wait(lambda: calls == ["t"])
    gate.set()
    assert _wait(lambda: keys.get("t", describe) == "pk")
    assert calls == ["t"]
    keys.close()


def test_transient_failures_retry_with_backoff_then_give_up_without_cooldown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metadata, "BACKOFF_START", 0.01)
    stamps: list[float] = []

    def describe(table: str) -> Mapping[str, Any]:
        stamps.append(time.monotonic())
        raise _client_error("InternalServerError", 500)

    keys = PartitionKeys(sleep_random=lambda: 0.5)  # jitter factor exactly 1.0
    assert keys.get("t", describe) is None
    assert _wait(lambda: len(stamps) == 4 and not keys._running)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(g >= d * 0.99 for g, d in zip(gaps, (0.01, 0.02, 0.04), strict=True)), gaps
    # No cooldown after transient exhaustion: the next miss looks up again at once.
    assert keys.get("t", describe) is None
    assert _wait(lambda: len(stamps) == 8 and not keys._running)
    keys.close()


def test_backoff_doubles_to_two_seconds_with_twenty_percent_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    class _Stop:
        def is_set(self) -> bool:
            return False

        def wait(self, delay: float) -> bool:
            waits.append(delay)
            return False

    def failing(table: str) -> Mapping[str, Any]:
        raise OSError("down")

    for jitter, factor in ((0.0, 0.8), (1.0, 1.2)):
        waits.clear()
        monkeypatch.setattr(metadata, "BACKOFF_START", 0.6)
        keys = PartitionKeys(sleep_random=lambda j=jitter: j)
        keys._lookup("t", failing, _Stop())  # type: ignore[arg-type]
        assert waits == pytest.approx([0.6 * factor, 1.2 * factor, 2.0 * factor])


def test_permanent_failure_cools_down_for_five_minutes_unless_cleared() -> None:
    now = [1000.0]
    calls: list[str] = []

    def describe(table: str) -> Mapping[str, Any]:
        calls.append(table)
        if table == "nohash":
            return {"Table": {"KeySchema": [{"AttributeName": "x", "KeyType": "RANGE"}]}}
        raise _client_error("ResourceNotFoundException", 400)

    keys = PartitionKeys(clock=lambda: now[0])
    for table in ("gone", "nohash"):
        keys.get(table, describe)
        assert _wait(lambda t=table: calls.count(t) == 1 and t not in keys._running)
        keys.get(table, describe)
        now[0] += 299.0
        keys.get(table, describe)
        time.sleep(0.05)
        assert calls.count(table) == 1  # one attempt, no retry, cooldown holds
        now[0] += 2.0
        keys.get(table, describe)
        assert _wait(lambda t=table: calls.count(t) == 2 and t not in keys._running)
    keys.clear("gone")
    keys.get("gone", describe)
    assert _wait(lambda: calls.count("gone") == 3)
    keys.close()


def test_close_stops_lookups_and_drops_late_answers() -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(table: str) -> Mapping[str, Any]:
        entered.set()
        release.wait(10)
        return _described()

    def failing(table: str) -> Mapping[str, Any]:
        raise OSError("down")

    keys = PartitionKeys()
    keys.get("slow", slow)
    keys.get("backing-off", failing)
    assert entered.wait(10)
    threads = list(keys._running.values())
    release_later = threading.Timer(0.3, release.set)
    release_later.start()
    keys.close()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert keys.known() == {}  # the answer that arrived after close was dropped
    assert keys.attempts <= 3  # the backing-off lookup stopped early
    release_later.join()


def test_preset_keys_are_copied() -> None:
    given = {"t": "p"}
    keys = PartitionKeys(given)
    given["t"] = "changed"
    assert keys.get("t", None) == "p"


# -- Helper options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"key_route_affinity": "RMW"},
        {"key_route_affinity": "any"},
        {"key_route_affinity": True},
        {"key_route_affinity": "none"},
        {"partition_keys": {"t": "p"}},  # no effect without affinity: refused
        {"key_route_affinity": "rmw", "partition_keys": ["t", "p"]},
        {"key_route_affinity": "rmw", "partition_keys": {"t": ""}},
        {"key_route_affinity": "rmw", "partition_keys": {"": "p"}},
        {"key_route_affinity": "rmw", "partition_keys": {"t": 1}},
    ],
    ids=repr,
)
def test_bad_affinity_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Helper(["127.0.0.1"], **options)


def test_affinity_options_are_copied_and_pickle() -> None:
    keys = {"t": "p", "a": "b"}
    helper = Helper(["127.0.0.1"], key_route_affinity="any_write", partition_keys=keys)
    keys["t"] = "changed"
    clone = pickle.loads(pickle.dumps(helper))
    for h in (helper, clone):
        assert h._options.key_route_affinity == "any_write"
        assert dict(h._options.partition_keys or ()) == {"t": "p", "a": "b"}
    assert Helper(["127.0.0.1"], key_route_affinity="rmw")._options.partition_keys is None


def test_helper_close_stops_partition_key_lookups() -> None:
    helper = Helper(["127.0.0.1"], key_route_affinity="any_write", namespace="t-aff-close")
    helper._ensure()
    affinity = helper._affinity
    assert affinity is not None
    entered = threading.Event()

    def failing(table: str) -> Mapping[str, Any]:
        entered.set()
        raise OSError("unreachable")  # transient: the lookup backs off and retries

    assert affinity.keys.get("t", failing) is None
    assert entered.wait(10)
    threads = list(affinity.keys._running.values())
    assert threads
    helper.close()
    for thread in threads:
        assert not thread.is_alive()
    assert affinity.keys.attempts < 4  # stopped during its backoff, not after every retry


def test_a_call_keeps_its_plan_when_the_table_changes_between_attempts() -> None:
    from alternator_shm.hooks import AFFINITY_PLAN_KEY, AFFINITY_TARGET_KEY, HookOptions, _Handlers

    class _Router:
        def __init__(self) -> None:
            self.table = NODES
            self.calls: list[tuple[list[str], Any]] = []

        def nodes(self) -> tuple[str, ...]:
            return self.table

        def choose(self, tried: Any, plan: Any = None) -> str:
            self.calls.append((list(tried), plan))
            return str(plan[len(tried)]) if plan else NODES[0]

        def report_failure(self, node: str, error: BaseException) -> None: ...

        def report_success(self, node: str) -> None: ...

    class _Request:
        def __init__(self, context: dict[str, Any]) -> None:
            self.context = context
            self.url = "http://placeholder:1/"
            self.headers: dict[str, str] = {}
            self.data = b"{}"

    router = _Router()
    aff = _affinity()
    handlers = _Handlers(router, None, HookOptions(), (1.0, 1.0), aff, None)
    context: dict[str, Any] = {}

    class _Model:
        name = "PutItem"

    handlers.before_parameter_build({"TableName": "t", "Item": {"p": {"S": "k"}}}, _Model(),
                                    context)
    assert isinstance(context[AFFINITY_TARGET_KEY], Target)
    handlers.before_sign(_Request(context))  # type: ignore[arg-type]
    plan = context[AFFINITY_PLAN_KEY]
    router.table = NODES[:2]  # topology changes before the retry
    handlers.before_sign(_Request(context))  # type: ignore[arg-type]
    assert context[AFFINITY_PLAN_KEY] is plan
    assert [c[1] for c in router.calls] == [plan, plan]
    assert router.calls[1][0] == [plan[0]]
    # A later call sees the new table.
    later: dict[str, Any] = {}
    handlers.before_parameter_build({"TableName": "t", "Item": {"p": {"S": "k"}}}, _Model(), later)
    handlers.before_sign(_Request(later))  # type: ignore[arg-type]
    assert sorted(later[AFFINITY_PLAN_KEY]) == sorted(NODES[:2])
