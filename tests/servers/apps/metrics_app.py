"""The WSGI app of the server tests plus ``/metrics``: prometheus_client's multiprocess mode.

This is the README's multiprocess recipe. gunicorn runs with ``PROMETHEUS_MULTIPROC_DIR`` set:
the application's own metrics are per-process files merged by ``MultiProcessCollector``, and
``AlternatorCollector`` adds the host-wide alternator-shm figures read from shared memory, so
whichever worker answers a scrape reports the same fleet-wide numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from wsgi_app import app as api_app

from alternator_shm.metrics import AlternatorCollector

# An application metric, kept per worker and merged at scrape time by the multiprocess mode.
CALLS = Counter("app_calls", "DynamoDB calls made by this app")


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(AlternatorCollector())
    return registry


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics":
        data = generate_latest(metrics_registry())
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))]
        )
        return [data]
    if environ.get("PATH_INFO") == "/call":
        CALLS.inc()
    return api_app(environ, start_response)
