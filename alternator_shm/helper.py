"""The public entry point: :class:`Helper` builds genuine boto3 clients that load-balance.

A ``Helper`` is only configuration until it is used: constructing one (at import time, in a
pre-fork master) opens no socket, maps no memory and starts no thread. The first use in a
process attaches that process to the host-wide fleet state of the Helper's namespace, and every
client made by any ``Helper`` with that namespace, in any process of the host, shares one node
table, one round-robin counter and one view of node health.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, cast

import boto3
import botocore
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    Credentials,
    RefreshableCredentials,
)
from botocore.useragent import sanitize_user_agent_string_component

from alternator_shm import _options
from alternator_shm import discovery as _discovery
from alternator_shm._forksafe import ForkSafeLock
from alternator_shm._version import __version__
from alternator_shm.affinity import MODES as _AFFINITY_MODES
from alternator_shm.affinity import Affinity
from alternator_shm.balancing import BALANCING_MODES as _BALANCING_MODES
from alternator_shm.discovery import Discovery, node_url
from alternator_shm.errors import ConfigurationError, NoLiveNodesError
from alternator_shm.fleet import FleetStats
from alternator_shm.fleet import identity as _identity
from alternator_shm.fleet.failsoft import MODES as _SHARED_MODES
from alternator_shm.fleet.failsoft import FailSoftFleet, default_shm_dir
from alternator_shm.fleet.health import HealthSettings
from alternator_shm.fleet.schedule import DEFAULT as _SCHEDULE
from alternator_shm.fleet.schedule import seconds
from alternator_shm.hooks import HookOptions, register_hooks
from alternator_shm.routing import Router
from alternator_shm.transport import Transport, TransportOptions

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient, DynamoDBServiceResource

    from alternator_shm.aio.transport import AsyncTransport

__all__ = ["Helper"]

_log = logging.getLogger(__name__)

# Alternator nodes are reached directly, so a node that does not accept within 2 s is as good
# as down; botocore's 60 s default would stall a call behind one dead node.
_DEFAULT_CONNECT_TIMEOUT = 2.0
_DEFAULT_READ_TIMEOUT = 30.0
# botocore's ``max_attempts`` counts *retries* (3 -> 4 attempts); ``total_max_attempts`` counts
# every attempt. Three attempts land on three different nodes.
_DEFAULT_RETRIES: dict[str, Any] = {"mode": "standard", "total_max_attempts": 3}

CredentialsOption = tuple[str, str] | tuple[str, str, str] | Credentials | None


@dataclass(frozen=True)
class _Options:
    """Validated, picklable options: everything a worker needs to rebuild the Helper."""

    seeds: tuple[str, ...]
    port: int = 8000
    scheme: Literal["http", "https"] = "http"
    datacenter: str | None = None
    rack: str | None = None
    fallback: bool = True
    credentials: Any = None
    region: str = "alternator"
    optimize_headers: bool = False
    key_log_file: str | None = None
    ignore_server_certificate_error: bool = False
    ca_file: str | None = None
    client_cert: tuple[str, str] | None = None
    request_compression: int | None = None
    response_compression: bool = False
    user_agent: str | None = None
    refresh_interval: float = _SCHEDULE.refresh_interval
    idle_refresh_interval: float = _SCHEDULE.idle_refresh_interval
    namespace: str | None = None
    node_health: bool | HealthSettings = True
    shared: Literal["auto", "required", "off"] = "auto"
    key_route_affinity: Literal["rmw", "any_write"] | None = None
    # Sorted (table, attribute) pairs: hashable, picklable, immune to the caller's edits.
    partition_keys: tuple[tuple[str, str], ...] | None = None
    balancing: Literal["round_robin", "adaptive"] = "round_robin"
    botocore_config: Config | None = field(default=None, compare=False)
    session: boto3.Session | None = field(default=None, compare=False)


def _check_host(seed: object) -> str:
    if not isinstance(seed, str) or not seed.strip():
        raise ConfigurationError(f"seed nodes must be non-empty strings, got {seed!r}")
    host = seed.strip()
    if "://" in host or "/" in host:
        raise ConfigurationError(
            f"seed {seed!r}: give a host name or IP only; set scheme= and port= separately"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ":" in host:
        raise ConfigurationError(f"seed {seed!r}: no port in seeds; use port= instead")
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        and not label.startswith("-")
        for label in labels
    ):
        raise ConfigurationError(f"seed {seed!r} is neither an IP address nor a host name")
    return host.lower()


def _check_file(name: str, path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"{name} must be a path, got {path!r}")
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ConfigurationError(f"{name}: no such file: {text}")
    return str(text)


def _validate(seeds: Sequence[str], kw: dict[str, Any]) -> _Options:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ConfigurationError("seeds must be a non-empty list of host names or IPs")
    kw["seeds"] = tuple(sorted({_check_host(s) for s in seeds}))
    port = kw["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be an integer in 1..65535, got {port!r}")
    if kw["scheme"] not in ("http", "https"):
        raise ConfigurationError(f"scheme must be 'http' or 'https', got {kw['scheme']!r}")
    for name in ("datacenter", "rack", "namespace", "user_agent"):
        value = kw[name]
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a string or None, got {value!r}")
    for name in ("datacenter", "rack", "namespace"):
        if kw[name] == "":
            raise ConfigurationError(f"{name} must not be empty (use None)")
    if not isinstance(kw["region"], str) or not kw["region"]:
        raise ConfigurationError("region must be a non-empty string (SigV4 needs one)")
    creds = kw["credentials"]
    if isinstance(creds, list):
        creds = kw["credentials"] = tuple(creds)
    if not (
        creds is None
        or isinstance(creds, Credentials)
        or (
            isinstance(creds, tuple)
            and len(creds) in (2, 3)
            and all(isinstance(c, str) and c for c in creds)
        )
    ):
        raise ConfigurationError(
            "credentials must be (access_key, secret[, token]), a botocore Credentials, or None"
        )
    for name in ("fallback", "optimize_headers", "ignore_server_certificate_error",
                 "response_compression"):
        if not isinstance(kw[name], bool):
            raise ConfigurationError(f"{name} must be True or False, got {kw[name]!r}")
    rc = kw["request_compression"]
    if rc is not None and (isinstance(rc, bool) or not isinstance(rc, int) or rc < 0):
        raise ConfigurationError(
            f"request_compression must be None or a size in bytes >= 0, got {rc!r}"
        )
    for name in ("refresh_interval", "idle_refresh_interval"):
        kw[name] = seconds(name, kw[name])  # the fleet's own check (fleet/schedule.py)
    if not isinstance(kw["shared"], str) or kw["shared"] not in _SHARED_MODES:
        raise ConfigurationError(
            f"shared must be 'auto', 'required' or 'off', got {kw['shared']!r}"
        )
    if kw["ca_file"] is not None:
        kw["ca_file"] = _check_file("ca_file", kw["ca_file"])
    cert = kw["client_cert"]
    if cert is not None:
        if not isinstance(cert, (tuple, list)) or len(cert) != 2:
            raise ConfigurationError("client_cert must be (cert_path, key_path)")
        kw["client_cert"] = (
            _check_file("client_cert", cert[0]),
            _check_file("client_cert key", cert[1]),
        )
    klf = kw["key_log_file"]
    if klf is not None:
        if not isinstance(klf, (str, os.PathLike)):
            raise ConfigurationError(f"key_log_file must be a path, got {klf!r}")
        kw["key_log_file"] = os.fspath(klf)
    if kw["botocore_config"] is not None and not isinstance(kw["botocore_config"], Config):
        raise ConfigurationError("botocore_config must be a botocore.config.Config")
    if kw["session"] is not None and not isinstance(kw["session"], boto3.Session):
        raise ConfigurationError("session must be a boto3.Session")
    _options.health_settings(kw["node_health"])  # raises ConfigurationError when invalid
    _check_affinity(kw)
    if kw["balancing"] not in _BALANCING_MODES:
        raise ConfigurationError(
            f"balancing must be 'round_robin' or 'adaptive', got {kw['balancing']!r}"
        )
    if kw["rack"] is not None and kw["datacenter"] is None:
        _log.debug("rack without datacenter: the rack is looked up in each seed's own DC")
    return _Options(**kw)


def _check_affinity(kw: dict[str, Any]) -> None:
    """``key_route_affinity`` and ``partition_keys`` (spec: key-route-affinity.md)."""
    mode = kw["key_route_affinity"]
    if mode is not None and mode not in _AFFINITY_MODES:
        raise ConfigurationError(
            f"key_route_affinity must be None, 'rmw' or 'any_write', got {mode!r}"
        )
    keys = kw["partition_keys"]
    if keys is None:
        return
    if mode is None:
        # It would have no effect: refuse rather than ignore it.
        raise ConfigurationError("partition_keys needs key_route_affinity='rmw' or 'any_write'")
    if isinstance(keys, tuple):  # a pickled Helper's own form
        keys = dict(keys)
    if not isinstance(keys, Mapping):
        raise ConfigurationError(
            f"partition_keys must be a mapping {{table: hash_key_attribute}}, got {keys!r}"
        )
    for table, attribute in keys.items():
        if not (isinstance(table, str) and table and isinstance(attribute, str) and attribute):
            raise ConfigurationError(
                f"partition_keys entries must be non-empty strings, got {table!r}: {attribute!r}"
            )
    kw["partition_keys"] = tuple(sorted(keys.items()))


def _merge_config(base: Config, user: Config | None) -> Config:
    """``base.merge(user)``, except that ``retries`` is merged key by key.

    ``Config.merge`` replaces the whole ``retries`` dict, so a user's ``{"max_attempts": 1}``
    would silently drop our standard retry mode. A user's attempt count (either spelling)
    replaces ours; botocore lets ``total_max_attempts`` win over ``max_attempts``.
    """
    if user is None:
        return base
    merged = base.merge(user)
    user_retries: dict[str, Any] | None = getattr(user, "retries", None)
    if user_retries:
        retries: dict[str, Any] = dict(getattr(base, "retries", None) or {})
        if "max_attempts" in user_retries or "total_max_attempts" in user_retries:
            retries.pop("max_attempts", None)
            retries.pop("total_max_attempts", None)
        retries.update(user_retries)
        merged = merged.merge(Config(retries=cast(Any, retries)))
    return merged


def _config_value(config: Config, name: str) -> Any:
    # botocore-stubs does not declare Config's option attributes; they are set dynamically.
    return getattr(config, name)


def _timeouts(config: Config) -> tuple[float, float]:
    """(connect, read) seconds of a config: our transport sends, so it must honour them.

    ``None`` means "no timeout" to botocore; it is refused here (``ConfigurationError``) rather
    than honoured: a node that hangs would then hold the call forever instead of letting the
    Helper move on to another node. Zero / negative values keep botocore's own effect (urllib3
    refuses them when the call is sent; aiobotocore takes them as "no timeout").
    """
    values: list[float] = []
    for name in ("connect_timeout", "read_timeout"):
        value = _config_value(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(
                f"Config({name}={value!r}) is not supported: give a number of seconds "
                "(per client config=, or Helper(botocore_config=...)); with no timeout a "
                "hung node would hold the call instead of the Helper trying another"
            )
        values.append(float(value))
    return values[0], values[1]


def _default_namespace(o: _Options) -> str:
    return _options.default_namespace(_options.identity_options(o))


class _GivenCredentials(CredentialProvider):
    """Hands botocore the caller's Credentials object, so refreshable ones keep refreshing."""

    METHOD = "alternator-shm"
    CANONICAL_NAME = "alternator-shm"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


