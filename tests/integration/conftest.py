"""Fixtures shared by the integration modules (their helpers live in test_helper_support.py):
``clean_cluster``, ``mtls`` and ``proxy``."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from test_helper_support import MTLS_CLIENT_CN, ForwardProxy


@pytest.fixture
def clean_cluster(cluster: Any) -> Iterator[Any]:
    """The module's ``cluster`` with empty request logs; no fault left injected afterwards.

    Opt in with ``pytestmark = pytest.mark.usefixtures("clean_cluster")``.
    """
    cluster.clear_logs()
    yield cluster
    for node in cluster.nodes:
        node.clear_faults()


# -- a node that requires a client certificate (mTLS) ----------------------------------------------
# The emulator does not ask for client certificates, so a stdlib TLS server that REQUIRES one
# plays a node: it answers /localnodes (itself) and any API call ({}), and records the
# certificate each request was sent with.


class _MTLSHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MTLSServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.server.peers.append(self.connection.getpeercert())  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(json.dumps([self.server.server_address[0]]).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(b"{}")


class MTLSServer(ThreadingHTTPServer):
    daemon_threads = True
    peers: list[Any]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused handshake (no client certificate) is the expected failure


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[MTLSServer, str, tuple[str, str]]]:
    """(server on 127.0.0.1, CA bundle path, (client cert path, key path))."""
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client = ca.issue_cert("client.example", common_name=MTLS_CLIENT_CN)
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_path))
    client.private_key_pem.write_to_path(str(key_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    server = MTLSServer(("127.0.0.1", 0), _MTLSHandler)
    server.peers = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server, str(ca_path), (str(cert_path), str(key_path))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.shutdown()
    p.server_close()
