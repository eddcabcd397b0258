"""HTTP(S) connections from one process to every node of the cluster.

botocore's own HTTP session gives us no say over the TLS key log, keeps urllib3's default of 10
per-host pools (so a cluster of more than 10 nodes keeps evicting and reconnecting), and would be
shared with a parent process after ``fork()``. :class:`Transport` owns the connections instead,
with the same effect as botocore's ``URLLib3Session`` for every client option it is built from
(:class:`TransportOptions`: CA bundle or ``verify=False``, client certificate, proxies and
``proxies_config``, ``tcp_keepalive``, ``max_pool_connections``, timeouts). The Helper keeps one
transport per distinct set of options, so clients configured alike share connections.

* one urllib3 ``PoolManager`` (plus one ``ProxyManager`` per proxy URL in use) whose
  ``num_pools`` is far above any cluster size, so a node's keep-alive pool is never evicted;
* TCP keepalive (with short probe timers) and ``TCP_NODELAY`` on every socket;
* one ``SSLContext`` per process built from the options (CA bundle, client certificate, key
  log, optional "ignore certificate errors"), shared by discovery and API traffic alike;
* fork safety: the managers and the context are re-created the first time a new process (a
  different ``os.getpid()``) uses the transport, and the sockets inherited from the parent are
  closed in the child (only the child's copies: the parent's connections are untouched). An
  at-fork hook does it eagerly after ``os.fork()``; the pid check covers C-level forks.

:meth:`Transport.send` speaks botocore: it takes an ``AWSPreparedRequest``, returns an
``AWSResponse`` and translates connection-level failures into the same botocore exceptions its
own ``URLLib3Session`` raises, so botocore's retry machinery treats them exactly as usual.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import socket
import ssl
import stat
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import botocore.awsrequest
import botocore.exceptions
import botocore.httpsession
import botocore.utils
import urllib3
from urllib3._base_connection import ProxyConfig
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context, is_ipaddress

from alternator_shm import _forksafe
from alternator_shm._decode import decode_answer
from alternator_shm._forkmark import getpid as _getpid
from alternator_shm._forksafe import ForkSafeLock
from alternator_shm.errors import ConfigurationError

__all__ = [
    "DEFAULT_NUM_POOLS",
    "PROXY_HOP_FAILURE",
    "EnvironmentProxies",
    "Transport",
    "TransportOptions",
    "environment_proxy_for",
    "open_key_log",
]

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

_PID_ATTR = "_alternator_shm_pid"


# What urllib.request.getproxies_environment reads for an http(s) URL (REQUEST_METHOD: it
# ignores HTTP_PROXY under CGI). It accepts any capitalisation; these are the two in use.
_PROXY_VARIABLES = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
    "REQUEST_METHOD",
)


#: Set (True) on a botocore connection error raised for a proxied attempt whose failure was
#: the hop to the proxy (aiohttp reports a proxy's connect timeout as the node's): the node
#: was not reached, so its health is not charged (``hooks.Attempt``).
PROXY_HOP_FAILURE = "alternator_shm_proxy_hop_failure"


def environment_proxy_for(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY names for ``url``, NO_PROXY applied; None for none.

    What botocore uses without ``Config(proxies=...)``. A NO_PROXY alone (no proxy variable
    for the URL's scheme) is no proxy.
    """
    env = botocore.utils.get_environ_proxies(url)
    proxy = botocore.httpsession.ProxyConfiguration(proxies=env).proxy_url_for(url)
    return proxy or None


class EnvironmentProxies:
    """:func:`environment_proxy_for` per node, looked up once and again after a change.

    The full look-up reads every environment variable (some 0.5 ms per attempt otherwise);
    the proxy variables' values are a cheap key that changes when the answer may have, so a
    proxy set or unset later applies from the next attempt. Thread-safe: a race only repeats
    a look-up.
    """

    def __init__(self) -> None:
        self._environment: tuple[str | None, ...] = ()
        self._by_node: dict[tuple[str, str], str | None] = {}

    def proxy_for(self, url: str) -> str | None:
        environment = tuple(os.environ.get(name) for name in _PROXY_VARIABLES)
        if environment != self._environment:
            self._environment = environment
            self._by_node = {}
        by_node = self._by_node
        node = urlsplit(url)[:2]  # (scheme, netloc)
        if node not in by_node:
            by_node[node] = environment_proxy_for(url)
        return by_node[node]


