"""gunicorn settings of the server tests: the per-worker hook of the recipe.

``post_worker_init`` runs in each worker after the app is loaded (with or without
``--preload``), so starting the Helper there attaches the worker before its first request.
It is optional: without it the first request attaches. Never start it in ``on_starting`` or
``when_ready``: those run in the master, which keeps forking.
"""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    from wsgi_app import helper, hooks_ran

    hooks_ran.append("gunicorn.post_worker_init")
    helper.start()
