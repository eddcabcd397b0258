"""Alternator's SigV4 check (server.cc ``verify_signature`` + utils/aws_sigv4.cc).

The crypto is botocore's own ``SigV4Auth``, fed a rebuilt request, so the emulator cannot drift
from what boto3 computes; only Alternator's fixed choices are applied on top: canonical URI
``/``, empty query string, exactly the headers named in ``SignedHeaders``, the payload hash of
the body *as received* (still compressed), region and service taken from the credential scope,
a +/-15 minute clock window, and Alternator's error types and messages.
"""

from __future__ import annotations

import datetime as _dt
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from alternator_shm.emulator._wire import ApiError

_WINDOW = _dt.timedelta(minutes=15)
_FMT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class AuthResult:
    user: str
    signed_host: str | None


class _SignedHeadersOnly(SigV4Auth):
    """SigV4Auth that signs exactly the (lowercased) headers the client named."""

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in request.context["alternator_signed"]:
            headers[name] = value
        return headers


def _bad(type_: str, message: str) -> ApiError:
    return ApiError(400, type_, message)


def _parse_authorization(value: str) -> dict[str, str]:
    # Fields may be separated by commas or spaces (test_authorization.py:93-107).
    fields: dict[str, str] = {}
    for token in value.replace(",", " ").split():
        key, sep, val = token.partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    return fields


def verify(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    users: Mapping[str, str],
    *,
    new_message: bool,
    now: _dt.datetime | None = None,
) -> AuthResult:
    """Check one request's signature; raise :class:`ApiError` exactly as Alternator would."""
    lower: dict[str, list[str]] = {}
    for name, value in headers:
        lower.setdefault(name.lower(), []).append(value)

    auth = lower.get("authorization")
    if not auth:
        raise _bad(
            "MissingAuthenticationTokenException",
            "Authorization header is mandatory for signature verification",
        )
    host = lower.get("host")
    if not host:
        raise _bad(
            "InvalidSignatureException", "Host header is mandatory for signature verification"
        )
    authorization = auth[0].strip()
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise _bad(
            "InvalidSignatureException",
            f"Authorization header must use AWS4-HMAC-SHA256 algorithm: {authorization}",
        )
    fields = _parse_authorization(rest)
    credential = fields.get("Credential", "")
    signed_headers = fields.get("SignedHeaders", "")
    signature = fields.get("Signature", "")
    parts = credential.split("/")
    if len(parts) != 5:
        raise _bad("ValidationException", f"Incorrect credential information format: {credential}")
    user, datestamp, region, service, _terminator = parts

    # The unknown-user lookup happens before the date checks.
    secret = users.get(user)
    if secret is None:
        raise _bad("UnrecognizedClientException", f"User not found: {user}")

    signed_names = [n.strip().lower() for n in signed_headers.split(";") if n.strip()]
    if "x-amz-date" not in signed_names:
        raise _bad(
            "InvalidSignatureException",
            "invalid signature: X-Amz-Date header is mandatory for signature verification",
        )
    amz_date = (lower.get("x-amz-date") or [""])[0].strip()
    current = now or _dt.datetime.now(_dt.timezone.utc)
    try:
        when = _dt.datetime.strptime(amz_date, _FMT).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise _bad(
            "InvalidSignatureException", f"invalid signature: Invalid X-Amz-Date: {amz_date}"
        ) from None
    if when < current - _WINDOW:
        raise _bad(
            "InvalidSignatureException",
            f"invalid signature: Signature expired: {amz_date} is now earlier than "
            f"{(current - _WINDOW).strftime(_FMT)} (current time - 15 min.)",
        )
    if when > current + _WINDOW:
        raise _bad(
            "InvalidSignatureException",
            f"invalid signature: Signature not yet current: {amz_date} is still later than "
            f"{(current + _WINDOW).strftime(_FMT)} (current time + 15 min.)",
        )
    if amz_date[:8] != datestamp:
        raise _bad(
            "InvalidSignatureException",
            f"invalid signature: X-Amz-Date date does not match the provided datestamp: "
            f"{amz_date[:8]} != {datestamp}",
        )

    signed: list[tuple[str, str]] = []
    for name in signed_names:
        for value in lower.get(name, [""]):
            signed.append((name, value))
    request = AWSRequest(method="POST", url="http://alternator/", data=body)
    request.context["timestamp"] = amz_date
    request.context["alternator_signed"] = signed
    signer = _SignedHeadersOnly(Credentials(user, secret), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        message = (
            "wrong signature"
            if new_message
            else "The security token included in the request is invalid."
        )
        raise _bad("UnrecognizedClientException", message)
    return AuthResult(user=user, signed_host=host[0])


def signed_host_of(headers: Sequence[tuple[str, str]]) -> str | None:
    """The Host value a request signed, for the log even when auth is not enforced."""
    auth = next((v for n, v in headers if n.lower() == "authorization"), None)
    if auth is None:
        return None
    names = _parse_authorization(auth.partition(" ")[2]).get("SignedHeaders", "")
    if "host" not in [n.strip().lower() for n in names.split(";")]:
        return None
    return next((v for n, v in headers if n.lower() == "host"), None)
