"""Pool-worker functions for the ``multiprocessing.Pool`` server test (fork/spawn/forkserver).

The recipe: ``Pool(initializer=attach, initargs=(settings,))`` where ``settings`` are plain
picklable Helper options, so spawn and forkserver children (fresh interpreters) can rebuild the
same Helper; fork children rebuild it too, which is equally cheap and never shares the parent's
state by accident.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fleet_config import TABLE, build_helper

from alternator_shm import Helper

_helper: Helper | None = None
_client: Any = None


def attach(settings: dict[str, Any]) -> None:
    """Pool initializer: build this worker's Helper and join the host's fleet now."""
    global _helper, _client
    _helper = build_helper(settings)
    _client = _helper.new_dynamodb_client()
    _helper.start()


def calls(count: int, tag: str) -> dict[str, Any]:
    assert _client is not None, "initializer did not run"
    ok = failed = retries = 0
    for i in range(count):
        key = {"p": {"S": f"{tag}-{i}"}}
        try:
            if i % 2:
                out = _client.get_item(TableName=TABLE, Key=key)
            else:
                out = _client.put_item(TableName=TABLE, Item={**key, "v": {"N": str(i)}})
        except (BotoCoreError, ClientError):
            failed += 1
            continue
        ok += 1
        retries += int(out.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return {"pid": os.getpid(), "ok": ok, "failed": failed, "retries": retries}


def hold(seconds: float, marker_dir: str) -> int:
    """Keep this worker busy (so it holds none of the pool's queue locks) and say so.

    SIGKILLing a *idle* Pool worker can leave the pool's shared task-queue lock held forever
    (the worker blocks in ``get()`` holding it): a multiprocessing limitation, not ours. A
    worker inside a task holds no pool lock, so the test kills the leader only then.
    """
    import time

    open(os.path.join(marker_dir, str(os.getpid())), "w").close()
    time.sleep(seconds)
    return os.getpid()
