"""Compressed answers made plain for botocore: one owner for the sync and async transports.

With ``response_compression=True`` we send ``Accept-Encoding: gzip, deflate`` and Alternator
(2026.1+, ``alternator/http_compression.cc``) compresses large answers. botocore never decodes a
body itself (its urllib3 session reads with ``decode_content=False``) and parses whatever bytes
it is given, so the decoding must be complete and strict here:

* ``gzip`` / ``x-gzip``: every member of a multi-member body is decoded (RFC 1952 §2.2; urllib3
  and :func:`gzip.decompress` do the same). Decoding only the first member would hand botocore
  a truncated JSON document, which its parser turns into ``{"message": ...}``: a silently
  wrong answer. A truncated member or trailing bytes that are not a member are refused.
* ``deflate``: zlib-wrapped per RFC 9110 §8.4.1.2, or raw DEFLATE as some servers send (urllib3
  accepts both); the stream must be complete, with nothing after it.
* A ``Content-Encoding`` list (``gzip, deflate``) is undone last coding first (RFC 9110
  §8.4); ``identity`` is a no-op.
* Any other coding (``br``, ``zstd``, ...: one we did not ask for) is refused. urllib3 would
  pass such a body through undecoded; botocore would then parse compressed bytes as JSON.

A body that cannot be decoded is raised as :class:`~alternator_shm.errors.UndecodableAnswerError`,
a botocore ``ConnectionClosedError`` ("no valid response received"): botocore's standard *and*
legacy retry modes retry it (a plain ``HTTPClientError`` is not retried by legacy mode), the
routing hooks count it against the node that sent it, and its message names the fault.

DynamoDB's ``x-amz-crc32`` covers the bytes as sent, i.e. the compressed ones; botocore compares
it with the body it is given (the decoded one). A matching checksum is therefore checked here and
dropped with the encoding, so botocore does not retry a good answer; a mismatch (or a value
botocore's ``int()`` cannot read) is left for botocore, which rejects and retries the answer as
it would without compression.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import MutableMapping

import botocore.awsrequest

from alternator_shm.errors import UndecodableAnswerError

__all__ = ["AnswerDecodeError", "decode_answer", "decode_body"]


class AnswerDecodeError(ValueError):
    """A compressed body that is broken, truncated, or in a coding we did not ask for."""


def _gunzip(data: bytes) -> bytes:
    try:
        # Every member; trailing zero padding allowed; truncation and garbage refused.
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise AnswerDecodeError(f"broken gzip body: {e}") from e


def _inflate(data: bytes) -> bytes:
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):  # zlib-wrapped first, then raw DEFLATE
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data) + inflater.flush()
        except zlib.error:
            continue
        if inflater.eof and not inflater.unused_data:
            return out
    raise AnswerDecodeError("broken deflate body: truncated, trailing bytes, or not deflate")


def decode_body(data: bytes, content_encoding: str) -> bytes:
    """``data`` with every coding of ``content_encoding`` undone; :class:`AnswerDecodeError`
    for a broken body or a coding other than gzip, x-gzip, deflate and identity."""
    if not data:
        return data  # nothing was encoded (urllib3 answers b"" too)
    for coding in reversed(content_encoding.split(",")):
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            data = _gunzip(data)
        elif coding == "deflate":
            data = _inflate(data)
        elif coding not in ("identity", ""):
            raise AnswerDecodeError(
                f"unsupported Content-Encoding {coding!r} (we asked for gzip or deflate)"
            )
    return data


def _crc_matches(header: str, data: bytes) -> bool:
    try:
        expected = int(header)  # as botocore reads it (spaces, leading zeros)
    except ValueError:
        return False
    return expected == zlib.crc32(data) & 0xFFFFFFFF


def decode_answer(
    request: botocore.awsrequest.AWSPreparedRequest,
    data: bytes,
    headers: MutableMapping[str, str],
) -> bytes:
    """Decode one answer's body for botocore; return the plain bytes.

    ``headers`` (case-insensitive, or with lower-case keys) is edited in place: without
    ``Content-Encoding``, with the decoded ``Content-Length``, and without an ``x-amz-crc32``
    that matched the bytes as received. An answer without ``Content-Encoding`` is returned as
    is. Raises :class:`UndecodableAnswerError` when the body cannot be decoded.
    """
    encoding = headers.get("content-encoding")
    if encoding is None:
        return data
    try:
        decoded = decode_body(data, encoding)
    except AnswerDecodeError as e:
        raise UndecodableAnswerError(error=e, request=request, endpoint_url=request.url) from e
    crc = headers.get("x-amz-crc32")
    if crc is not None and _crc_matches(crc, data):
        del headers["x-amz-crc32"]
    del headers["content-encoding"]
    headers["content-length"] = str(len(decoded))
    return decoded
