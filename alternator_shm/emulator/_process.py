"""Realism mode: every node is a subprocess, so kill is a literal SIGKILL and pause a SIGSTOP.

The parent keeps the gossip registry, faults and request logs (the :class:`Node` objects) and
serves them to the node processes through a tiny control HTTP server on 127.0.0.1. The parent
binds each node's listening socket and hands the file descriptor to the child, so there is no
port race and a restart gets the very same address.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from urllib.parse import parse_qs

import urllib3

from alternator_shm.emulator._api import Fault
from alternator_shm.emulator._backends import (
    Backend,
    HttpBackend,
    NullBackend,
    cluster_access_key,
)
from alternator_shm.emulator._log import RequestLogEntry
from alternator_shm.emulator._profiles import Profile
from alternator_shm.emulator._runtime import RuntimeHost
from alternator_shm.emulator._server import FrontServer, Request, bind_listener
from alternator_shm.emulator._wire import Response

USERS_ENV = "ALTERNATOR_EMULATOR_USERS"


class ControlServer:
    """The registry endpoint node subprocesses call for /localnodes, faults and logging."""

    def __init__(self, cluster: RuntimeHost) -> None:
        self._cluster = cluster
        listener = bind_listener("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._server = FrontServer(listener, self._handle, name="emulator-control")
        self._server.start()

    def close(self) -> None:
        self._server.stop()

    def _handle(self, request: Request, abort: threading.Event) -> Response:
        path, _, query = request.target.partition("?")
        if path == "/storage":  # moto, called in this process on behalf of a node process
            target = request.header("X-Amz-Target") or ""
            operation = target.partition(".")[2]
            status, data = self._cluster.backend.call(operation, target, request.body)
            return Response(status, data, [("Content-Type", "application/x-amz-json-1.0")])
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            node = self._cluster.find_node(params.get("node", ""))
        except KeyError:
            return Response(404, b"unknown node")
        result: object
        if path == "/localnodes":
            result = node.localnodes(params.get("dc") or None, params.get("rack") or None)
        elif path == "/faults":
            kinds = tuple(params.get("kinds", "").split(","))
            result = [dataclasses.asdict(f) for f in node.fire_faults(kinds)]
        elif path == "/fault_active":
            result = node.fault_active(params.get("kind", ""))
        elif path == "/log":
            node.record(RequestLogEntry(**json.loads(request.body)))
            result = True
        else:
            return Response(404, b"")
        body = json.dumps(result).encode()
        return Response(200, body, [("Content-Type", "application/json")])


class ProcessRuntime:
    """Runs one node as ``python -m alternator_shm.emulator.node`` with an inherited socket."""

    def __init__(self, cluster: RuntimeHost, ip: str, control_url: str) -> None:
        self._cluster = cluster
        self._ip = ip
        self._control_url = control_url
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, listener: socket.socket) -> None:
        cluster = self._cluster
        fd = listener.fileno()
        backend = "null" if cluster.backend_name == "null" else str(cluster.backend_url)
        cmd = [
            sys.executable, "-m", "alternator_shm.emulator.node",
            "--fd", str(fd), "--ip", self._ip, "--control", self._control_url,
            "--backend", backend, "--account-id", cluster.account_id,
            "--profile-json", json.dumps(dataclasses.asdict(cluster.profile)),
        ]  # fmt: skip
        if cluster.forward_transactions:
            cmd.append("--forward-transactions")
        files = cluster.cert_files_for(self._ip)
        if files is not None:
            cmd += ["--certfile", files[0], "--keyfile", files[1]]
            client_ca = cluster.client_ca_file()
            if client_ca is not None:
                cmd += ["--client-ca", client_ca]
        env = dict(os.environ)
        if cluster.users is not None:
            env[USERS_ENV] = json.dumps(cluster.users)
        else:
            env.pop(USERS_ENV, None)
        try:
            self._proc = subprocess.Popen(cmd, pass_fds=(fd,), env=env)
        finally:
            listener.close()  # the child owns the listening socket now

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(10)

    def stop(self) -> None:
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        # SIGSTOP is asynchronous; return only once the kernel shows the process stopped.
        deadline = time.monotonic() + 2.0
        while self._proc is not None and time.monotonic() < deadline:
            try:
                with open(f"/proc/{self._proc.pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                        return
            except OSError:
                return
            time.sleep(0.005)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)


class RemoteContext:
    """The :class:`~alternator_shm.emulator._api.NodeContext` of a node subprocess."""

    def __init__(
        self,
        ip: str,
        control_url: str,
        profile: Profile,
        users: Mapping[str, str] | None,
        forward_transactions: bool,
        backend: Backend,
    ) -> None:
        self.ip = ip
        self.profile = profile
        self.users = users
        self.forward_transactions = forward_transactions
        self.backend = backend
        self.hang_poll = 0.2
        self._url = control_url
        self._pool = urllib3.PoolManager(maxsize=16, retries=False)

    def _get(self, path: str, **params: str) -> object:
        fields = {"node": self.ip, **params}
        resp = self._pool.request("GET", self._url + path, fields=fields, timeout=10.0)
        return json.loads(resp.data)

    def fire_faults(self, kinds: tuple[str, ...]) -> list[Fault]:
        raw = self._get("/faults", kinds=",".join(kinds))
        assert isinstance(raw, list)
        return [Fault(**item) for item in raw]

    def fault_active(self, kind: str) -> bool:
        return bool(self._get("/fault_active", kind=kind))

    def localnodes(self, dc: str | None, rack: str | None) -> list[str]:
        raw = self._get("/localnodes", dc=dc or "", rack=rack or "")
        assert isinstance(raw, list)
        return [str(x) for x in raw]

    def record(self, entry: RequestLogEntry) -> None:
        self._pool.request(
            "POST",
            f"{self._url}/log?node={self.ip}",
            body=json.dumps(dataclasses.asdict(entry)).encode(),
            timeout=10.0,
        )


def make_child_backend(spec: str, account_id: str) -> Backend:
    if spec == "null":
        return NullBackend()
    return HttpBackend(
        spec, {"x-moto-account-id": account_id}, access_key=cluster_access_key(account_id)
    )