@dataclass(frozen=True)
class TransportOptions:
    """How to reach the nodes. Immutable and hashable: the Helper keys its transports by it."""

    scheme: str = "http"
    #: PEM bundle to trust; None = botocore's default bundle (``certifi``), as ``verify=True``.
    ca_file: str | None = None
    #: ``cert_path`` (key inside) or ``(cert_path, key_path)``, as botocore's ``client_cert``.
    client_cert: str | tuple[str, str] | None = None
    ignore_server_certificate_error: bool = False
    #: NSS key log lines (``CLIENT_RANDOM ...`` / TLS 1.3 secrets) for EVERY TLS connection,
    #: discovery and API alike. Opened 0600 with ``O_NOFOLLOW`` (see :func:`open_key_log`).
    key_log_file: str | None = None
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    #: Idle keep-alive connections kept per node.
    max_pool_connections: int = 10
    tcp_keepalive: bool = True
    #: ``Config(proxies=...)`` as sorted items; None = the environment (``HTTPS_PROXY``,
    #: ``HTTP_PROXY``, ``NO_PROXY``), per node, which is what botocore does without the option.
    proxies: tuple[tuple[str, str], ...] | None = None
    #: ``Config(proxies_config=...)`` as sorted items (``proxy_ca_bundle``,
    #: ``proxy_client_cert``, ``proxy_use_forwarding_for_https``).
    proxies_config: tuple[tuple[str, Any], ...] = field(default=())


# -- connections we own, so a forked child can close its copies --------------------------------

_connections: weakref.WeakSet[Any] = weakref.WeakSet()
_connections_lock = ForkSafeLock()


def _track(conn: Any) -> None:
    setattr(conn, _PID_ATTR, _getpid())
    with _connections_lock:
        _connections.add(conn)


def _drop_socket(conn: Any) -> None:
    """Close this process's copy of a connection's socket, without a byte on the wire.

    ``detach()`` first: closing only our file descriptor must not send a TLS close_notify or
    a FIN on the parent's connection, and must not leave a socket object that would later
    close a reused descriptor number.
    """
    sock = getattr(conn, "sock", None)
    conn.sock = None
    while sock is not None:
        if isinstance(sock, socket.socket):
            try:
                fd = sock.detach()
            except OSError:
                return
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            return
        sock = getattr(sock, "socket", None)  # urllib3's SSLTransport (TLS inside TLS)


def close_inherited_connections() -> None:
    """Close, in this process, every connection socket inherited from a parent process."""
    pid = _getpid()
    with _connections_lock:
        inherited = [c for c in _connections if getattr(c, _PID_ATTR, pid) != pid]
        for conn in inherited:
            _connections.discard(conn)
    for conn in inherited:
        _drop_socket(conn)


