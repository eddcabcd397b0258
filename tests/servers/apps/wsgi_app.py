"""A tiny WSGI app served by real gunicorn and uWSGI workers in the server tests.

This is the recipe of the README (Worker servers): the Helper and the client are built at import
time, which happens in the pre-fork master with ``--preload`` / uWSGI's default mode and in
each worker otherwise. Nothing is attached and no thread runs until a worker handles its first
request, so both placements work unchanged.

``GET /call?op=put|get&k=KEY`` makes exactly one DynamoDB call and answers JSON with the pid
of the worker that served it, so the test knows how many calls the fleet made and by whom.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from botocore.exceptions import BotoCoreError, ClientError
from fleet_config import TABLE, build_helper

helper = build_helper()  # configuration only: safe in a master that forks
ddb = helper.new_dynamodb_client()

# Which fork hooks ran in this process (the uWSGI test reports them).
hooks_ran: list[str] = []

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _reply(start_response: StartResponse, status: str, data: dict[str, Any]) -> Iterable[bytes]:
    body = json.dumps(data).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/pid":
        return _reply(start_response, "200 OK", {"pid": os.getpid(), "hooks": hooks_ran})
    if path != "/call":
        return _reply(start_response, "404 Not Found", {"error": path})
    op = query.get("op", ["get"])[0]
    key = {"p": {"S": query.get("k", ["k"])[0]}}
    try:
        if op == "put":
            out = ddb.put_item(TableName=TABLE, Item={**key, "v": {"N": "1"}})
        else:
            out = ddb.get_item(TableName=TABLE, Key=key)
    except (BotoCoreError, ClientError) as exc:
        return _reply(
            start_response, "500 Internal Server Error", {"pid": os.getpid(), "error": repr(exc)}
        )
    retries = int(out.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return _reply(start_response, "200 OK", {"pid": os.getpid(), "retries": retries})


application = app  # uWSGI's default callable name

try:  # uWSGI only: record that its post-fork hook ran, and warm up the worker there.
    import uwsgidecorators

    @uwsgidecorators.postfork  # type: ignore[misc]
    def _start_in_worker() -> None:
        hooks_ran.append("uwsgi.postfork")
        helper.start()

except ImportError:
    pass
