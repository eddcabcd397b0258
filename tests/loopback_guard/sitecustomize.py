"""Put this directory first on PYTHONPATH and every Python process refuses non-loopback peers.

Tests that run user-facing code (README snippets, CLI commands given example addresses) load it
so that nothing they start can reach a real network: a connection to anything but 127.0.0.0/8
or ::1 raises ``OSError`` instead.
"""

import ipaddress
import socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _check(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = str(address[0])
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        if not ip.is_loopback:
            raise OSError(f"loopback guard: connection to {host} refused")


def _guarded_connect(sock: socket.socket, address: object) -> None:
    _check(sock, address)
    _connect(sock, address)  # type: ignore[arg-type]


def _guarded_connect_ex(sock: socket.socket, address: object) -> int:
    _check(sock, address)
    return _connect_ex(sock, address)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
