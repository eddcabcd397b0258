"""The Helper every server app of the server tests builds, configured from the environment.

Server workers (gunicorn, uWSGI, Celery, spawn/forkserver pool children) cannot receive Python
objects from the test, so the test passes the emulator's address and a unique namespace in
``ALTSHM_TEST_*`` variables. Real deployments would hard-code or read their own settings the
same way: the point is that every worker can rebuild the same Helper on its own.
"""

from __future__ import annotations

import os

from alternator_shm import Helper


def settings_from_env() -> dict[str, object]:
    """The Helper options, picklable (also used as ``initargs`` by the pool tests)."""
    interval = float(os.environ.get("ALTSHM_TEST_REFRESH", "0.3"))
    return {
        "seeds": os.environ["ALTSHM_TEST_SEEDS"].split(","),
        "port": int(os.environ["ALTSHM_TEST_PORT"]),
        "credentials": (os.environ["ALTSHM_TEST_KEY"], os.environ["ALTSHM_TEST_SECRET"]),
        "namespace": os.environ["ALTSHM_TEST_NS"],
        "refresh_interval": interval,
        # Same period while idle, so the test can count polls without caring about traffic.
        "idle_refresh_interval": interval,
    }


def build_helper(settings: dict[str, object] | None = None) -> Helper:
    opts = dict(settings if settings is not None else settings_from_env())
    seeds = opts.pop("seeds")
    assert isinstance(seeds, list)
    return Helper(seeds, **opts)  # type: ignore[arg-type]


TABLE = "servers_test"