def _after_fork_in_child() -> None:
    if _forksafe.AT_FORK_HOOKS:
        close_inherited_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _ReentrantLifoQueue(queue.LifoQueue[Any]):
    """urllib3's pool queue with a re-entrant mutex.

    ``close()`` may run in a signal handler that interrupted this very thread inside the queue
    (returning a connection to its pool); a plain mutex would deadlock there.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.mutex = threading.RLock()  # type: ignore[assignment]
        self.not_empty = threading.Condition(self.mutex)
        self.not_full = threading.Condition(self.mutex)
        self.all_tasks_done = threading.Condition(self.mutex)


class _HTTPPool(HTTPConnectionPool):
    QueueCls = _ReentrantLifoQueue

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        _track(conn)
        return conn


class _HTTPSPool(HTTPSConnectionPool):
    QueueCls = _ReentrantLifoQueue

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        _track(conn)
        return conn


class _UnverifiedHTTPSPool(_HTTPSPool):
    """An HTTPS pool that does not warn on every request when verification is off.

    Only used when the user explicitly disabled verification (``verify=False`` or
    ``ignore_server_certificate_error``); we log that once when the transport is built instead
    of emitting ``InsecureRequestWarning`` per request.
    """

    def _validate_conn(self, conn: Any) -> None:
        HTTPConnectionPool._validate_conn(self, conn)
        if conn.is_closed:
            conn.connect()


class _ForwardingConnection(HTTPConnection):
    """An unpooled connection to a forwarding proxy: sends the absolute-form request line."""

    origin = ""
    proxy_headers: Mapping[str, str] = {}

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        if url.startswith("/"):
            url = self.origin + url
        merged = {**dict(headers or {}), **dict(self.proxy_headers)}
        super().request(method, url, body=body, headers=merged, **kwargs)


class BufferedBody:
    """An answer's body, read whole inside a transport's ``send``: what both transports' ``raw``
    objects (botocore's and aiobotocore's) hand out, ``read(amt)`` by ``read(amt)``.

    Reading the whole body there means a failure while reading it is translated (and reported)
    like any other connection failure, and the connection goes back to its pool before botocore
    parses the answer.
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def take(self, amt: int | None = None) -> bytes:
        """The next ``amt`` bytes (all that is left when None)."""
        data = self._data
        if amt is None or amt >= len(data):
            self._data = b""
            return data
        self._data = data[amt:]
        return data[:amt]

    def close(self) -> None:
        self._data = b""


class _BufferedBody(BufferedBody):
    """The ``raw`` botocore expects (urllib3's response surface)."""

    __slots__ = ()

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        if self._data:  # not consumed: botocore reads .content once and keeps it
            yield self._data

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        return self.take(amt)

    def release_conn(self) -> None:
        """Nothing to release: the connection went back to its pool after the read."""


def _socket_options(tcp_keepalive: bool) -> list[tuple[int, int, int | bytes]]:
    # urllib3's defaults hold TCP_NODELAY (botocore sets it too); add keepalive.
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


