"""aiohttp connections from one process's event loops to every node of the cluster.

The async twin of :class:`alternator_shm.transport.Transport`. aiobotocore's own HTTP session
gives us no say over the TLS context (key log, client certificate from our options), caps the
*total* number of connections instead of the per-node keep-alive pool, and belongs to one client.
:class:`AsyncTransport` owns the connections instead:

* one ``aiohttp.ClientSession`` per (process, event loop), shared by every client of the Helper
  on that loop, with one keep-alive pool per node (``limit_per_host``) and no total cap;
* the very ``SSLContext`` the sync transport builds (CA bundle, client certificate, key log,
  optional "ignore certificate errors"), so sync and async traffic trust the same things;
* TCP keepalive and ``TCP_NODELAY`` on every socket, as for the sync transport;
* fork safety: a session made in another process is abandoned, never used (its sockets belong
  to the parent);
* proxies as botocore chooses them per node (``Config(proxies=...)``, else ``HTTP(S)_PROXY`` /
  ``NO_PROXY`` read again after a change), with ``Proxy-Authorization`` from ``user:pass@``
  built by aiohttp from the proxy URL, as in aiobotocore (botocore's own header is ASCII-only:
  a latin-1 password would fail): absolute-form requests for http nodes, a ``CONNECT`` tunnel
  for https nodes. Only ``http://``
  proxies: aiohttp would speak TLS to an https proxy with the nodes' TLS context, not
  botocore's, so an https proxy (and ``proxies_config``, which only concerns one) is refused
  with ``ConfigurationError``, never used differently nor bypassed.

:meth:`AsyncTransport.send` speaks aiobotocore: it takes an ``AWSPreparedRequest``, returns an
``AioAWSResponse`` whose body is already read, and raises the botocore exceptions aiobotocore's
own session raises for connection-level failures, so retries behave exactly as usual.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import aiohttp
import botocore.awsrequest
import botocore.exceptions
import botocore.httpsession
import botocore.utils
from aiobotocore.awsrequest import AioAWSResponse
from urllib3.util import SKIP_HEADER, parse_url

from alternator_shm._decode import decode_answer
from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.errors import ConfigurationError
from alternator_shm.transport import (
    PROXY_HOP_FAILURE,
    BufferedBody,
    EnvironmentProxies,
    TransportOptions,
    _socket_options,
    _ssl_context,
)

__all__ = ["AsyncTransport"]

log = logging.getLogger(__name__)


class _ReadBody(BufferedBody):
    """The ``raw`` aiobotocore awaits (``await raw.read()``)."""

    __slots__ = ()

    async def read(self, amt: int | None = None) -> bytes:
        return self.take(amt)

    def release(self) -> None:
        """Nothing to release: the connection went back to its pool after the read."""


def _wire_headers(headers: Any) -> dict[str, str]:
    """str headers for aiohttp; botocore keeps some values as bytes (``X-Amz-Target``).

    ``SKIP_HEADER`` is how the shared hooks say "send none" (urllib3's convention).
    """
    wire: dict[str, str] = {}
    accept_encoding = False
    for name, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if name.lower() == "accept-encoding":
            accept_encoding = True
        if value != SKIP_HEADER:
            wire[name] = value
    if not accept_encoding:
        # What http.client (under urllib3) sends by default: the same bytes as the sync path.
        wire["Accept-Encoding"] = "identity"
    return wire


def _socket_factory(options: list[tuple[int, int, int | bytes]]) -> Any:
    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=type_, proto=proto)
        try:
            for level, name, value in options:
                sock.setsockopt(level, name, value)
        except OSError:
            sock.close()
            raise
        return sock

    return factory


def _refuse_unsupported_proxy(proxy_url: str, node_url: str) -> None:
    """Raise ``ConfigurationError`` unless ``proxy_url`` is an ``http://`` proxy (see above)."""
    if parse_url(proxy_url).scheme != "http":
        masked = botocore.httpsession.mask_proxy_url(proxy_url)
        raise ConfigurationError(
            f"the proxy for {node_url} is {masked}: new_async_dynamodb_client supports http:// "
            "proxies only (aiohttp cannot speak TLS to the proxy as botocore does); use "
            "new_dynamodb_client for an https proxy"
        )


class AsyncTransport:
    """One process's aiohttp connections to the cluster, per event loop.

    Thread-safe to share; each event loop gets its own ``ClientSession`` (aiohttp sessions are
    bound to the loop that created them). Sessions are closed by :meth:`close` (all loops of
    this process: only the calling loop's is awaited) or when their loop's last client exits.
    """

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self._pid = _getpid()
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._users: dict[asyncio.AbstractEventLoop, int] = {}
        self._ssl: ssl.SSLContext | None = None
        self._warned_insecure = False
        self._environment_proxies = EnvironmentProxies()
        self._proxies = botocore.httpsession.ProxyConfiguration(
            proxies=dict(options.proxies) if options.proxies is not None else None
        )
        # proxy URLs already checked by _refuse_unsupported_proxy
        self._checked_proxies: set[str] = set()

    # -- sessions ------------------------------------------------------------------------------

    def _check_pid(self) -> None:
        pid = _getpid()
        if pid != self._pid:
            # A forked child never speaks on its parent's sockets, nor closes them.
            self._sessions = {}
            self._users = {}
            self._ssl = None
            self._pid = pid

    def _ssl_context(self) -> ssl.SSLContext | None:
        o = self.options
        needs_tls = o.scheme == "https" or any((o.ca_file, o.client_cert, o.key_log_file))
        if not needs_tls:
            return None
        if self._ssl is None:
            self._ssl = _ssl_context(o)
            if o.ignore_server_certificate_error and not self._warned_insecure:
                self._warned_insecure = True
                log.warning("TLS server certificate verification is disabled")
        return self._ssl

    def prepare(self, urls: Iterable[str] = ()) -> None:
        """Refuse now (``ConfigurationError``), when the client is created, what would fail
        its calls: a bad CA bundle, client certificate or key log (as for the sync client),
        ``proxies_config``, and a proxy this client cannot use for any of ``urls`` (the nodes
        known now; a node found later is checked at its first attempt)."""
        self._check_pid()
        if any(value not in (None, False) for _, value in self.options.proxies_config):
            raise ConfigurationError(
                "proxies_config (TLS to an https proxy) is not supported by "
                "new_async_dynamodb_client; use new_dynamodb_client"
            )
        for url in urls:
            self._proxy(url)
        self._ssl_context()

    def _session(self) -> aiohttp.ClientSession:
        self._check_pid()
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            context = self._ssl_context()
            connector = aiohttp.TCPConnector(
                # No total cap: one keep-alive pool per node, as the sync transport.
                limit=0,
                limit_per_host=self.options.max_pool_connections,
                ssl=context if context is not None else True,
                socket_factory=_socket_factory(_socket_options(self.options.tcp_keepalive)),
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                # Every request passes its own timeout; no session-wide total deadline.
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._sessions[loop] = session
        return session

    def acquire(self) -> None:
        """Count one client on the running loop (its session closes with the last one)."""
        self._check_pid()
        loop = asyncio.get_running_loop()
        self._users[loop] = self._users.get(loop, 0) + 1

    async def release(self) -> None:
        """Forget one client of the running loop; close the loop's session with the last."""
        self._check_pid()
        loop = asyncio.get_running_loop()
        left = self._users.get(loop, 0) - 1
        if left > 0:
            self._users[loop] = left
            return
        self._users.pop(loop, None)
        session = self._sessions.pop(loop, None)
        if session is not None and not session.closed:
            await session.close()

    async def close(self) -> None:
        """Close the running loop's session now (other loops' sessions are dropped)."""
        self._check_pid()
        sessions, self._sessions = self._sessions, {}
        self._users = {}
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for owner, session in sessions.items():
            if owner is loop and not session.closed:
                await session.close()

    # -- requests ------------------------------------------------------------------------------

    def _proxy(self, url: str) -> str | None:
        """The proxy URL for ``url``, or None to go direct.

        botocore's choice: ``Config(proxies=...)`` when given, else the environment per node
        (NO_PROXY applied; looked up again after a proxy variable changes).
        """
        if self.options.proxies is None:
            proxy = self._environment_proxies.proxy_for(url)
        else:
            proxy = self._proxies.proxy_url_for(url) or None
        if proxy is None:
            return None
        if proxy not in self._checked_proxies:
            _refuse_unsupported_proxy(proxy, url)
            self._checked_proxies.add(proxy)
        return proxy

    async def send(
        self,
        request: botocore.awsrequest.AWSPreparedRequest,
        *,
        timeout: tuple[float, float],
        decode_content: bool = False,
    ) -> AioAWSResponse:
        """Send one attempt; return aiobotocore's response with the body already read.

        Connection-level failures raise the botocore exceptions aiobotocore's own session
        raises (``EndpointConnectionError``, ``ConnectTimeoutError``, ``ReadTimeoutError``,
        ``SSLError``, ``ProxyConnectionError``, ``ConnectionClosedError``, else
        ``HTTPClientError``); an https proxy raises ``ConfigurationError`` (not retried). With
        ``decode_content`` a compressed body is decoded exactly as by the sync transport
        (:func:`alternator_shm._decode.decode_answer`).
        """
        url = request.url
        proxy = self._proxy(url)
        connect_timeout, read_timeout = timeout
        try:
            session = self._session()
            async with session.request(
                request.method,
                url,
                data=request.body,
                # SKIP_HEADER is how the shared hooks say "send none" (urllib3's convention).
                headers=_wire_headers(request.headers),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=connect_timeout, sock_read=read_timeout
                ),
                allow_redirects=False,
                # No proxy_headers, as aiobotocore (it asks botocore for the request URL's):
                # aiohttp sends one Proxy-Authorization from the proxy URL's user:pass@.
                proxy=proxy,
            ) as response:
                data = await response.read()
                # botocore expects lower-case str keys (as aiobotocore's own session gives).
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in response.raw_headers
                }
                status = response.status
        except aiohttp.ClientSSLError as e:
            raise botocore.exceptions.SSLError(endpoint_url=url, error=e) from e
        except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as e:
            # as aiobotocore: the proxy could not be reached, or refused the CONNECT
            raise botocore.exceptions.ProxyConnectionError(
                proxy_url=botocore.httpsession.mask_proxy_url(proxy or ""), error=e
            ) from e
        except aiohttp.ClientConnectorError as e:
            # aiobotocore's class; through a proxy, the name looked up (or the host connected
            # to) was the proxy's
            unreached = botocore.exceptions.EndpointConnectionError(endpoint_url=url, error=e)
            if proxy is not None:
                setattr(unreached, PROXY_HOP_FAILURE, True)
            raise unreached from e
        except aiohttp.ConnectionTimeoutError as e:
            # aiobotocore's class; through a proxy, the TCP connect that timed out was the proxy's
            error = botocore.exceptions.ConnectTimeoutError(endpoint_url=url, error=e)
            if proxy is not None:
                setattr(error, PROXY_HOP_FAILURE, True)
            raise error from e
        except (aiohttp.SocketTimeoutError, asyncio.TimeoutError) as e:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=url, error=e) from e
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
            aiohttp.http_exceptions.BadStatusLine,
        ) as e:
            raise botocore.exceptions.ConnectionClosedError(
                error=e, request=request, endpoint_url=url
            ) from e
        except (
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.ConnectionError,
            ConfigurationError,  # TLS material that went bad in a forked child: not retried
        ):
            raise
        except Exception as e:
            raise botocore.exceptions.HTTPClientError(error=e) from e

        if decode_content:
            data = decode_answer(request, data, headers)
        return AioAWSResponse(url, status, headers, _ReadBody(data))
