"""The per-node request log: what each emulated node saw on the wire.

Tests of the client library assert on it (round-robin distribution, header stripping, which
``Host`` was signed), so every field is taken from the bytes as received, not as re-parsed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestLogEntry:
    """One request as a node received it.

    ``header_bytes`` counts the header block *excluding* the request line: every header line
    with its CRLF plus the blank line that ends the block, exactly as received.
    """

    time: float
    method: str
    path: str  # including the query string
    operation: str | None
    headers: dict[str, str] = field(default_factory=dict)  # original case, as received
    header_bytes: int = 0
    body_bytes: int = 0
    signed_host: str | None = None
    status: int = 0
    auth_ok: bool | None = None
    mtls_user: str | None = None  # role taken from a TLS client certificate (mTLS)
    response_chunked: bool = False  # answered with Transfer-Encoding: chunked
    response_encoding: str | None = None  # the answer's Content-Encoding (gzip / deflate)


class RequestLog:
    """A thread-safe append-only list with snapshot reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RequestLogEntry] = []

    def append(self, entry: RequestLogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[RequestLogEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
