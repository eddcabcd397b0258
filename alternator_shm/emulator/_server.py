"""A minimal HTTP/1.1 server on raw sockets, built for node control rather than throughput.

The standard library's servers hide what this emulator must control and observe: the exact
header bytes received, resetting in-flight connections (SO_LINGER 0) when a node is killed,
"accept but never answer" while paused, and one ``send`` per response with TCP_NODELAY (without
it boto3 pays Nagle + delayed-ACK, ~40 ms per call). One thread per connection keeps the
blocking code simple; kill/stop wake every thread with ``shutdown(SHUT_RD)``.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from alternator_shm.emulator._wire import MAX_BODY, Response

_log = logging.getLogger("alternator_shm.emulator.server")
_MAX_HEADER = 64 * 1024
_LINGER_0 = struct.pack("ii", 1, 0)
_CHUNK = 8192  # bytes per chunk of a streamed (Transfer-Encoding: chunked) answer
# A fatal protocol_version TLS alert: what Alternator's GnuTLS front sends for a record that is
# not TLS (plain HTTP on the HTTPS port). OpenSSL sends no alert for these errors, so we do.
_TLS_ALERT = bytes([21, 3, 3, 0, 2, 2, 70])
_NO_ALERT_REASONS = frozenset(
    {"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL",
     "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}
)  # fmt: skip


@dataclass
class Request:
    method: str
    target: str  # path including the query string
    version: str
    headers: list[tuple[str, str]]  # original case and order
    header_bytes: int  # header block without the request line, incl. the final CRLF
    body: bytes
    body_bytes: int  # as received on the wire (before any chunked decoding)
    too_large: bool  # body exceeded 16 MB and was discarded
    peer_cert: dict[str, Any] | None = None  # verified TLS client certificate (mTLS)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for n, v in self.headers if n.lower() == lname), None)


class Abort(Exception):
    """The node went away while the request was being handled: reset the connection."""


# Returns the response, or None to reset the connection without answering.
Handler = Callable[[Request, threading.Event], "Response | None"]


class _BadRequest(Exception):
    pass


class _Unparsable(_BadRequest):
    """Not HTTP at all (e.g. a TLS ClientHello sent to a plain-HTTP node)."""


# Seastar's httpd answers a request it cannot parse at once, then closes; a TLS client thus
# fails its handshake immediately ("wrong version number") instead of waiting for a timeout.
_UNPARSABLE_REPLY = (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 23\r\n"
                     b"Connection: close\r\n\r\nCan't parse the request")
# RFC 9110 token characters: what a request line (the method) must start with.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class FrontServer:
    """Serves one listening socket with ``handler`` until :meth:`kill` or :meth:`stop`."""

    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "front",
        refuse: bool = False,
    ) -> None:
        self._listener = listener
        self._refuse = refuse  # accept, then reset at once (a port that is "open but refusing")
        self._handler = handler
        self._ssl = ssl_context
        self._name = name
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self.abort = threading.Event()  # set on kill/stop: wakes every wait
        self._reset_on_close = True
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{name}-accept", daemon=True
        )

    def start(self) -> None:
        self._accept_thread.start()

    # ------------------------------------------------------------------ control

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def kill(self, *, reset: bool = True, timeout: float = 5.0) -> None:
        """Close the listener and every connection (RST when ``reset``); join all threads."""
        self._reset_on_close = reset
        self.abort.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self._listener.close()
        with self._lock:
            conns = list(self._conns.items())
        for conn, _thread in conns:
            with contextlib.suppress(OSError):
                # Wake the owner thread; it closes the socket itself (no fd-reuse race).
                socket.socket.shutdown(conn, socket.SHUT_RD)
        self._accept_thread.join(timeout)
        for _conn, thread in conns:
            thread.join(timeout)

    def stop(self) -> None:
        self.kill(reset=False)

    # ------------------------------------------------------------------ loops

    def _accept_loop(self) -> None:
        while not self.abort.is_set():
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                return
            if self.abort.is_set():
                _reset(conn)
                return
            if self._refuse:
                _reset(conn)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"{self._name}-conn", daemon=True
            )
            with self._lock:
                self._conns[conn] = thread
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        reset = False
        peer: dict[str, Any] | None = None
        try:
            if self._ssl is not None:
                raw.settimeout(10)
                tls = self._ssl.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                conn = tls
                with self._lock:
                    self._conns[conn] = self._conns.pop(raw)
                try:
                    tls.do_handshake()
                except ssl.SSLError as err:
                    if err.reason in _NO_ALERT_REASONS:
                        _alert_and_close(tls)
                        return
                    raise
                conn.settimeout(None)
                peer = tls.getpeercert() or None
            reset = self._serve_requests(conn, peer)
        except _Unparsable:
            with contextlib.suppress(OSError):
                conn.sendall(_UNPARSABLE_REPLY)
        except (OSError, _BadRequest, ValueError):
            reset = self.abort.is_set() and self._reset_on_close
        finally:
            if reset or (self.abort.is_set() and self._reset_on_close):
                _reset(conn)
            else:
                with contextlib.suppress(OSError):
                    conn.close()
            with self._lock:
                self._conns.pop(conn, None)
                self._conns.pop(raw, None)

    def _serve_requests(self, conn: socket.socket, peer: dict[str, Any] | None) -> bool:
        """Serve keep-alive requests; return True when the connection must be reset."""
        buf = bytearray()
        while not self.abort.is_set():
            request = _read_request(conn, buf)
            if request is None:
                return False
            request.peer_cert = peer
            while not self._running.wait(0.1):  # paused: accept and read, never answer
                if self.abort.is_set():
                    return True
            response = self._handler(request, self.abort)
            while not self._running.wait(0.1):
                if self.abort.is_set():
                    return True
            if response is None or self.abort.is_set():
                return True
            close = _wants_close(request)
            conn.sendall(_serialize(response, close, chunked_ok=request.version != "HTTP/1.0"))
            if close:
                return False
        return True


def _reset(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    with contextlib.suppress(OSError):
        if isinstance(conn, ssl.SSLSocket):
            socket.socket.close(conn)  # no TLS close_notify: the point is an abrupt RST
        else:
            conn.close()


def _alert_and_close(tls: ssl.SSLSocket) -> None:
    """Answer a non-TLS first record with a fatal alert, then close without a reset: the
    peer's unread bytes are drained first (closing with unread data would send an RST)."""
    sock = socket.socket(fileno=tls.detach())
    try:
        sock.settimeout(2)
        sock.sendall(_TLS_ALERT)
        sock.shutdown(socket.SHUT_WR)
        for _ in range(64):  # bounded: a peer that keeps sending gets closed anyway
            if not sock.recv(65536):
                break
    except OSError:
        pass
    finally:
        sock.close()


