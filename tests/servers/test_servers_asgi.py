"""uvicorn and gunicorn + UvicornWorker: real async workers, one shared fleet.

Each test serves ``apps/asgi_app.py`` (async client opened in each worker's lifespan) and checks,
from what the emulated nodes saw: an exact split over the nodes across all workers, one
``/localnodes`` poller for the host, and a new leader without failed calls after SIGKILL of the
leader worker. The mixed test runs sync gunicorn workers and uvicorn workers on one namespace.
"""

from __future__ import annotations

import sys
import threading

import pytest

from servers.servers_harness import (
    APPS,
    Drive,
    FleetEnv,
    ServerProcess,
    check_phase,
    drive_http,
    free_port,
    http_get,
    http_scenario,
    run_phase,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]

WORKERS = 4


def _uvicorn(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "asgi_app:app",
        "--workers", str(workers),
        "--host", "127.0.0.1", "--port", str(port),
        "--app-dir", str(APPS),
        "--log-level", "warning",
        "--no-access-log",
    ]


def _gunicorn(port: int, workers: int, worker_class: str, app: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", app,
        "--workers", str(workers),
        "--worker-class", worker_class,
        "--bind", f"127.0.0.1:{port}",
        "--chdir", str(APPS),
        "--timeout", "30",
        "--graceful-timeout", "3",
        "--log-level", "warning",
    ]


def _ready(server: ServerProcess, port: int, workers: int) -> None:
    """uvicorn forks its workers before they listen: wait until the app answers."""
    wait_for(lambda: len(server.children()) >= workers, 30, f"{workers} workers", server.output)

    def answers() -> bool:
        try:
            return http_get("127.0.0.1", port, "/pid", timeout=5)[0] == 200
        except OSError:
            return False

    wait_for(answers, 30, "the app to answer", server.output)


def test_uvicorn_workers(fleet_env: FleetEnv) -> None:
    port = free_port()
    with ServerProcess(_uvicorn(port, WORKERS), fleet_env.env, fleet_env.tmp / "uv.log") as s:
        _ready(s, port, WORKERS)
        http_scenario(fleet_env, s, f"http://127.0.0.1:{port}", WORKERS)


def test_gunicorn_uvicorn_workers(fleet_env: FleetEnv) -> None:
    port = free_port()
    argv = _gunicorn(port, WORKERS, "uvicorn.workers.UvicornWorker", "asgi_app:app")
    with ServerProcess(argv, fleet_env.env, fleet_env.tmp / "gu.log") as server:
        _ready(server, port, WORKERS)
        http_scenario(fleet_env, server, f"http://127.0.0.1:{port}", WORKERS)


def test_mixed_sync_and_async_fleet(fleet_env: FleetEnv) -> None:
    """gunicorn sync workers and uvicorn workers on one host split as one fleet."""
    sync_port, async_port = free_port(), free_port()
    sync_argv = _gunicorn(sync_port, 2, "sync", "wsgi_app:app")
    async_argv = _uvicorn(async_port, 2)
    with ServerProcess(sync_argv, fleet_env.env, fleet_env.tmp / "sync.log") as sync_server, \
            ServerProcess(async_argv, fleet_env.env, fleet_env.tmp / "async.log") as async_server:
        _ready(sync_server, sync_port, 2)
        _ready(async_server, async_port, 2)
        for base in (f"http://127.0.0.1:{sync_port}", f"http://127.0.0.1:{async_port}"):
            warm = drive_http(base, min_seconds=0.0, min_calls=6, max_calls=6)
            assert warm.failed == 0 and not warm.errors, warm.errors[:3]

        def both() -> Drive:
            results: list[Drive] = []

            def run(base: str) -> None:
                results.append(drive_http(base, threads=3))

            threads = [
                threading.Thread(target=run, args=(f"http://127.0.0.1:{p}",))
                for p in (sync_port, async_port)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=90)
            merged = Drive()
            for r in results:
                merged.ok += r.ok
                merged.failed += r.failed
                merged.retries += r.retries
                merged.pids |= r.pids
                merged.errors += r.errors
            return merged

        phase = run_phase(fleet_env, both)
        check_phase(phase)
        served = phase.drive.pids
        assert served & sync_server.children() and served & async_server.children(), served