class Helper:
    """Load-balances boto3 DynamoDB traffic over an Alternator cluster, host-wide.

    The options are those of :meth:`__init__` (the README's Options table lists them with their
    defaults). Errors in options raise :class:`ConfigurationError` immediately; nothing touches
    the network or shared memory until first use.

    ``shared`` says what happens when the host-wide shared memory cannot be used: ``"auto"``
    (default) balances in this process alone after one warning and rejoins the host's fleet by
    itself later (``stats().mode`` is ``"local"`` meanwhile); ``"required"`` raises
    :class:`SharedStateError` from the call; ``"off"`` never attaches. See
    :mod:`alternator_shm.fleet.failsoft`.
    """

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        port: int = 8000,
        scheme: Literal["http", "https"] = "http",
        datacenter: str | None = None,
        rack: str | None = None,
        fallback: bool = True,
        credentials: CredentialsOption = None,
        region: str = "alternator",
        optimize_headers: bool = False,
        key_log_file: str | os.PathLike[str] | None = None,
        ignore_server_certificate_error: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert: tuple[str, str] | None = None,
        request_compression: int | None = None,
        response_compression: bool = False,
        user_agent: str | None = None,
        refresh_interval: float = _SCHEDULE.refresh_interval,
        idle_refresh_interval: float = _SCHEDULE.idle_refresh_interval,
        namespace: str | None = None,
        node_health: bool | HealthSettings = True,
        shared: Literal["auto", "required", "off"] = "auto",
        key_route_affinity: Literal["rmw", "any_write"] | None = None,
        partition_keys: Mapping[str, str] | None = None,
        balancing: Literal["round_robin", "adaptive"] = "round_robin",
        botocore_config: Config | None = None,
        session: boto3.Session | None = None,
    ) -> None:
        kw = dict(locals())
        for name in ("self", "seeds", "__class__"):
            kw.pop(name, None)
        self._options = _validate(seeds, kw)
        self._namespace = self._options.namespace or _default_namespace(self._options)
        # Our defaults under the user's botocore_config; a plain object, built once.
        self._base_config = _merge_config(
            Config(
                connect_timeout=_DEFAULT_CONNECT_TIMEOUT,
                read_timeout=_DEFAULT_READ_TIMEOUT,
                retries=cast(Any, dict(_DEFAULT_RETRIES)),
            ),
            self._options.botocore_config,
        )
        _timeouts(self._base_config)  # a botocore_config timeout we cannot honour: refused now
        # Re-created unlocked in every process (a fork while another thread holds it must not
        # deadlock the child) and re-entrant (close() from a signal handler).
        self._lock = ForkSafeLock()
        self._transports: dict[TransportOptions, Transport] = {}
        self._botocore_extra = f"Botocore/{botocore.__version__}"
        self._built = False
        self._fleet: FailSoftFleet | None = None
        self._router: Router | None = None
        self._api_transport: Transport | None = None
        self._discovery_transport: Transport | None = None
        self._discovery_obj: Discovery | None = None
        self._boto_session: boto3.Session | None = None
        self._affinity: Affinity | None = None
        self._async_transports: dict[TransportOptions, AsyncTransport] = {}

    # -- pickling: spawn / forkserver workers rebuild the Helper from its options -------------

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._options.session is not None:
            raise TypeError(
                "a Helper built with session= cannot be pickled; build the Helper in the worker"
            )
        state = {f.name: getattr(self._options, f.name) for f in fields(_Options)}
        return (_rebuild, (state,))

    # -- per-process lazy state ---------------------------------------------------------------

    def _ensure(self) -> None:
        """Build the working objects on first use.

        They are built once: each of them (fleet, transports, router) checks ``os.getpid()`` on
        use and re-attaches or reconnects after a fork, so a client created in a pre-fork master
        keeps working in every worker without touching the parent's sockets or locks.
        """
        if self._built:
            return
        with self._lock:
            if self._built:
                return
            o = self._options
            base = self._transport_options(self._base_config, None, None)
            self._api_transport = self._transport(base)
            self._discovery_transport = Transport(
                replace(
                    base,
                    connect_timeout=_discovery.CONNECT_TIMEOUT,
                    read_timeout=_discovery.READ_TIMEOUT,
                    max_pool_connections=2,
                )
            )
            self._discovery_obj = Discovery(
                o.seeds,
                scheme=o.scheme,
                port=o.port,
                datacenter=o.datacenter,
                rack=o.rack,
                fallback=o.fallback,
                transport=self._discovery_transport,
            )
            # shared="auto": the host's shared state, or this process alone when it cannot be
            # had (one warning; see fleet/failsoft.py). "required" raises, "off" never attaches.
            self._fleet = FailSoftFleet(
                self._namespace,
                shared=o.shared,
                shm_dir=default_shm_dir(),
                refresh=self._refresh,
                probe=self._probe,
                refresh_interval=o.refresh_interval,
                idle_refresh_interval=o.idle_refresh_interval,
                health=_options.health_settings(o.node_health),
                identity=_identity.encode(_options.identity_options(o)),
            )
            self._router = Router(
                self._fleet,
                [node_url(o.scheme, s, o.port) for s in o.seeds],
                fallback=o.fallback,
                scope=(self._discovery_obj.scopes[0].describe()
                       if o.datacenter or o.rack else None),
                load=self._fleet,
                balancing=o.balancing,
            )
            if o.key_route_affinity is not None:
                self._affinity = Affinity(o.key_route_affinity, dict(o.partition_keys or ()))
            self._built = True

    def _refresh(self) -> Sequence[str]:
        # Runs only in the elected refresher (the fleet's leader thread).
        discovery = self._discovery_obj
        fleet = self._fleet
        assert discovery is not None and fleet is not None
        # The published table and its note are the input: discovery narrows it only when
        # another node confirms (see discovery.py), and only within the same scope.
        return discovery.fetch(known=fleet.nodes(), previous_note=fleet.table_note() or None)

    def _probe(self, node: str) -> bool:
        discovery = self._discovery_obj
        assert discovery is not None
        settings = _options.health_settings(self._options.node_health)
        # the probe's own deadline is probe_timeout (node-health spec), not discovery's
        return discovery.probe(node, settings.probe_timeout if settings is not None else None)

    def _session(self) -> boto3.Session:
        if self._options.session is not None:
            return self._options.session
        if self._boto_session is None:
            creds = self._options.credentials
            if isinstance(creds, Credentials):
                core = botocore.session.Session()
                core.register_component(
                    "credential_provider", CredentialResolver([_GivenCredentials(creds)])
                )
                self._boto_session = boto3.Session(botocore_session=core)
            else:
                self._boto_session = boto3.Session()
        return self._boto_session

    def _botocore_session(self) -> botocore.session.Session:
        # boto3 exposes no public accessor; ``_session`` is the documented-in-practice way.
        return self._session()._session

    def _client_kwargs(
        self, user_kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], Config | None]:
        """boto3 ``client()`` kwargs, and the user's own config (Helper's under the client's).

        Options whose boto3 effect the Helper cannot have are refused here, naming the Helper
        option to use instead.
        """
        o = self._options
        if "endpoint_url" in user_kwargs:
            raise ConfigurationError(
                "endpoint_url is chosen per attempt by the Helper; give the cluster as "
                "Helper(seeds=[...], port=..., scheme=...)"
            )
        use_ssl = user_kwargs.get("use_ssl")
        if use_ssl is not None and bool(use_ssl) != (o.scheme == "https"):
            raise ConfigurationError(
                f"use_ssl={use_ssl!r} contradicts the Helper's scheme={o.scheme!r}; "
                f"use Helper(scheme={'https' if use_ssl else 'http'!r})"
            )
        user_config = user_kwargs.get("config")
        if user_config is not None and not isinstance(user_config, Config):
            raise ConfigurationError("config must be a botocore.config.Config")
        mine = o.botocore_config
        if mine is not None and user_config is not None:
            user_config = mine.merge(user_config)
        elif user_config is None:
            user_config = mine
        if user_config is not None and _config_value(user_config, "endpoint_discovery_enabled"):
            raise ConfigurationError(
                "endpoint_discovery_enabled would send calls to the endpoints DescribeEndpoints "
                "names; the Helper routes every attempt itself (its nodes come from /localnodes)"
            )
        kwargs: dict[str, Any] = {"region_name": o.region}
        kwargs.update(user_kwargs)
        config = self._base_config
        if isinstance(kwargs.get("config"), Config):
            config = _merge_config(config, kwargs["config"])
        kwargs["config"] = config
        assert self._router is not None
        # A placeholder: every attempt's URL is set by the routing hook before signing.
        kwargs["endpoint_url"] = self._router_bootstrap()
        creds = o.credentials
        if isinstance(creds, tuple):
            kwargs.setdefault("aws_access_key_id", creds[0])
            kwargs.setdefault("aws_secret_access_key", creds[1])
            if len(creds) == 3:
                kwargs.setdefault("aws_session_token", creds[2])
        elif isinstance(creds, Credentials) and o.session is not None:
            frozen = creds.get_frozen_credentials()
            kwargs.setdefault("aws_access_key_id", frozen.access_key)
            kwargs.setdefault("aws_secret_access_key", frozen.secret_key)
            if frozen.token:
                kwargs.setdefault("aws_session_token", frozen.token)
        return kwargs, user_config

    def _transport_options(
        self, config: Config, user_config: Config | None, verify: Any
    ) -> TransportOptions:
        """What botocore's HTTP session would be built from, for one client (or the Helper).

        TLS trust follows botocore's order: the client's ``verify``, then the Helper's
        ``ca_file`` / ``ignore_server_certificate_error``, then ``ca_bundle`` of the session
        (``AWS_CA_BUNDLE``, the shared config file), then ``REQUESTS_CA_BUNDLE``.
        """
        o = self._options
        ca_file, ignore = o.ca_file, o.ignore_server_certificate_error
        what = "verify"
        if verify is None and ca_file is None and not ignore:
            what = "ca_bundle (AWS_CA_BUNDLE or the shared config file) / REQUESTS_CA_BUNDLE"
            verify = self._botocore_session().get_config_variable("ca_bundle") or (
                os.environ.get("REQUESTS_CA_BUNDLE") or None
            )
        if verify is False:
            ca_file, ignore = None, True
        elif verify is True:
            ca_file, ignore = None, False
        elif isinstance(verify, (str, os.PathLike)):
            ca_file, ignore = _check_file(what, verify), False
        elif verify is not None:
            raise ConfigurationError(
                f"verify must be True, False, a CA bundle path or None, got {verify!r}"
            )
        cert: Any = None
        if user_config is not None and _config_value(user_config, "client_cert") is not None:
            cert = _config_value(user_config, "client_cert")
        elif o.client_cert is not None:
            cert = o.client_cert
        client_cert: str | tuple[str, str] | None
        if cert is None:
            client_cert = None
        elif isinstance(cert, (str, os.PathLike)):
            client_cert = _check_file("client_cert", cert)
        elif isinstance(cert, (tuple, list)) and len(cert) == 2:
            client_cert = (
                _check_file("client_cert", cert[0]),
                _check_file("client_cert key", cert[1]),
            )
        else:
            raise ConfigurationError("client_cert must be a path or (cert_path, key_path)")
        keepalive = _config_value(config, "tcp_keepalive")
        proxies = _config_value(config, "proxies")
        proxies_config = _config_value(config, "proxies_config") or {}
        pool = _config_value(config, "max_pool_connections")
        if pool is None:
            pool = 10
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigurationError(f"max_pool_connections must be an integer >= 1, got {pool!r}")
        try:
            frozen_proxies = (
                None
                if proxies is None
                # botocore goes direct for a scheme whose proxy is falsy ({'http': None}, the
                # requests idiom to bypass HTTP_PROXY): never str(None) as a proxy host
                else tuple(sorted((str(k), str(v)) for k, v in dict(proxies).items() if v))
            )
            frozen_settings = tuple(
                sorted(
                    (str(k), tuple(v) if isinstance(v, list) else v)
                    for k, v in dict(proxies_config).items()
                )
            )
            hash(frozen_settings)
        except (TypeError, ValueError) as e:
            raise ConfigurationError(f"proxies / proxies_config must be flat mappings: {e}") from e
        connect_timeout, read_timeout = _timeouts(self._base_config)
        return TransportOptions(
            scheme=o.scheme,
            ca_file=ca_file,
            client_cert=client_cert,
            ignore_server_certificate_error=ignore,
            key_log_file=o.key_log_file,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=pool,
            tcp_keepalive=True if keepalive is None else bool(keepalive),
            proxies=frozen_proxies,
            proxies_config=frozen_settings,
        )

    def _transport(self, options: TransportOptions) -> Transport:
        """The one transport of these options: clients configured alike share connections."""
        with self._lock:
            transport = self._transports.get(options)
            if transport is None:
                transport = self._transports[options] = Transport(options)
            return transport

    def _user_agent(
        self, client_config: Config, user_config: Config | None, resource: bool = False
    ) -> str:
        """The User-Agent of one client: our token plus the user's extras, as botocore builds it.

        ``Config(user_agent=...)`` replaces the whole string in botocore (its "legacy" form,
        followed by the extras); we send exactly what botocore computed for it. Otherwise our
        token (the Helper's ``user_agent``) takes the place of botocore's own identification,
        followed by ``app/<user_agent_appid>`` and the ``user_agent_extra`` values. boto3's
        own marks are identification too: the session's default extra (``Botocore/<v>``) is
        never sent, and with ``optimize_headers`` neither is the ``Resource`` extra boto3 gives
        a resource's client when the user set none.
        """
        if user_config is not None and _config_value(user_config, "user_agent") is not None:
            return str(_config_value(client_config, "user_agent"))
        o = self._options
        if o.user_agent is not None:
            token = o.user_agent
        elif o.optimize_headers:
            token = ""  # optimize_headers drops our own identification, not the user's
        else:
            token = f"alternator-shm/{__version__}"
        parts = [token] if token else []
        appid = _config_value(client_config, "user_agent_appid")
        if appid:
            parts.append("app/" + sanitize_user_agent_string_component(appid, allow_hash=True))
        session_extra = self._botocore_session().user_agent_extra or ""
        if session_extra.startswith(self._botocore_extra):  # boto3's own, then the user's
            session_extra = session_extra[len(self._botocore_extra) :].strip()
        if session_extra:
            parts.append(session_extra)
        extra = _config_value(client_config, "user_agent_extra")
        users_extra = (
            user_config is not None and _config_value(user_config, "user_agent_extra") is not None
        )
        if resource and o.optimize_headers and not users_extra:
            extra = None  # boto3's "Resource" mark
        if extra:
            parts.append(extra)
        return " ".join(parts)

    def _hook_options(
        self, config: Config, user_config: Config | None, resource: bool = False
    ) -> HookOptions:
        o = self._options
        return HookOptions(
            optimize_headers=o.optimize_headers,
            user_agent=self._user_agent(config, user_config, resource),
            request_compression=o.request_compression,
            response_compression=o.response_compression,
        )

    def _router_bootstrap(self) -> str:
        o = self._options
        return node_url(o.scheme, o.seeds[0], o.port)

    def _install(
        self, client: Any, user_config: Config | None, verify: Any, resource: bool = False
    ) -> None:
        assert self._router is not None
        config = client.meta.config
        transport = self._transport(self._transport_options(config, user_config, verify))
        transport.prepare()  # a bad CA bundle, client cert or key log is refused now
        register_hooks(
            client.meta.events,
            router=self._router,
            transport=transport,
            options=self._hook_options(config, user_config, resource),
            # The client's own merged config, so a per-client config= timeout applies too.
            timeout=_timeouts(config),
            affinity=self._affinity,
            client=client,
        )

    # -- public API ---------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The shared-state name every cooperating process must agree on."""
        return self._namespace

    def new_dynamodb_client(self, **client_kwargs: Any) -> DynamoDBClient:
        """A genuine botocore DynamoDB client whose every attempt is routed by this Helper."""
        self._ensure()
        kwargs, user_config = self._client_kwargs(client_kwargs)
        with self._lock:  # boto3 sessions are not thread-safe while creating clients
            client = self._session().client("dynamodb", **kwargs)
        self._install(client, user_config, client_kwargs.get("verify"))
        return client

    def new_dynamodb_resource(self, **resource_kwargs: Any) -> DynamoDBServiceResource:
        """A genuine boto3 DynamoDB resource, routed like :meth:`new_dynamodb_client`."""
        self._ensure()
        kwargs, user_config = self._client_kwargs(resource_kwargs)
        with self._lock:
            resource = self._session().resource("dynamodb", **kwargs)
        self._install(
            resource.meta.client, user_config, resource_kwargs.get("verify"), resource=True
        )
        return resource

    @asynccontextmanager
    async def new_async_dynamodb_client(self, **client_kwargs: Any) -> AsyncIterator[Any]:
        """An async context manager yielding a genuine aiobotocore DynamoDB client.

        Every attempt is routed exactly as for :meth:`new_dynamodb_client` (shared counter,
        shared health, node chosen before signing, retries to nodes not yet tried), with the
        same options and errors; the event loop is never blocked. Needs the extra
        ``alternator-shm[async]`` (aiobotocore).

        Raises:
            ConfigurationError: aiobotocore is not installed, the Helper was built with a
                boto3 ``session=`` (its credential chain is synchronous), or an option is
                refused as for the sync client.
        """
        try:
            from aiobotocore.session import get_session

            from alternator_shm.aio.hooks import register_async_hooks
            from alternator_shm.aio.transport import AsyncTransport
        except ImportError as e:  # pragma: no cover - exercised without the extra
            raise ConfigurationError(
                "the async client needs aiobotocore: pip install 'alternator-shm[async]'"
            ) from e
        if self._options.session is not None:
            raise ConfigurationError(
                "new_async_dynamodb_client cannot use a boto3 session=: aiobotocore needs its "
                "own; pass credentials= (or rely on the default credential chain) instead"
            )
        self._ensure()
        kwargs, user_config = self._client_kwargs(client_kwargs)
        creds = self._options.credentials
        if isinstance(creds, RefreshableCredentials):
            raise ConfigurationError(
                "new_async_dynamodb_client cannot refresh botocore RefreshableCredentials; "
                "pass credentials=(key, secret[, token]) or rely on aiobotocore's default chain"
            )
        if isinstance(creds, Credentials):
            frozen = creds.get_frozen_credentials()
            kwargs.setdefault("aws_access_key_id", frozen.access_key)
            kwargs.setdefault("aws_secret_access_key", frozen.secret_key)
            if frozen.token:
                kwargs.setdefault("aws_session_token", frozen.token)
        assert self._router is not None
        fleet = self._fleet
        assert fleet is not None
        async with get_session().create_client("dynamodb", **kwargs) as client:
            config = client.meta.config
            options = self._transport_options(config, user_config, client_kwargs.get("verify"))
            with self._lock:
                transport = self._async_transports.get(options)
                if transport is None:
                    transport = self._async_transports[options] = AsyncTransport(options)
            # A bad CA bundle, client cert or key log, and a proxy this client cannot use for a
            # seed or a known node, are refused now (a node found later: at its first attempt).
            o = self._options
            transport.prepare([node_url(o.scheme, seed, o.port) for seed in o.seeds]
                              + list(fleet.nodes()))
            register_async_hooks(
                client.meta.events,
                router=self._router,
                transport=transport,
                options=self._hook_options(config, user_config),
                timeout=_timeouts(config),
                table_ready=self._router.table_ready,
                affinity=self._affinity,
                client=client,
            )
            transport.acquire()
            try:
                yield client
            finally:
                await transport.release()

    def _discovery(self) -> Discovery:
        self._ensure()
        assert self._discovery_obj is not None
        return self._discovery_obj

    def _shared(self) -> FailSoftFleet:
        self._ensure()
        assert self._fleet is not None
        return self._fleet

    def check_if_rack_and_datacenter_set_correctly(self) -> None:
        """Raise :class:`ConfigurationError` if the configured dc / rack lists no node."""
        self._discovery().check_if_rack_and_datacenter_set_correctly()

    def check_if_rack_datacenter_feature_is_supported(self) -> bool:
        """False on servers (before 2025.1) that silently ignore ``?dc=`` and ``?rack=``."""
        return self._discovery().check_if_rack_datacenter_feature_is_supported()

    def update_live_nodes(self, timeout: float = 5.0) -> list[str]:
        """Refresh the shared table now, through the elected refresher; return the new list.

        Honours ``timeout`` in every process, the leader included. Raises
        :class:`DiscoveryError` if the refresh failed or no refresh answered within
        ``timeout`` (a stopped leader is taken over only after ``max(3 x refresh_interval,
        2 s)``): never returns a stale table silently.
        Raises :class:`NoLiveNodesError` naming the scope when discovery answered that the
        configured scope lists no live node and ``fallback`` is off.
        """
        fleet = self._shared()
        fleet.start()
        nodes = list(fleet.refresh_now(timeout))
        reason = fleet.empty_reason() if not nodes else None
        if reason is not None and not self._options.fallback:
            raise NoLiveNodesError(reason)
        return nodes

    def live_nodes(self) -> list[str]:
        """The node URLs currently shared on this host (waits briefly for the first table)."""
        fleet = self._shared()
        nodes = fleet.nodes()
        if not nodes:
            nodes = fleet.wait_for_nodes(5.0)
        return list(nodes)

    def next_node(self) -> str:
        """Advance the shared counter once and return that node's URL."""
        router = self._router
        if router is None:
            self._ensure()
            router = self._router
            assert router is not None
        return router.choose(())

    def stats(self) -> FleetStats:
        """A snapshot of the shared state: leader, generation, nodes, per-node picks, refresh.

        ``mode`` is ``"local"`` (with the cause in ``mode_reason``) while this process balances
        alone, and then the figures are this process's own."""
        return self._shared().stats()

    def start(self) -> Helper:
        """Attach and start this process's refresher now instead of on first use."""
        self._shared().start()
        return self

    def close(self) -> None:
        """Stop this process's refresher thread and close its sockets; shared state stays.

        Once this returns the process no longer writes the shared table, even if its refresher
        thread is still inside a slow refresh: its leader epoch was revoked (``fleet.fencing``).
        Takes no Helper lock: safe from a signal handler that interrupted this Helper's own
        critical section, and while other threads are mid-request (they finish, or fail with
        a botocore error; the Helper stays usable and re-attaches on next use).
        """
        fleet, router, affinity = self._fleet, self._router, self._affinity
        if fleet is not None:
            fleet.close()
        if affinity is not None:
            affinity.close()
        if router is not None:
            router.forget_start()
        for transport in [*list(self._transports.values()), self._discovery_transport]:
            if transport is not None:
                transport.close()

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        o = self._options
        return (
            f"Helper(seeds={list(o.seeds)!r}, port={o.port}, scheme={o.scheme!r}, "
            f"datacenter={o.datacenter!r}, rack={o.rack!r}, namespace={self._namespace!r})"
        )


def _rebuild(state: dict[str, Any]) -> Helper:
    seeds = state.pop("seeds")
    return Helper(list(seeds), **state)
