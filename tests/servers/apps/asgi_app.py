"""A tiny Starlette app served by real uvicorn workers in the server tests (README recipe).

The Helper is built at import time (configuration only) and each worker opens its async client
in the application's lifespan, so every worker process joins the host's fleet on startup and
closes its connections on shutdown.

``GET /call?op=put|get&k=KEY`` makes exactly one DynamoDB call and answers JSON with the pid
of the worker that served it, like ``wsgi_app``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fleet_config import TABLE, build_helper
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

helper = build_helper()  # configuration only: safe before uvicorn / gunicorn fork workers
clients: dict[str, Any] = {}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with helper.new_async_dynamodb_client() as ddb:
        clients["ddb"] = ddb
        yield
    helper.close()


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


async def call(request: Request) -> JSONResponse:
    ddb = clients["ddb"]
    op = request.query_params.get("op", "get")
    key = {"p": {"S": request.query_params.get("k", "k")}}
    try:
        if op == "put":
            out = await ddb.put_item(TableName=TABLE, Item={**key, "v": {"N": "1"}})
        else:
            out = await ddb.get_item(TableName=TABLE, Key=key)
    except (BotoCoreError, ClientError) as exc:
        return JSONResponse({"pid": os.getpid(), "error": repr(exc)}, status_code=500)
    retries = int(out.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return JSONResponse({"pid": os.getpid(), "retries": retries})


app = Starlette(routes=[Route("/pid", pid), Route("/call", call)], lifespan=lifespan)
