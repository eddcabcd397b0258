"""gunicorn and uWSGI: real pre-forking web servers, 4 workers, one shared fleet.

Each test serves ``apps/wsgi_app.py`` (Helper and client built at import time) and checks,
from what the emulated nodes saw: an exact split over the nodes across all workers, one
``/localnodes`` poller for the host, and a new leader without failed calls after SIGKILL of
the leader worker.
"""

from __future__ import annotations

import sys

import pytest

from servers.servers_harness import (
    APPS,
    FleetEnv,
    ServerProcess,
    free_port,
    http_scenario,
    uwsgi_command,
)

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]

WORKERS = 4


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_gunicorn_sync_workers(fleet_env: FleetEnv, preload: bool) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "wsgi_app:app",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(APPS),
        "--timeout",
        "30",
        "--graceful-timeout",
        "3",
        "--log-level",
        "warning",
    ]
    if preload:
        # The Helper is built in the master before it forks; the per-worker hook starts it.
        argv += ["--preload", "--config", str(APPS / "gunicorn_conf.py")]
    with ServerProcess(argv, fleet_env.env, fleet_env.tmp / "gunicorn.log") as server:
        http_scenario(fleet_env, server, f"http://127.0.0.1:{port}", WORKERS)


@pytest.mark.parametrize("lazy_apps", [False, True], ids=["prefork", "lazy-apps"])
def test_uwsgi_workers(fleet_env: FleetEnv, lazy_apps: bool) -> None:
    port = free_port()
    argv = [
        *uwsgi_command(),
        "--master",
        "--processes",
        str(WORKERS),
        "--http-socket",
        f"127.0.0.1:{port}",
        "--chdir",
        str(APPS),
        "--pythonpath",
        str(APPS),
        "--module",
        "wsgi_app:application",
        "--enable-threads",  # the refresher is a thread: uWSGI 2.0 runs none without this
        "--need-app",
        "--die-on-term",
        "--disable-logging",
    ]
    if lazy_apps:
        argv.append("--lazy-apps")
    with ServerProcess(argv, fleet_env.env, fleet_env.tmp / "uwsgi.log") as server:
        http_scenario(fleet_env, server, f"http://127.0.0.1:{port}", WORKERS)
