"""optimize_headers: at least half the request header bytes go, and SigV4 still verifies.

Header bytes are what the emulator received on the wire (the whole header block), compared
with plain boto3 talking to one node of the same cluster in the same test.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

import pytest
from test_helper_support import (
    all_api_entries,
    header,
    make_helper,
    module_cluster,
    plain_client,
)

USERS = {"hdr-key": "hdr-secret"}
TABLE = "headers_table"
SMALL_ITEM = {"p": {"S": "key-1"}, "v": {"S": "x" * 40}}
BIG_ITEM = {"p": {"S": "key-2"}, "v": {"S": "alternator " * 500}}  # ~5.5 kB, compressible


cluster = module_cluster(nodes=3, users=USERS, backend="null")


def _workload(client: Any) -> None:
    for _ in range(3):
        client.get_item(TableName=TABLE, Key={"p": {"S": "key-1"}})
        client.put_item(TableName=TABLE, Item=SMALL_ITEM)
        client.put_item(TableName=TABLE, Item=BIG_ITEM)


#: Headers that exist only because compression was asked for. They are irreducible: with
#: Host, X-Amz-Target, X-Amz-Date, Authorization and Content-Length alone an optimized request
#: is already ~48 % of plain boto3's header block, so ``Content-Encoding: gzip`` (24 B, plus
#: 17 B in SignedHeaders) or ``Accept-Encoding: gzip, deflate`` (32 B) push it to ~53-55 %.
_COMPRESSION_HEADERS = ("content-encoding", "accept-encoding")


def _compression_bytes(entry: Any) -> int:
    total = 0
    for name, value in entry.headers.items():
        if name.lower() in _COMPRESSION_HEADERS and value.lower() != "identity":
            total += len(name) + len(value) + 4  # "Name: value\r\n"
    if header(entry, "Content-Encoding") is not None:
        total += len(";content-encoding")  # its entry in SignedHeaders
    return total


def _header_bytes(cluster: Any, *, without_compression: bool = False) -> dict[str, float]:
    """Median header bytes per operation kind, after asserting every request authenticated."""
    by_kind: dict[str, list[int]] = {}
    for _, entry in all_api_entries(cluster):
        assert entry.auth_ok is True and entry.status == 200, entry
        kind = entry.operation
        if kind == "PutItem" and (entry.body_bytes > 1000 or header(entry, "Content-Encoding")):
            kind = "PutItem-big"
        size = entry.header_bytes
        if without_compression:
            size -= _compression_bytes(entry)
        by_kind.setdefault(kind, []).append(size)
    return {kind: statistics.median(values) for kind, values in by_kind.items()}


def _assert_signed_headers_present(cluster: Any) -> None:
    for _, entry in all_api_entries(cluster):
        auth = header(entry, "Authorization") or ""
        match = re.search(r"SignedHeaders=([^,\s]+)", auth)
        assert match, auth
        for name in match.group(1).split(";"):
            assert header(entry, name) is not None, (name, entry.headers)


def _measure(cluster: Any, **options: Any) -> tuple[dict[str, float], dict[str, float]]:
    cluster.clear_logs()
    with make_helper(cluster, **options) as h:
        _workload(h.new_dynamodb_client())
    _assert_signed_headers_present(cluster)
    return _header_bytes(cluster), _header_bytes(cluster, without_compression=True)


def test_optimize_headers_halves_header_bytes_and_still_authenticates(cluster: Any) -> None:
    cluster.clear_logs()
    _workload(plain_client(cluster))
    plain = _header_bytes(cluster)
    assert set(plain) == {"GetItem", "PutItem", "PutItem-big"}

    optimized, _ = _measure(cluster, optimize_headers=True)
    not_optimized, _ = _measure(cluster, optimize_headers=False)
    assert set(optimized) == set(plain)
    for kind, plain_bytes in plain.items():
        assert optimized[kind] <= 0.5 * plain_bytes, (kind, optimized, plain)
        # The option is what does it: without it, most of boto3's headers are still sent.
        assert not_optimized[kind] > 0.5 * plain_bytes, (kind, not_optimized, plain)


@pytest.mark.parametrize(
    "compression",
    [{"request_compression": 1024}, {"request_compression": 1024, "response_compression": True}],
    ids=["request-gzip", "request-and-response-gzip"],
)
def test_optimize_headers_with_compression(cluster: Any, compression: dict[str, Any]) -> None:
    """Everything but the compression headers themselves is still cut by half."""
    cluster.clear_logs()
    _workload(plain_client(cluster))
    plain = _header_bytes(cluster)

    total, rest = _measure(cluster, optimize_headers=True, **compression)
    not_optimized, _ = _measure(cluster, optimize_headers=False, **compression)
    for kind, plain_bytes in plain.items():
        assert rest[kind] <= 0.5 * plain_bytes, (kind, rest, plain)
        assert total[kind] <= 0.6 * plain_bytes, (kind, total, plain)
        assert not_optimized[kind] > 0.6 * plain_bytes, (kind, not_optimized, plain)


def test_optimized_headers_keep_what_alternator_reads(cluster: Any) -> None:
    cluster.clear_logs()
    with make_helper(
        cluster, optimize_headers=True, request_compression=1024, response_compression=True
    ) as h:
        _workload(h.new_dynamodb_client())
    gzipped = 0
    for _, entry in all_api_entries(cluster):
        names = {name.lower() for name in entry.headers}
        assert {"host", "x-amz-target", "content-length", "authorization",
                "x-amz-date"} <= names, names
        assert not any(name.startswith("amz-sdk-") for name in names), names
        assert "gzip" in (header(entry, "Accept-Encoding") or "")
        encoding = header(entry, "Content-Encoding")
        if encoding is not None:
            gzipped += 1
            assert encoding == "gzip"
            # Compressed before signing: the encoding is covered by the signature.
            assert "content-encoding" in (header(entry, "Authorization") or "")
    assert gzipped == 3  # the three big PutItems