def open_key_log(path: str, what: str = "key_log_file") -> int:
    """Open (creating 0600) a TLS key log for appending; return the descriptor.

    The key log holds every session secret, so it is treated like our shared-memory files:
    ``O_NOFOLLOW`` (a symbolic link is refused), a regular file owned by us, and no access for
    group or others (an existing wider mode is narrowed to 0600). Raises
    :class:`ConfigurationError` naming ``what`` (the option or variable that gave the path).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of blocking the open
    # forever; a regular file is unaffected (this descriptor is only checked, then closed).
    flags |= getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigurationError(
                f"{what} {path!r} is a symbolic link; refusing to follow it (TLS secrets "
                "would be written wherever it points). Give the real file's path."
            ) from e
        raise ConfigurationError(f"{what} {path!r} cannot be opened: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(f"{what} {path!r} is not a regular file")
        if st.st_uid != os.geteuid():
            raise ConfigurationError(f"{what} {path!r} belongs to another user (uid {st.st_uid})")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
            log.warning("%s %s was readable by others; its mode is now 0600", what, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _set_key_log(context: ssl.SSLContext, path: str, what: str) -> None:
    fd = open_key_log(path, what)
    try:
        if not hasattr(context, "keylog_filename"):  # pragma: no cover - very old OpenSSL
            log.warning("%s ignored: this Python's ssl module has no key log support", what)
            return
        # Linux: reopen the very file we checked through its descriptor, so a path swapped
        # for a symlink after our check is never followed.
        proc = f"/proc/self/fd/{fd}"
        context.keylog_filename = proc if os.path.exists(proc) else path
    finally:
        os.close(fd)


def _load(what: str, action: Any, *args: Any) -> None:
    try:
        action(*args)
    except (OSError, ssl.SSLError) as e:
        raise ConfigurationError(f"{what}: {' / '.join(str(a) for a in args if a)}: {e}") from e


def _ssl_context(options: TransportOptions) -> ssl.SSLContext:
    """Build the one context used for every TLS connection of this process."""
    env_key_log = os.environ.get("SSLKEYLOGFILE")
    env_key_log = os.path.expandvars(env_key_log) if env_key_log else None
    if env_key_log:
        # urllib3 opens SSLKEYLOGFILE itself below (as it does for plain boto3); hold it to
        # the key log rules first, so it is never created world-readable or via a symlink.
        os.close(open_key_log(env_key_log, "SSLKEYLOGFILE"))
    if options.ignore_server_certificate_error:
        context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # Verification is on by default. urllib3 matches the host name (or IP SAN) itself,
        # because create_urllib3_context leaves check_hostname off. Like botocore, trust the
        # given bundle only, else botocore's default bundle.
        context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        ca_file = options.ca_file or botocore.httpsession.get_cert_path(True)
        _load("CA bundle", context.load_verify_locations, ca_file)
    if options.client_cert is not None:
        if isinstance(options.client_cert, str):
            _load("client certificate", context.load_cert_chain, options.client_cert)
        else:
            _load("client certificate", context.load_cert_chain, *options.client_cert)
    key_log = options.key_log_file or env_key_log
    if key_log:
        _set_key_log(context, key_log, "key_log_file" if options.key_log_file else "SSLKEYLOGFILE")
    return context


def _proxy_ssl_context(settings: Mapping[str, Any], proxy_url: str) -> ssl.SSLContext | None:
    """botocore's ``_setup_proxy_ssl_context``: TLS to an https proxy, when configured."""
    ca_bundle = settings.get("proxy_ca_bundle")
    cert = settings.get("proxy_client_cert")
    if ca_bundle is None and cert is None:
        return None
    context = create_urllib3_context()
    host = urllib3.util.parse_url(proxy_url).host or ""
    if not is_ipaddress(host.strip("[]")):
        context.check_hostname = True
    if ca_bundle is not None:
        _load("proxies_config proxy_ca_bundle", context.load_verify_locations, ca_bundle)
    if isinstance(cert, tuple):
        _load("proxies_config proxy_client_cert", context.load_cert_chain, *cert)
    elif isinstance(cert, str):
        _load("proxies_config proxy_client_cert", context.load_cert_chain, cert)
    return context


def _timeout(value: float | tuple[float, float] | None) -> urllib3.Timeout | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return urllib3.Timeout(connect=value[0], read=value[1])
    return urllib3.Timeout(connect=value, read=value)


class _ProcessState:
    """The connections of one process: never used by another one."""

    __slots__ = ("manager", "pid", "proxy_for", "proxy_managers", "ssl_context")

    def __init__(self, pid: int, manager: urllib3.PoolManager, context: Any) -> None:
        self.pid = pid
        self.manager = manager
        self.ssl_context = context
        self.proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self.proxy_for: dict[tuple[str, str], str | None] = {}


