"""How a node runs (threads in this process, or a subprocess) and what a runtime may ask of the
cluster that owns it.

The cluster depends on the runtimes, never the other way round: a runtime only sees the small
:class:`RuntimeHost` / :class:`ControlledNode` protocols below, so the emulator's modules form
an acyclic import graph (``_cluster`` -> ``_process`` -> ``_runtime``).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Protocol

from alternator_shm.emulator._api import Fault
from alternator_shm.emulator._backends import Backend
from alternator_shm.emulator._log import RequestLogEntry
from alternator_shm.emulator._profiles import Profile
from alternator_shm.emulator._server import FrontServer, Request
from alternator_shm.emulator._wire import Response


class Runtime(Protocol):
    """Runs one node's front on a listening socket it is handed."""

    def start(self, listener: socket.socket) -> None: ...

    def kill(self) -> None: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class ControlledNode(Protocol):
    """The part of a node that the control server exposes to a node subprocess."""

    @property
    def ip(self) -> str: ...

    def fire_faults(self, kinds: tuple[str, ...]) -> list[Fault]: ...

    def fault_active(self, kind: str) -> bool: ...

    def localnodes(self, dc: str | None, rack: str | None) -> list[str]: ...

    def record(self, entry: RequestLogEntry) -> None: ...


class RuntimeHost(Protocol):
    """The part of a cluster that runtimes and the control server read."""

    @property
    def profile(self) -> Profile: ...

    @property
    def users(self) -> Mapping[str, str] | None: ...

    @property
    def forward_transactions(self) -> bool: ...

    @property
    def account_id(self) -> str: ...

    @property
    def backend_name(self) -> str: ...

    @property
    def backend_url(self) -> str | None: ...

    @property
    def backend(self) -> Backend: ...

    def find_node(self, ip: str) -> ControlledNode: ...

    def cert_files_for(self, ip: str) -> tuple[str, str] | None: ...

    def client_ca_file(self) -> str | None: ...


class ThreadRuntime:
    """The default: the node's front runs on threads of this process."""

    def __init__(
        self,
        name: str,
        handler: FrontHandler,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._name = name
        self._handler = handler
        self._ssl = ssl_context
        self._server: FrontServer | None = None

    def start(self, listener: socket.socket) -> None:
        self._server = FrontServer(listener, self._handler, ssl_context=self._ssl, name=self._name)
        self._server.start()

    def kill(self) -> None:
        if self._server is not None:
            self._server.kill(reset=True)

    def stop(self) -> None:
        if self._server is not None:
            self._server.kill(reset=False)

    def pause(self) -> None:
        if self._server is not None:
            self._server.pause()

    def resume(self) -> None:
        if self._server is not None:
            self._server.resume()


class FrontHandler(Protocol):
    def __call__(self, request: Request, abort: threading.Event) -> Response | None: ...
