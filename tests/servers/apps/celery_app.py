"""A Celery app for the prefork server test, with a broker that needs no server.

kombu's filesystem transport passes messages through a directory and the ``file://`` result
backend stores results in another, so the test needs no Redis or RabbitMQ. The recipe part is
the three lines around ``worker_process_init``: build the Helper at import (it runs in the
worker's main process, which then forks the pool children), and start it in each child.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import Celery
from celery.signals import worker_process_init
from fleet_config import TABLE, build_helper

_DIR = os.environ["ALTSHM_TEST_CELERY_DIR"]
for _sub in ("queue", "processed", "results", "control"):
    os.makedirs(os.path.join(_DIR, _sub), exist_ok=True)

app = Celery("altshm_servers_test")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": os.path.join(_DIR, "queue"),
        "data_folder_out": os.path.join(_DIR, "queue"),
        "processed_folder": os.path.join(_DIR, "processed"),
        # kombu keeps its control exchanges in ./control by default; not in the tree.
        "control_folder": os.path.join(_DIR, "control"),
        "polling_interval": 0.05,
    },
    result_backend="file://" + os.path.join(_DIR, "results"),
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
)

helper = build_helper()  # imported in the worker's main process: configuration only
ddb = helper.new_dynamodb_client()
_init_ran: list[int] = []


@worker_process_init.connect
def _attach_pool_child(**_: Any) -> None:
    # Runs in each prefork child; must be quick (Celery kills a child whose init takes > 4 s).
    _init_ran.append(os.getpid())
    helper.start()


@app.task
def calls(count: int, tag: str) -> dict[str, Any]:
    """Make ``count`` DynamoDB calls; report who made them and how they went."""
    ok = failed = retries = 0
    for i in range(count):
        key = {"p": {"S": f"{tag}-{i}"}}
        try:
            if i % 2:
                out = ddb.get_item(TableName=TABLE, Key=key)
            else:
                out = ddb.put_item(TableName=TABLE, Item={**key, "v": {"N": str(i)}})
        except (BotoCoreError, ClientError):
            failed += 1
            continue
        ok += 1
        retries += int(out.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return {
        "pid": os.getpid(),
        "ok": ok,
        "failed": failed,
        "retries": retries,
        "init_ran": os.getpid() in _init_ran,
    }


@app.task
def whoami() -> int:
    return os.getpid()


@app.task
def hold(seconds: float, marker_dir: str) -> int:
    """Keep this pool child busy, and say so (the test kills the leader only while busy)."""
    import time

    open(os.path.join(marker_dir, str(os.getpid())), "w").close()
    time.sleep(seconds)
    return os.getpid()
