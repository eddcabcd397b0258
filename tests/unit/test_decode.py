"""The one decoder of compressed answers (``alternator_shm._decode``), shared by both transports.

The union of what the sync and the async transport each handled before they shared it, plus the
cases where they differed (multi-member gzip, codings we did not ask for, broken bodies).
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from typing import Any

import botocore.awsrequest
import botocore.exceptions
import pytest
import urllib3

from alternator_shm._decode import AnswerDecodeError, decode_answer, decode_body
from alternator_shm.errors import AlternatorError, UndecodableAnswerError

JSON = b'{"Item": {"p": {"S": "k"}, "v": {"S": "' + b"x" * 5000 + b'"}}}'


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _members(data: bytes, n: int = 3) -> bytes:
    step = len(data) // n + 1
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(JSON)),
        ("x-gzip", gzip.compress(JSON)),
        (" GZIP ", gzip.compress(JSON)),
        ("gzip", _members(JSON)),  # every member, not the first one only
        ("gzip", gzip.compress(JSON) + b"\0\0\0\0"),  # zero padding after the last member
        ("deflate", zlib.compress(JSON)),  # zlib-wrapped, RFC 9110
        ("deflate", _raw_deflate(JSON)),  # raw DEFLATE, as some servers send
        ("identity", JSON),
        ("deflate, gzip", gzip.compress(zlib.compress(JSON))),  # undone last coding first
        ("gzip, identity", gzip.compress(JSON)),
    ],
    ids=["gzip", "x-gzip", "case-space", "members", "padding", "zlib", "raw-deflate",
         "identity", "list", "list-identity"],
)
def test_decodes(encoding: str, body: bytes) -> None:
    assert decode_body(body, encoding) == JSON


@pytest.mark.parametrize(
    ("encoding", "body", "match"),
    [
        ("gzip", gzip.compress(JSON)[:-10], "gzip"),  # truncated
        ("gzip", gzip.compress(JSON) + b"garbage", "gzip"),  # not a member after the first
        ("gzip", b"not gzip at all", "gzip"),
        ("deflate", zlib.compress(JSON)[:-10], "deflate"),
        ("deflate", zlib.compress(JSON) + b"garbage", "deflate"),
        ("br", JSON, "'br'"),  # a coding we did not ask for, even if the bytes look plain
        ("bzip2", bz2.compress(JSON), "'bzip2'"),
        ("gzip, zstd", gzip.compress(JSON), "'zstd'"),
    ],
    ids=["gzip-truncated", "gzip-garbage", "not-gzip", "deflate-truncated", "deflate-garbage",
         "br", "bzip2", "list-zstd"],
)
def test_refuses(encoding: str, body: bytes, match: str) -> None:
    with pytest.raises(AnswerDecodeError, match=match):
        decode_body(body, encoding)


def test_empty_body_stays_empty() -> None:
    assert decode_body(b"", "gzip") == b""
    assert decode_body(b"", "deflate") == b""


def _request() -> botocore.awsrequest.AWSPreparedRequest:
    return botocore.awsrequest.AWSRequest(method="POST", url="http://127.0.0.1:1/").prepare()


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@pytest.mark.parametrize("kind", ["urllib3", "lower-case dict"])
def test_decode_answer_edits_either_header_mapping(kind: str) -> None:
    body = gzip.compress(JSON)
    raw = {"Content-Encoding": "gzip", "Content-Length": str(len(body)),
           "x-amz-crc32": f" 0{_crc(body)} "}  # fmt: skip
    headers: Any = (
        urllib3.HTTPHeaderDict(raw) if kind == "urllib3" else {k.lower(): v for k, v in raw.items()}
    )
    assert decode_answer(_request(), body, headers) == JSON
    assert {k.lower(): v for k, v in headers.items()} == {"content-length": str(len(JSON))}


def test_decode_answer_keeps_a_crc_that_does_not_match_for_botocore() -> None:
    body = gzip.compress(JSON)
    for bad in (str(_crc(body) ^ 1), "not-a-number"):
        headers = {"content-encoding": "gzip", "x-amz-crc32": bad}
        assert decode_answer(_request(), body, headers) == JSON
        assert headers["x-amz-crc32"] == bad  # botocore rejects and retries, as without gzip


def test_decode_answer_leaves_a_plain_answer_alone() -> None:
    headers = {"content-length": str(len(JSON)), "x-amz-crc32": str(_crc(JSON))}
    assert decode_answer(_request(), JSON, headers) == JSON
    assert headers == {"content-length": str(len(JSON)), "x-amz-crc32": str(_crc(JSON))}


def test_undecodable_answer_is_a_retried_connection_error() -> None:
    headers = {"content-encoding": "br"}
    with pytest.raises(UndecodableAnswerError) as caught:
        decode_answer(_request(), b"\x1b\x00", headers)
    e = caught.value
    # Retried by botocore's standard and legacy modes; ours; says what and where.
    assert isinstance(e, botocore.exceptions.ConnectionClosedError)
    assert isinstance(e, AlternatorError)
    assert "'br'" in str(e) and "http://127.0.0.1:1/" in str(e)
    assert headers == {"content-encoding": "br"}  # untouched on failure
