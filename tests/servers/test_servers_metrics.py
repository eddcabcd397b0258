"""gunicorn with PROMETHEUS_MULTIPROC_DIR: host-wide alternator-shm metrics from any worker."""

from __future__ import annotations

import sys

import pytest

from servers.servers_harness import (
    APPS,
    FleetEnv,
    ServerProcess,
    drive_http,
    fleet_stats,
    free_port,
    http_get,
    wait_for,
)

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]


def _scrape(port: int, namespace: str) -> tuple[float, float, dict[str, float]]:
    status, body = http_get("127.0.0.1", port, "/metrics")
    assert status == 200, body[:300]
    app_calls = 0.0
    picks: dict[str, float] = {}
    generation = -1.0
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "app_calls_total":
                app_calls += s.value
            elif s.labels.get("namespace") != namespace:
                continue
            elif s.name == "alternator_shm_node_picks_total":
                picks[s.labels["node"]] = s.value
            elif s.name == "alternator_shm_table_generation":
                generation = s.value
    return app_calls, generation, picks


def test_gunicorn_multiprocess_metrics(fleet_env: FleetEnv) -> None:
    port = free_port()
    prom_dir = fleet_env.tmp / "prom"
    prom_dir.mkdir()
    env = dict(fleet_env.env, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    argv = [
        sys.executable, "-m", "gunicorn", "metrics_app:app",
        "--workers", "4", "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS),
        "--timeout", "30", "--graceful-timeout", "3", "--log-level", "warning",
    ]
    with ServerProcess(argv, env, fleet_env.tmp / "gunicorn.log") as server:
        wait_for(lambda: len(server.children()) >= 4, 30, "4 workers", server.output)
        result = drive_http(
            f"http://127.0.0.1:{port}", min_seconds=1.0, min_calls=40, min_pids=2
        )
        assert result.failed == 0 and not result.errors, result.errors[:3]
        assert len(result.pids) >= 2
        stats = fleet_stats(fleet_env.namespace)
        assert stats is not None
        scrapes = [_scrape(port, fleet_env.namespace) for _ in range(8)]
    for app_calls, generation, picks in scrapes:
        # The app's own counter, merged over the workers by the multiprocess mode.
        assert app_calls == float(result.ok)
        # alternator-shm's figures are host-wide whichever worker answered.
        assert set(picks) == set(stats.nodes)
        assert sum(picks.values()) == float(stats.picks) >= result.ok
        assert generation >= 1.0
    assert len({tuple(sorted(p.items())) for _, _, p in scrapes}) == 1
