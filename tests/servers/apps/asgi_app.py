"""A tiny FastAPI app served by real uvicorn workers in the server tests (the README recipe).

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
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fleet_config import TABLE, build_helper

helper = build_helper()  # configuration only: safe before uvicorn / gunicorn fork workers
clients: dict[str, Any] = {}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One async client per worker process, open for the worker's whole life.
    async with helper.new_async_dynamodb_client() as ddb:
        clients["ddb"] = ddb
        yield
    helper.close()


app = FastAPI(lifespan=lifespan)


@app.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/call")
async def call(op: str = "get", k: str = "k") -> Any:
    ddb = clients["ddb"]
    key = {"p": {"S": k}}
    try:
        if op == "put":
            out = await ddb.put_item(TableName=TABLE, Item={**key, "v": {"N": "1"}})
        else:
            out = await ddb.get_item(TableName=TABLE, Key=key)
    except (BotoCoreError, ClientError) as exc:
        return JSONResponse({"pid": os.getpid(), "error": repr(exc)}, status_code=500)
    retries = int(out.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return {"pid": os.getpid(), "retries": retries}