class Transport:
    """One process's HTTP(S) connections to the cluster, for one set of options.

    Fork-safe: re-created when ``os.getpid()`` changes, and the parent's sockets are closed in
    the child, never reused. Thread-safe; :meth:`close` may be called from a signal handler and
    while other threads are mid-request.
    """

    def __init__(self, options: TransportOptions, *, num_pools: int = DEFAULT_NUM_POOLS) -> None:
        if options.scheme not in ("http", "https"):
            raise ConfigurationError(f"scheme must be 'http' or 'https', not {options.scheme!r}")
        self.options = options
        self._num_pools = num_pools
        self._default_timeout = urllib3.Timeout(
            connect=options.connect_timeout, read=options.read_timeout
        )
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}
        self._proxies = botocore.httpsession.ProxyConfiguration(
            proxies=dict(options.proxies) if options.proxies is not None else None,
            proxies_settings=dict(options.proxies_config),
        )
        self._environment_proxies = EnvironmentProxies()
        self._lock = ForkSafeLock()
        self._st: _ProcessState | None = None
        self._warned_insecure = False

    # -- pool management ---------------------------------------------------------------------

    def _state(self) -> _ProcessState:
        st = self._st
        pid = _getpid()
        if st is not None and st.pid == pid:
            return st
        with self._lock:
            st = self._st
            if st is None or st.pid != pid:
                if st is not None:
                    # A forked child (at-fork hooks may not have run): close our copies of the
                    # parent's sockets, never speak on them; the parent's managers are dropped.
                    close_inherited_connections()
                st = self._st = self._new_state(pid)
            return st

    def prepare(self) -> None:
        """Build this process's TLS context and pools now: bad TLS options raise here."""
        self._state()

    def _pool_manager(self) -> urllib3.PoolManager:
        return self._state().manager

    def _manager_kwargs(self, context: ssl.SSLContext | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "num_pools": self._num_pools,
            "maxsize": self.options.max_pool_connections,
            "block": False,
            "timeout": self._default_timeout,
            "retries": False,
            "socket_options": _socket_options(self.options.tcp_keepalive),
        }
        if context is not None:
            kwargs["ssl_context"] = context
        return kwargs

    def _pool_classes(self) -> dict[str, type[HTTPConnectionPool]]:
        https = (
            _UnverifiedHTTPSPool if self.options.ignore_server_certificate_error else _HTTPSPool
        )
        return {"http": _HTTPPool, "https": https}

    def _new_state(self, pid: int) -> _ProcessState:
        options = self.options
        # Build the TLS context even for an http transport when TLS options are given, so a
        # misconfigured CA / client cert / key log path fails on first use, loudly.
        needs_tls = options.scheme == "https" or any(
            (options.ca_file, options.client_cert, options.key_log_file)
        )
        context = _ssl_context(options) if needs_tls else None
        manager = urllib3.PoolManager(**self._manager_kwargs(context))
        manager.pool_classes_by_scheme = self._pool_classes()
        if options.ignore_server_certificate_error and not self._warned_insecure:
            self._warned_insecure = True
            log.warning("TLS server certificate verification is disabled")
        return _ProcessState(pid, manager, context)

    def _proxy_url(self, st: _ProcessState, url: str) -> str | None:
        if self.options.proxies is None:
            # botocore without Config(proxies=...): the environment's proxies, NO_PROXY applied.
            return self._environment_proxies.proxy_for(url)
        key = urlsplit(url)[:2]
        if key not in st.proxy_for:
            st.proxy_for[key] = self._proxies.proxy_url_for(url) or None
        return st.proxy_for[key]

    def _proxy_manager(self, st: _ProcessState, proxy_url: str) -> urllib3.ProxyManager:
        manager = st.proxy_managers.get(proxy_url)
        if manager is not None:
            return manager
        with self._lock:
            manager = st.proxy_managers.get(proxy_url)
            if manager is None:
                settings = self._proxies.settings
                kwargs = self._manager_kwargs(st.ssl_context)
                kwargs["proxy_headers"] = self._proxies.proxy_headers_for(proxy_url)
                proxy_context = _proxy_ssl_context(settings, proxy_url)
                if proxy_context is not None:
                    kwargs["proxy_ssl_context"] = proxy_context
                forwarding = settings.get("proxy_use_forwarding_for_https")
                if forwarding is not None:
                    kwargs["use_forwarding_for_https"] = forwarding
                manager = urllib3.proxy_from_url(proxy_url, **kwargs)
                manager.pool_classes_by_scheme = self._pool_classes()
                st.proxy_managers[proxy_url] = manager
            return manager

    def _route(self, url: str) -> tuple[urllib3.PoolManager, str | None]:
        st = self._state()
        proxy = self._proxy_url(st, url)
        if proxy is None:
            return st.manager, None
        return self._proxy_manager(st, proxy), proxy

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
        themselves what a failure means. Proxies apply as for API requests.
        """
        manager, _ = self._route(url)
        return manager.request(
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

        Same TLS context, socket options and proxy as the pooled connections. The caller owns
        it: it can shut its socket down from another thread to enforce a total deadline
        (discovery's bounded requests), which a pooled connection hidden inside ``urlopen``
        does not allow. ``timeout`` (seconds) is the socket timeout used for connecting.

        Tracked like the pooled ones: a process forked while it is open (a discovery fetch or
        a probe in flight in another thread) closes its copy, instead of keeping the parent's
        connection open for as long as it lives.
        """
        conn = self._new_connection(url, timeout=timeout)
        _track(conn)
        return conn

    def _new_connection(self, url: str, *, timeout: float) -> HTTPConnection:
        st = self._state()
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        options = _socket_options(self.options.tcp_keepalive)
        context = st.ssl_context
        if parts.scheme == "https" and context is None:
            context = _ssl_context(self.options)
        proxy = self._proxy_url(st, url)
        if proxy is None:
            if parts.scheme == "https":
                return HTTPSConnection(
                    host, port, timeout=timeout, socket_options=options, ssl_context=context
                )
            return HTTPConnection(host, port, timeout=timeout, socket_options=options)
        # Through the proxy, as the pooled path does: a CONNECT tunnel for https, the
        # absolute-form request line for http.
        purl = urllib3.util.parse_url(proxy)
        headers = self._proxies.proxy_headers_for(proxy)
        pport = purl.port or (443 if purl.scheme == "https" else 80)
        if parts.scheme == "https":
            config = ProxyConfig(
                _proxy_ssl_context(self._proxies.settings, proxy), False, None, None
            )
            tunnel = HTTPSConnection(
                purl.host or "", pport, timeout=timeout, socket_options=options,
                ssl_context=context, proxy=purl, proxy_config=config,
            )  # fmt: skip
            tunnel.set_tunnel(host, port, headers=headers, scheme=purl.scheme or "http")
            return tunnel
        forward = _ForwardingConnection(
            purl.host or "", pport, timeout=timeout, socket_options=options, proxy=purl
        )
        forward.origin = f"http://{host}:{port}"
        forward.proxy_headers = headers
        return forward

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
        ``SSLError``, ``ProxyConnectionError``, ``ConnectionClosedError``, else
        ``HTTPClientError``), which botocore's standard and legacy retry modes both retry.

        With ``decode_content`` a compressed body is decoded for botocore, its checksum checked
        over the bytes as received (:func:`alternator_shm._decode.decode_answer`; an
        undecodable body raises ``UndecodableAnswerError``, a ``ConnectionClosedError``).
        """
        url = request.url
        manager, proxy = self._route(url)
        try:
            parts = urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target = f"{target}?{parts.query}"
            if proxy is not None and (
                parts.scheme == "http"
                or (
                    proxy.startswith("https")
                    and self._proxies.settings.get("proxy_use_forwarding_for_https")
                )
            ):
                target = url  # a forwarding proxy reads the absolute URL
            pool = manager.connection_from_url(url)
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
                data = response.read(decode_content=False)
            finally:
                response.release_conn()
        except urllib3.exceptions.SSLError as e:
            raise botocore.exceptions.SSLError(endpoint_url=url, error=e) from e
        except urllib3.exceptions.ProxyError as e:
            raise botocore.exceptions.ProxyConnectionError(
                proxy_url=botocore.httpsession.mask_proxy_url(proxy or ""), error=e
            ) from e
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
        if decode_content:
            data = decode_answer(request, data, headers)
        return botocore.awsrequest.AWSResponse(url, response.status, headers, _BufferedBody(data))

    def close(self) -> None:
        """Close this process's idle connections. The transport stays usable.

        Safe from a signal handler (every lock on this path is re-entrant) and while other
        threads are mid-request: those finish on their connection, which is then closed
        instead of returning to a pool.
        """
        with self._lock:
            st, self._st = self._st, None
        if st is not None and st.pid == _getpid():
            st.manager.clear()
            for manager in list(st.proxy_managers.values()):
                manager.clear()
