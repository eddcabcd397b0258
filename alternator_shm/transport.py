"""HTTP(S) connections from one process to every node of the cluster.

botocore's own HTTP session gives us no say over the TLS key log, keeps urllib3's default of 10
per-host pools (so a cluster of more than 10 nodes keeps evicting and reconnecting), and would be
shared with a parent process after ``fork()``. :class:`Transport` owns the connections instead:

* one urllib3 ``PoolManager`` whose ``num_pools`` is far above any cluster size, so a node's
  keep-alive pool is never evicted while the process lives;
* TCP keepalive (with short probe timers) and ``TCP_NODELAY`` on every socket;
* one ``SSLContext`` built from :class:`TransportOptions` (CA bundle, client certificate, key
  log, optional "ignore certificate errors"), shared by discovery and API traffic alike;
* fork safety: the pool and the context are re-created lazily the first time a new process
  (a different ``os.getpid()``) uses the transport; a child never writes on its parent's sockets.

:meth:`Transport.send` speaks botocore: it takes an ``AWSPreparedRequest``, returns an
``AWSResponse`` and translates connection-level failures into the same botocore exceptions its
own ``URLLib3Session`` raises, so botocore's retry machinery treats them exactly as usual.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import botocore.awsrequest
import botocore.exceptions
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context

__all__ = ["DEFAULT_NUM_POOLS", "Transport", "TransportOptions"]

log = logging.getLogger(__name__)

#: Number of per-node pools kept before urllib3 would evict the least recently used one.
#: ``/localnodes`` answers are capped at 4096 entries per datacenter; a whole-cluster union and
#: the seeds (possibly host names) come on top. Pools are only created on use, so a large
#: number costs nothing.
DEFAULT_NUM_POOLS = 16384

# Keepalive probe timers: notice a silently vanished peer within about a minute instead of the
# kernel default of two hours.
_KEEPALIVE_IDLE_S = 30
_KEEPALIVE_INTERVAL_S = 10
_KEEPALIVE_COUNT = 3


@dataclass(frozen=True)
class TransportOptions:
    """How to reach the nodes. Immutable, so one instance can be shared by every client."""

    scheme: str = "http"
    ca_file: str | None = None
    client_cert: tuple[str, str] | None = None
    ignore_server_certificate_error: bool = False
    #: NSS key log lines (``CLIENT_RANDOM ...`` / TLS 1.3 secrets) for EVERY TLS connection,
    #: discovery and API alike, through ``ssl.SSLContext.keylog_filename``.
    key_log_file: str | None = None
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    #: Idle keep-alive connections kept per node.
    max_pool_connections: int = 10
    tcp_keepalive: bool = True


class _UnverifiedHTTPSConnectionPool(HTTPSConnectionPool):
    """An HTTPS pool that does not warn on every request when verification is off.

    Only used when the user explicitly set ``ignore_server_certificate_error``; we log that
    once when the transport is built instead of emitting ``InsecureRequestWarning`` per request.
    """

    def _validate_conn(self, conn: Any) -> None:
        HTTPConnectionPool._validate_conn(self, conn)
        if conn.is_closed:
            conn.connect()


class _BufferedBody:
    """The already-read body of a response, shaped like the ``raw`` botocore expects.

    We read the whole body inside :meth:`Transport.send` so that a failure while reading it is
    translated (and reported) like any other connection failure, and so that the connection
    goes back to its pool before botocore parses the answer.
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        if self._data:
            yield self._data

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        data = self._data
        if amt is None or amt >= len(data):
            self._data = b""
            return data
        self._data = data[amt:]
        return data[:amt]

    def release_conn(self) -> None:
        """Nothing to release: the connection went back to its pool after the read."""

    def close(self) -> None:
        self._data = b""


def _socket_options(tcp_keepalive: bool) -> list[tuple[int, int, int | bytes]]:
    # urllib3's defaults hold TCP_NODELAY; keep them and add keepalive.
    options: list[tuple[int, int, int | bytes]] = list(HTTPConnection.default_socket_options)
    if tcp_keepalive:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (
            ("TCP_KEEPIDLE", _KEEPALIVE_IDLE_S),
            ("TCP_KEEPINTVL", _KEEPALIVE_INTERVAL_S),
            ("TCP_KEEPCNT", _KEEPALIVE_COUNT),
        ):
            opt = getattr(socket, name, None)
            if opt is not None:
                options.append((socket.IPPROTO_TCP, opt, value))
    return options