def _wants_close(request: Request) -> bool:
    connection = (request.header("Connection") or "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" not in connection
    return "close" in connection


def _recv_more(conn: socket.socket, buf: bytearray) -> bool:
    chunk = conn.recv(65536)
    if not chunk:
        return False
    buf += chunk
    return True


def _read_exact(conn: socket.socket, buf: bytearray, n: int, keep: bool) -> bytes:
    """Consume ``n`` bytes from the connection (discarding them unless ``keep``)."""
    out = bytearray()
    while n > 0:
        if not buf and not _recv_more(conn, buf):
            raise _BadRequest("connection closed mid-body")
        take = min(n, len(buf))
        if keep:
            out += buf[:take]
        del buf[:take]
        n -= take
    return bytes(out)


def _read_line(conn: socket.socket, buf: bytearray) -> bytes:
    while True:
        idx = buf.find(b"\r\n")
        if idx >= 0:
            line = bytes(buf[:idx])
            del buf[: idx + 2]
            return line
        if len(buf) > _MAX_HEADER or not _recv_more(conn, buf):
            raise _BadRequest("bad chunk line")


def _read_request(conn: socket.socket, buf: bytearray) -> Request | None:
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if buf and buf[0] not in _TCHAR:
            raise _Unparsable(f"not an HTTP request: {bytes(buf[:8])!r}")
        if len(buf) > _MAX_HEADER:
            raise _BadRequest("header block too large")
        if not _recv_more(conn, buf):
            if buf:
                raise _BadRequest("connection closed mid-headers")
            return None
    block = bytes(buf[: end + 4])
    del buf[: end + 4]
    lines = block.split(b"\r\n")
    request_line = lines[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise _BadRequest(f"bad request line {request_line!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest("bad header line")
        headers.append((name.strip(), value.strip()))
    header_bytes = len(block) - len(lines[0]) - 2
    lower = {n.lower(): v for n, v in headers}
    if lower.get("expect", "").lower() == "100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    too_large = False
    if "chunked" in lower.get("transfer-encoding", "").lower():
        body = bytearray()
        wire = 0
        while True:
            size_line = _read_line(conn, buf)
            wire += len(size_line) + 2
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers
                    trailer = _read_line(conn, buf)
                    wire += len(trailer) + 2
                    if not trailer:
                        break
                break
            keep = len(body) + size <= MAX_BODY
            data = _read_exact(conn, buf, size, keep)
            too_large = too_large or not keep
            if keep:
                body += data
            _read_exact(conn, buf, 2, False)
            wire += size + 2
        return Request(method, target, version, headers, header_bytes, bytes(body), wire, too_large)
    length = int(lower.get("content-length", "0") or "0")
    if length < 0:
        raise _BadRequest("negative content-length")
    too_large = length > MAX_BODY
    body_b = _read_exact(conn, buf, length, not too_large)  # always read the full body
    return Request(method, target, version, headers, header_bytes, body_b, length, too_large)


def _serialize(response: Response, close: bool, *, chunked_ok: bool = True) -> bytes:
    """The whole answer, to be written in one ``sendall``.

    A ``streamed`` response (Alternator's ``body_writer``) goes out with
    ``Transfer-Encoding: chunked`` to HTTP/1.1 clients, as seastar does.
    """
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    for name, value in response.headers:
        lines.append(f"{name}: {value}")
    if response.date_header:
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    chunked = response.streamed and chunked_ok
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {len(response.body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if not chunked:
        return head + response.body
    out = bytearray(head)
    body = response.body
    for start in range(0, len(body), _CHUNK):
        piece = body[start : start + _CHUNK]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


def bind_listener(ip: str, port: int) -> socket.socket:
    """Bind and listen on ``ip:port`` (SO_REUSEADDR so a restarted node gets its port back)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(1024)  # bursts of hundreds of concurrent connects on a busy host
    except OSError:
        sock.close()
        raise
    return sock
