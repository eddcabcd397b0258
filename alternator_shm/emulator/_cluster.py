"""The cluster: nodes on their own loopback IPs sharing one port, one gossip registry, one store.

Gossip is modelled as one registry (the node objects themselves, under the cluster lock); each
node answers ``/localnodes`` from its own view of it, which is where failure-detection delay,
per-profile liveness rules and stale-view overrides come in.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from alternator_shm.emulator import _api
from alternator_shm.emulator._api import FAULT_KINDS, Fault
from alternator_shm.emulator._backends import (
    Backend,
    DynamoDBLocalServer,
    HttpBackend,
    MotoBackend,
    NullBackend,
    cluster_access_key,
)
from alternator_shm.emulator._log import RequestLog, RequestLogEntry
from alternator_shm.emulator._process import ControlServer, ProcessRuntime
from alternator_shm.emulator._profiles import Profile, get_profile, with_header_options
from alternator_shm.emulator._runtime import Runtime, ThreadRuntime
from alternator_shm.emulator._server import FrontServer, Request, bind_listener
from alternator_shm.emulator._wire import Response

_log = logging.getLogger("alternator_shm.emulator")

BACKENDS = ("moto", "dynamodb-local", "null")
BeforeServing = Literal["closed", "reset"]
BEFORE_SERVING = ("closed", "reset")


class Node:
    """One emulated Alternator node. Create nodes through :class:`Cluster`, not directly."""

    def __init__(
        self, cluster: Cluster, ip: str, dc: str, rack: str, rpc_address: str | None = None
    ) -> None:
        self._cluster = cluster
        self.ip = ip
        self.dc = dc
        self.rack = rack
        self.rpc_address = rpc_address or ip
        self._status = "STOPPED"  # gossip status: NORMAL, JOINING, DRAINED, LEFT, STOPPED
        self._alive = False
        self._paused = False
        self._serving = True  # False: NORMAL in gossip, Alternator port not open yet
        self._refuser: FrontServer | None = None  # accepts and resets while not serving
        self._down_since = 0.0
        self._view: list[str] | None = None
        self._faults: list[Fault] = []
        self._request_log = RequestLog()
        self._runtime: Runtime | None = None
        self._join_cancel: threading.Event | None = None
        self._join_thread: threading.Thread | None = None
        # NodeContext attributes used by the request handler.
        self.profile: Profile = cluster.profile
        self.users: Mapping[str, str] | None = cluster.users
        self.forward_transactions: bool = cluster.forward_transactions
        self.hang_poll = 0.05

    def __repr__(self) -> str:
        return f"<Node {self.ip} {self.dc}/{self.rack} {self.state}>"

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        return self._cluster.port

    @property
    def url(self) -> str:
        return f"{self._cluster.scheme}://{self.ip}:{self._cluster.port}"

    @property
    def backend(self) -> Backend:
        return self._cluster._backend

    @property
    def state(self) -> str:
        """NORMAL, JOINING, LISTED_NOT_SERVING, DOWN (killed), PAUSED, DRAINED, LEFT
        (decommissioned) or STOPPED."""
        with self._cluster._lock:
            if self._status == "NORMAL" and not self._alive:
                return "PAUSED" if self._paused else "DOWN"
            if self._status == "NORMAL" and not self._serving:
                return "LISTED_NOT_SERVING"
            return self._status

    @property
    def log(self) -> list[RequestLogEntry]:
        return self._request_log.snapshot()

    def clear_log(self) -> None:
        self._request_log.clear()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen on the shared port and become NORMAL (no-op when already serving)."""
        with self._cluster._lock:
            self._cancel_join()
            self._start_locked()

    def _start_locked(self) -> None:
        if self._runtime is not None:
            return
        self._stop_refuser()
        listener = bind_listener(self.ip, self._cluster.port)
        self._runtime = self._cluster._make_runtime(self)
        self._runtime.start(listener)
        self._status = "NORMAL"
        self._alive = True
        self._paused = False
        self._serving = True

    def _stop_refuser(self) -> None:
        refuser, self._refuser = self._refuser, None
        if refuser is not None:
            refuser.kill(reset=True)

    def hold_serving(self, mode: BeforeServing = "closed") -> None:
        """Listed before serving: gossip NORMAL, so every other node lists this one in
        ``/localnodes``, but the Alternator port is not open yet, as when a real node has
        joined and not yet started its protocol servers (main.cc registers them last).

        ``mode="closed"``: connections are refused (ECONNREFUSED); ``"reset"``: they are
        accepted and reset at once. Lasts until :meth:`serve` (or :meth:`start`).
        """
        if mode not in BEFORE_SERVING:
            raise ValueError(f"mode must be one of {BEFORE_SERVING}, not {mode!r}")
        with self._cluster._lock:
            self._cancel_join()
            runtime, self._runtime = self._runtime, None
        if runtime is not None:  # outside the lock: its handler threads may be waiting on it
            runtime.kill()
        with self._cluster._lock:
            self._hold_locked(mode)

    def _hold_locked(self, mode: BeforeServing) -> None:
        assert self._runtime is None, "stop the runtime before holding"
        self._stop_refuser()
        if mode == "reset":
            listener = bind_listener(self.ip, self._cluster.port)
            self._refuser = FrontServer(
                listener, _refuse, name=f"node-{self.ip}-refusing", refuse=True
            )
            self._refuser.start()
        self._status = "NORMAL"
        self._alive = True
        self._paused = False
        self._serving = False

    def serve(self) -> None:
        """End :meth:`hold_serving` (or a ``serve_delay``): open the port and answer.

        A no-op on a node that already serves. Raises RuntimeError on a node in any other state
        (killed, paused, joining, decommissioned...): a real node does not come back by opening
        a port; use :meth:`start` (a restart) for that.
        """
        state = self.state
        if state == "NORMAL":
            return
        if state != "LISTED_NOT_SERVING":
            raise RuntimeError(
                f"node {self.ip} is {state}: serve() only ends hold_serving() or a "
                "serve_delay; start() restarts a node"
            )
        with self._cluster._lock:
            self._cancel_join()
            self._start_locked()

    def kill(self) -> None:
        """Abrupt death: connections refused, in-flight ones reset; others notice after the
        cluster's ``failure_detect_delay`` (never under profile 6.1)."""
        with self._cluster._lock:
            self._cancel_join()
            runtime, self._runtime = self._runtime, None
            if self._alive:
                self._down_since = time.monotonic()
            self._alive = False
            self._paused = False
            self._serving = True
            if self._status == "JOINING":
                self._status = "STOPPED"
            self._stop_refuser()
        if runtime is not None:
            runtime.kill()

    def pause(self) -> None:
        """SIGSTOP semantics: connections are accepted, requests are never answered."""
        with self._cluster._lock:
            if self._runtime is None or self._paused:
                return
            self._runtime.pause()
            self._paused = True
            self._alive = False
            self._down_since = time.monotonic()

    def resume(self) -> None:
        with self._cluster._lock:
            if self._runtime is None or not self._paused:
                return
            self._runtime.resume()
            self._paused = False
            self._alive = True

    def drain(self) -> None:
        """``nodetool drain``: the port closes and every other node drops it at once."""
        with self._cluster._lock:
            self._cancel_join()
            runtime, self._runtime = self._runtime, None
            self._status = "DRAINED"
            self._alive = False
            self._paused = False
            self._serving = True
            self._stop_refuser()
        if runtime is not None:
            runtime.stop()

    def decommission(self) -> None:
        """Leave the cluster for good: closed and removed from the topology."""
        self.drain()
        with self._cluster._lock:
            self._status = "LEFT"

    def restart(self) -> None:
        self.kill()
        self.start()

    def join(
        self,
        delay: float = 0.0,
        serve_delay: float | None = 0.0,
        before_serving: BeforeServing = "closed",
    ) -> None:
        """Bootstrap: JOINING with the port closed until ``delay`` seconds pass, then NORMAL.

        Once NORMAL, the node is listed by the others at once, but opens its port only after
        ``serve_delay`` more seconds (None: only when :meth:`serve` is called); meanwhile
        connections are refused or reset (``before_serving``, see :meth:`hold_serving`).
        """
        if before_serving not in BEFORE_SERVING:
            raise ValueError(f"before_serving must be one of {BEFORE_SERVING}")
        self.kill()
        if delay <= 0 and serve_delay is not None and serve_delay <= 0:
            self.start()
            return
        cancel = threading.Event()
        with self._cluster._lock:
            self._status = "JOINING"
            self._alive = True  # gossip sees a bootstrapping node as alive (listed by <= 6.0)
            self._join_cancel = cancel

        def finish() -> None:
            try:
                if delay > 0 and cancel.wait(delay):
                    return
                if serve_delay is not None and serve_delay <= 0:
                    with self._cluster._lock:
                        if not cancel.is_set():
                            self._start_locked()
                    return
                with self._cluster._lock:
                    if cancel.is_set():
                        return
                    self._hold_locked(before_serving)
                if serve_delay is None or cancel.wait(serve_delay):
                    return
                with self._cluster._lock:
                    if not cancel.is_set():
                        self._start_locked()
            except OSError:
                _log.exception("node %s could not finish joining", self.ip)

        self._join_thread = threading.Thread(target=finish, name=f"join-{self.ip}", daemon=True)
        self._join_thread.start()

    def _cancel_join(self) -> None:
        cancel, self._join_cancel = self._join_cancel, None
        if cancel is not None:
            cancel.set()

    def set_view(self, addresses: Sequence[str] | None) -> None:
        """Force this node's ``/localnodes`` to a stale or split view (None: back to gossip).

        Known addresses are still filtered by the requested dc/rack; addresses of no node in
        the cluster are returned only when no ``dc``/``rack`` parameter is given.
        """
        with self._cluster._lock:
            self._view = None if addresses is None else list(addresses)

    # ------------------------------------------------------------------ faults

    def inject_fault(
        self,
        kind: str,
        *,
        count: int | None = None,
        probability: float | None = None,
        delay: float | None = None,
    ) -> None:
        """Add a fault; with neither ``count`` nor ``probability`` it hits every request."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        if kind == "latency" and delay is None:
            raise ValueError("fault 'latency' needs delay=<seconds>")
        with self._cluster._lock:
            self._faults.append(Fault(kind, count, probability, delay))

    def clear_faults(self) -> None:
        with self._cluster._lock:
            self._faults.clear()

    # ------------------------------------------------------------------ NodeContext

    def fire_faults(self, kinds: tuple[str, ...]) -> list[Fault]:
        fired: list[Fault] = []
        with self._cluster._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.try_fire():
                    fired.append(Fault(fault.kind, delay=fault.delay))
            self._faults = [f for f in self._faults if f.count is None or f.count > 0]
        return fired

    def fault_active(self, kind: str) -> bool:
        with self._cluster._lock:
            return any(f.kind == kind for f in self._faults)

    def localnodes(self, dc: str | None, rack: str | None) -> list[str]:
        return self._cluster._localnodes_for(self, dc, rack)

    def record(self, entry: RequestLogEntry) -> None:
        self._request_log.append(entry)

    def _handle(self, request: Request, abort: threading.Event) -> Response | None:
        return _api.handle(self, request, abort)


def _refuse(request: Request, abort: threading.Event) -> Response | None:
    return None  # never called: a refusing front resets every connection on accept


def _default_topology(nodes: int) -> list[tuple[str, str]]:
    return [("dc1", f"rack{i + 1}") for i in range(nodes)]


class Cluster:
    """A local N-node Alternator cluster. Use as a context manager, or call :meth:`stop`.

    See the emulator README for every parameter; the defaults give a deterministic cluster:
    3 nodes in dc1 over rack1..rack3, moto storage, no auth, profile "current".
    """

    def __init__(
        self,
        nodes: int = 3,
        topology: Sequence[tuple[str, str]] | None = None,
        port: int | None = None,
        backend: str = "moto",
        users: Mapping[str, str] | None = None,
        profile: str = "current",
        failure_detect_delay: float = 0.0,
        https: bool = False,
        process_per_node: bool = False,
        forward_transactions: bool = False,
        rpc_addresses: Sequence[str | None] | None = None,
        server_header: str | None = None,
        disable_date_header: bool = False,
        disable_content_type_header: bool = False,
        mtls: bool = False,
        dynamodb_local: DynamoDBLocalServer | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if dynamodb_local is not None and backend != "dynamodb-local":
            raise ValueError("dynamodb_local= is for backend='dynamodb-local'")
        self.profile: Profile = with_header_options(
            get_profile(profile),
            server_header=server_header,
            disable_date_header=disable_date_header,
            disable_content_type_header=disable_content_type_header,
        )
        if mtls and not self.profile.mtls:
            raise ValueError(f"profile {profile!r} has no mTLS client authentication (use 'dev')")
        if mtls and not https:
            raise ValueError("mtls=True needs https=True (mTLS is on the HTTPS port)")
        self.mtls = mtls
        self.users: dict[str, str] | None = dict(users) if users is not None else None
        self.failure_detect_delay = float(failure_detect_delay)
        self.forward_transactions = forward_transactions
        self.process_per_node = process_per_node
        self.backend_name = backend
        self.scheme = "https" if https else "http"
        self._lock = threading.RLock()
        self._nodes: list[Node] = []
        self._stopped = False
        self._tmpdir = tempfile.mkdtemp(prefix="alternator-emulator-")
        self.account_id = f"{random.randrange(10**11, 10**12)}"
        self.ca_file: str | None = None
        self._ca: Any = None
        self._ddb_local: DynamoDBLocalServer | None = None
        self._control: ControlServer | None = None
        self.backend_url: str | None = None
        try:
            self._backend = self._make_backend(backend, dynamodb_local)
            if https:
                import trustme

                self._ca = trustme.CA()
                self.ca_file = os.path.join(self._tmpdir, "ca.pem")
                self._ca.cert_pem.write_to_path(self.ca_file)
            if process_per_node:
                self._control = ControlServer(self)
                if backend == "moto":  # node processes reach the in-process moto through it
                    self.backend_url = self._control.url + "/storage"
            topo = list(topology) if topology is not None else _default_topology(nodes)
            rpcs = list(rpc_addresses) if rpc_addresses is not None else [None] * len(topo)
            listeners = self._bind_block(len(topo), port)
            for i, ((dc, rack), listener) in enumerate(zip(topo, listeners, strict=True)):
                ip = listener.getsockname()[0]
                node = Node(self, ip, dc, rack, rpcs[i] if i < len(rpcs) else None)
                self._nodes.append(node)
                node._runtime = self._make_runtime(node)
                node._runtime.start(listener)
                node._status = "NORMAL"
                node._alive = True
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------------ setup helpers

    def _make_backend(self, name: str, shared_ddb: DynamoDBLocalServer | None) -> Backend:
        if name == "null":
            return NullBackend()
        if name == "dynamodb-local":
            server = shared_ddb
            if server is None:  # our own, stopped with the cluster
                server = self._ddb_local = DynamoDBLocalServer()
            self.backend_url = server.url
            return HttpBackend(server.url, access_key=cluster_access_key(self.account_id))
        return MotoBackend(self.account_id)

    def _bind_block(self, count: int, port: int | None) -> list[socket.socket]:
        """Bind ``count`` IPs of a random 127.a.b.0/24 block on one port free on all of them.

        Parallel test workers each start clusters, so blocks are random and a collision just
        retries with a new block.
        """
        last_error: OSError | None = None
        for _attempt in range(64):
            a, b = random.randint(10, 250), random.randint(0, 255)
            self._prefix = f"127.{a}.{b}."
            bound: list[socket.socket] = []
            try:
                chosen = port or 0
                for i in range(count):
                    sock = bind_listener(f"{self._prefix}{i + 1}", chosen)
                    bound.append(sock)
                    chosen = sock.getsockname()[1]
                self.port = int(chosen)
                return bound
            except OSError as err:
                for sock in bound:
                    sock.close()
                if err.errno != errno.EADDRINUSE:
                    raise
                last_error = err
        raise OSError(errno.EADDRINUSE, f"no free IP block/port found: {last_error}")

    def _ssl_context_for(self, ip: str) -> ssl.SSLContext | None:
        if self._ca is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(ip, "localhost").configure_cert(ctx)
        if self.mtls:  # require_client_auth=optional: a certificate is asked for, not required
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cafile=self.ca_file)
        return ctx

    def client_cert(self, role: str) -> tuple[str, str]:
        """Issue a client certificate whose subject CN is ``role`` (for ``mtls=True``).

        Returns ``(cert_path, key_path)``, e.g. for botocore's ``Config(client_cert=...)``.
        """
        if self._ca is None:
            raise ValueError("client certificates need https=True")
        cert = self._ca.issue_cert(common_name=role)
        base = os.path.join(self._tmpdir, f"client-{secrets.token_hex(4)}")
        cert.cert_chain_pems[0].write_to_path(base + ".crt")
        cert.private_key_pem.write_to_path(base + ".key")
        return base + ".crt", base + ".key"

    # ------------------------------------------------------------------ RuntimeHost

    @property
    def backend(self) -> Backend:
        return self._backend

    def find_node(self, ip: str) -> Node:
        return self.node(ip)

    def client_ca_file(self) -> str | None:
        return self.ca_file if self.mtls else None

    def cert_files_for(self, ip: str) -> tuple[str, str] | None:
        if self._ca is None:
            return None
        cert = self._ca.issue_cert(ip, "localhost")
        cert_path = os.path.join(self._tmpdir, f"{ip}.crt")
        key_path = os.path.join(self._tmpdir, f"{ip}.key")
        cert.cert_chain_pems[0].write_to_path(cert_path)
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(cert_path, append=True)
        cert.private_key_pem.write_to_path(key_path)
        return cert_path, key_path

    def _make_runtime(self, node: Node) -> Runtime:
        if self._control is not None:
            return ProcessRuntime(self, node.ip, self._control.url)
        return ThreadRuntime(f"node-{node.ip}", node._handle, self._ssl_context_for(node.ip))

    # ------------------------------------------------------------------ public API

    @property
    def nodes(self) -> list[Node]:
        with self._lock:
            return [n for n in self._nodes if n._status != "LEFT"]

    @property
    def seeds(self) -> list[str]:
        return [n.ip for n in self.nodes]

    @property
    def credentials(self) -> tuple[str, str]:
        if self.users:
            key = next(iter(self.users))
            return key, self.users[key]
        return "alternator", "secret_pass"

    def node(self, ip: str) -> Node:
        with self._lock:
            for n in self._nodes:
                if n.ip == ip or n.rpc_address == ip:
                    return n
        raise KeyError(f"no node {ip!r} in this cluster")

    def add_node(
        self,
        dc: str = "dc1",
        rack: str = "rack1",
        join_delay: float = 0.0,
        rpc_address: str | None = None,
        serve_delay: float | None = 0.0,
        before_serving: BeforeServing = "closed",
    ) -> Node:
        """Add a node on the next IP of the block; it is JOINING for ``join_delay`` seconds,
        then listed but not serving for ``serve_delay`` seconds (see :meth:`Node.join`)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("cluster is stopped")
            ip = f"{self._prefix}{len(self._nodes) + 1}"
            node = Node(self, ip, dc, rack, rpc_address)
            self._nodes.append(node)
        node.join(join_delay, serve_delay, before_serving)
        return node

    def clear_logs(self) -> None:
        for n in self._nodes:
            n.clear_log()

    def endpoint_urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def stop(self) -> None:
        """Stop every node, the storage and helpers; leaves no thread or process behind."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            nodes = list(self._nodes)
        for n in nodes:
            n.kill()
            if n._join_thread is not None:
                n._join_thread.join(5)
        for closer in (self._control, self._ddb_local):
            if closer is not None:
                try:
                    closer.close()
                except Exception:
                    _log.exception("error while stopping %r", closer)
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; tests should use ``with`` or stop()
        if not getattr(self, "_stopped", True):
            with contextlib.suppress(Exception):
                self.stop()

    # ------------------------------------------------------------------ gossip view

    def _believed_alive(self, member: Node, now: float) -> bool:
        if member._status in ("DRAINED", "LEFT", "STOPPED"):
            return False
        if member._alive:
            return True
        return now - member._down_since < self.failure_detect_delay

    def _listed(self, member: Node, now: float) -> bool:
        rule = self.profile.liveness
        if rule == "normal":
            return member._status == "NORMAL"
        alive = self._believed_alive(member, now)
        if rule == "alive":
            return alive and member._status in ("NORMAL", "JOINING")
        return alive and member._status == "NORMAL"

    def _localnodes_for(self, receiver: Node, dc: str | None, rack: str | None) -> list[str]:
        now = time.monotonic()
        with self._lock:
            want_dc = dc or receiver.dc

            def matches(m: Node) -> bool:
                return m.dc == want_dc and (rack is None or m.rack == rack)

            if receiver._view is not None:
                by_addr = {m.rpc_address: m for m in self._nodes}
                by_addr.update({m.ip: m for m in self._nodes})
                out: list[str] = []
                for addr in receiver._view:
                    member = by_addr.get(addr)
                    if member is None:
                        if dc is None and rack is None:
                            out.append(addr)
                    elif matches(member):
                        out.append(addr)
                return out
            return [
                m.rpc_address
                for m in self._nodes
                if matches(m) and (m is receiver or self._listed(m, now))
            ]


def parse_users(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY:SECRET`` strings to a users dict (the CLI's --enforce-auth)."""
    users: dict[str, str] = {}
    for pair in pairs:
        key, sep, secret = pair.partition(":")
        if not sep or not key:
            raise ValueError(f"expected KEY:SECRET, got {pair!r}")
        users[key] = secret
    return users


def random_user() -> tuple[str, str]:
    return f"user_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