def _ssl_context(options: TransportOptions) -> ssl.SSLContext:
    """Build the one context used for every TLS connection of this process."""
    if options.ignore_server_certificate_error:
        context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # Verification is on by default. urllib3 matches the host name (or IP SAN) itself,
        # because create_urllib3_context leaves check_hostname off.
        context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        if options.ca_file is not None:
            context.load_verify_locations(cafile=options.ca_file)
        else:
            context.load_default_certs()
    if options.client_cert is not None:
        cert_file, key_file = options.client_cert
        context.load_cert_chain(cert_file, key_file)
    if options.key_log_file is not None:
        if not hasattr(context, "keylog_filename"):  # pragma: no cover - very old OpenSSL
            log.warning("key_log_file ignored: this Python's ssl module has no key log support")
        else:
            context.keylog_filename = options.key_log_file
    return context


def _timeout(value: float | tuple[float, float] | None) -> urllib3.Timeout | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return urllib3.Timeout(connect=value[0], read=value[1])
    return urllib3.Timeout(connect=value, read=value)


class Transport:
    """One process's HTTP(S) connections to the cluster.

    A urllib3 ``PoolManager`` whose ``num_pools`` never evicts a node, TCP keepalive and
    ``TCP_NODELAY`` socket options, and our ``SSLContext``. Fork-safe: re-created lazily when
    ``os.getpid()`` changes (a parent's sockets are never reused). Thread-safe.
    """

    def __init__(self, options: TransportOptions, *, num_pools: int = DEFAULT_NUM_POOLS) -> None:
        if options.scheme not in ("http", "https"):
            # Imported lazily: errors.py is tiny, but keep the dependency explicit here.
            from alternator_shm.errors import ConfigurationError

            raise ConfigurationError(f"scheme must be 'http' or 'https', not {options.scheme!r}")
        self.options = options
        self._num_pools = num_pools
        self._default_timeout = urllib3.Timeout(
            connect=options.connect_timeout, read=options.read_timeout
        )
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}
        self._lock = threading.Lock()
        self._pid = -1
        self._manager: urllib3.PoolManager | None = None
        self._warned_insecure = False

    # -- pool management ---------------------------------------------------------------------

    def _pool_manager(self) -> urllib3.PoolManager:
        manager = self._manager
        if manager is not None and self._pid == os.getpid():
            return manager
        with self._lock:
            pid = os.getpid()
            if self._manager is None or self._pid != pid:
                # After fork the parent's manager is abandoned, never closed: closing would
                # only drop our copies of the fds, but we must not speak on those sockets.
                self._manager = self._new_manager()
                self._pid = pid
            return self._manager

    def _new_manager(self) -> urllib3.PoolManager:
        options = self.options
        kwargs: dict[str, Any] = {
            "num_pools": self._num_pools,
            "maxsize": options.max_pool_connections,
            "block": False,
            "timeout": self._default_timeout,
            "retries": False,
            "socket_options": _socket_options(options.tcp_keepalive),
        }
        # Build the TLS context even for an http transport when TLS options are given, so a
        # misconfigured CA / client cert / key log path fails on first use, loudly.
        needs_tls = options.scheme == "https" or any(
            (options.ca_file, options.client_cert, options.key_log_file)
        )
        if needs_tls:
            kwargs["ssl_context"] = _ssl_context(options)
        manager = urllib3.PoolManager(**kwargs)
        if options.ignore_server_certificate_error:
            manager.pool_classes_by_scheme = {
                "http": HTTPConnectionPool,
                "https": _UnverifiedHTTPSConnectionPool,
            }
            if not self._warned_insecure:
                self._warned_insecure = True
                log.warning("TLS server certificate verification is disabled")
        return manager

    def _resolve_timeout(self, timeout: float | tuple[float, float] | None) -> urllib3.Timeout:
        if timeout is None:
            return self._default_timeout
        if isinstance(timeout, tuple):
            cached = self._timeouts.get(timeout)
            if cached is None:
                cached = urllib3.Timeout(connect=timeout[0], read=timeout[1])
                self._timeouts[timeout] = cached
            return cached
        resolved = _timeout(timeout)
        assert resolved is not None
        return resolved

    # -- plain requests (discovery, health probes) -------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request and read the whole answer. No retries, no redirects.

        Raises urllib3's own exceptions (``NewConnectionError``, ``ReadTimeoutError``,
        ``SSLError``, ``ProtocolError``, ...): callers of this method are ours and decide
        themselves what a failure means.
        """
        return self._pool_manager().request(
            method,
            url,
            body=body,
            headers=dict(headers) if headers is not None else None,
            timeout=self._resolve_timeout(timeout),
            retries=False,
            redirect=False,
            preload_content=True,
        )

    def connection(self, url: str, *, timeout: float) -> HTTPConnection:
        """A new, unpooled urllib3 connection to ``url``'s host and port (not yet connected).

        Same TLS context and socket options as the pooled connections. The caller owns it: it
        can shut its socket down from another thread to enforce a total deadline (discovery's
        bounded requests), which a pooled connection hidden inside ``urlopen`` does not allow.
        ``timeout`` (seconds) is the socket timeout used for connecting.
        """
        manager = self._pool_manager()
        parts = urlsplit(url)
        host = parts.hostname or ""
        options = _socket_options(self.options.tcp_keepalive)
        if parts.scheme == "https":
            context = manager.connection_pool_kw.get("ssl_context") or _ssl_context(self.options)
            return HTTPSConnection(
                host, parts.port or 443, timeout=timeout, socket_options=options,
                ssl_context=context,
            )
        return HTTPConnection(host, parts.port or 80, timeout=timeout, socket_options=options)

    # -- botocore requests ----------------------------------------------------------------------

    def send(
        self,
        request: botocore.awsrequest.AWSPreparedRequest,
        *,
        timeout: tuple[float, float] | None = None,
        decode_content: bool = False,
    ) -> botocore.awsrequest.AWSResponse:
        """Send a botocore request and return botocore's response object.

        Connection-level failures are raised as the botocore exceptions its own HTTP session
        raises (``EndpointConnectionError``, ``ConnectTimeoutError``, ``ReadTimeoutError``,
        ``SSLError``, ``ConnectionClosedError``, else ``HTTPClientError``), which botocore's
        standard and legacy retry modes both retry. With ``decode_content`` a gzip / deflate
        body is decoded and ``Content-Encoding`` removed from the returned headers.
        """
        url = request.url
        try:
            parts = urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target = f"{target}?{parts.query}"
            pool = self._pool_manager().connection_from_url(url)
            response = pool.urlopen(
                request.method,
                target,
                body=request.body,  # type: ignore[arg-type]  # bytes for DynamoDB
                headers=request.headers,  # type: ignore[arg-type]  # a Mapping at runtime
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                timeout=self._resolve_timeout(timeout),
            )
            try:
                data = response.read(decode_content=decode_content)
            finally:
                response.release_conn()
        except urllib3.exceptions.SSLError as e:
            raise botocore.exceptions.SSLError(endpoint_url=url, error=e) from e
        except (urllib3.exceptions.NewConnectionError, socket.gaierror) as e:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=url, error=e) from e
        except urllib3.exceptions.ConnectTimeoutError as e:
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url=url, error=e) from e
        except urllib3.exceptions.ReadTimeoutError as e:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=url, error=e) from e
        except urllib3.exceptions.ProtocolError as e:
            raise botocore.exceptions.ConnectionClosedError(
                error=e, request=request, endpoint_url=url
            ) from e
        except (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError):
            raise
        except Exception as e:
            raise botocore.exceptions.HTTPClientError(error=e) from e

        headers: Any = response.headers
        if decode_content and "content-encoding" in headers:
            headers = urllib3.HTTPHeaderDict(headers)
            del headers["content-encoding"]
            headers["content-length"] = str(len(data))
        return botocore.awsrequest.AWSResponse(url, response.status, headers, _BufferedBody(data))

    def close(self) -> None:
        """Close this process's idle connections. The transport stays usable."""
        with self._lock:
            manager, self._manager = self._manager, None
            if manager is not None and self._pid == os.getpid():
                manager.clear()
