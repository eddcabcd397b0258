"""Affinity-routed calls do not advance the round-robin counter, yet they are traffic: the
refresher must keep its active period, or the node table goes stale for idle_refresh_interval
(a review found 12 s without a refresh, a killed node kept in the table)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_helper_support import make_helper, wait_for

from alternator_shm.emulator import Cluster

USERS = {"affk": "affs"}


@pytest.mark.parametrize("shared", ["auto", "off"])
def test_affinity_only_traffic_keeps_the_active_refresh_period(shared: str) -> None:
    with Cluster(nodes=3, users=USERS, backend="moto") as cluster, make_helper(
        cluster,
        key_route_affinity="rmw",
        partition_keys={"t": "pk"},
        refresh_interval=0.2,
        idle_refresh_interval=60.0,
        shared=shared,
    ) as h:
        ddb: Any = h.new_dynamodb_client()
        ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        h.live_nodes()
        before = h.stats().refreshes
        deadline = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < deadline:  # conditional puts only: every one affinity-routed
            ddb.put_item(
                TableName="t",
                Item={"pk": {"S": f"k{i % 5}"}, "v": {"N": str(i)}},
                ConditionExpression="attribute_not_exists(nope)",
            )
            i += 1
        # With 0.2 s active and 60 s idle periods, 3 s of traffic means several refreshes;
        # an idle refresher would have made none.
        assert wait_for(lambda: h.stats().refreshes >= before + 3, 5.0), (
            before, h.stats().refreshes)
