"""Callback signature recipes per provider, and `build_callback` that signs a callback like them."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from models.common import iso_utc

WIB = timezone(timedelta(hours=7), "WIB")

# Header names (lower case, as models.inputs.Callback keeps them).
XENDIT_TOKEN = "x-callback-token"
XENDIT_SIGNATURE = "x-callback-signature"
XENDIT_TIMESTAMP = "x-callback-timestamp"
DOKU_CLIENT_ID = "client-id"
DOKU_REQUEST_ID = "request-id"
DOKU_TIMESTAMP = "request-timestamp"
DOKU_TARGET = "request-target"
DOKU_SIGNATURE = "signature"
SNAP_TIMESTAMP = "x-timestamp"
SNAP_SIGNATURE = "x-signature"
SNAP_PARTNER_ID = "x-partner-id"
SNAP_EXTERNAL_ID = "x-external-id"
SNAP_METHOD = "x-http-method"  # how the receiver records the request line it saw
SNAP_PATH = "x-request-path"
SNAP_ACCESS_TOKEN = "authorization"
GENERIC_SIGNATURE = "x-pantau-signature"
GENERIC_TIMESTAMP = "x-pantau-timestamp"

DEFAULT_DOKU_TARGET = "/payments/notifications/doku"
DEFAULT_SNAP_PATH = "/v1.0/transfer-va/payment"


def _text(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


# ---- midtrans ---------------------------------------------------------------------------------


def midtrans_signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    """signature_key = lowercase hex SHA512(order_id + status_code + gross_amount + server key)."""
    data = f"{order_id}{status_code}{gross_amount}{server_key}"
    return hashlib.sha512(data.encode("utf-8")).hexdigest()


def midtrans_field(value: Any) -> str:
    """A signed field as text, the same whichever side reads it: strings as sent (Midtrans sends
    strings), numbers by their decimal value, anything else (absent, null, objects) as ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int | float | Decimal):
        return str(Decimal(str(value)))
    return ""


def midtrans_body_signature(body: dict[str, Any], server_key: str) -> str:
    """The signature_key a Midtrans notification body should carry."""
    return midtrans_signature(
        midtrans_field(body.get("order_id")),
        midtrans_field(body.get("status_code")),
        midtrans_field(body.get("gross_amount")),
        server_key,
    )


# ---- xendit -----------------------------------------------------------------------------------


def xendit_signature(secret: str, timestamp: str, body: str | bytes) -> str:
    """X-Callback-Signature: lowercase hex HMAC-SHA256(secret, timestamp + "." + raw body)."""
    message = _text(timestamp) + b"." + _text(body)
    return hmac.new(_text(secret), message, hashlib.sha256).hexdigest()


# ---- doku (non-SNAP) --------------------------------------------------------------------------


def doku_digest(body: str | bytes) -> str:
    """Digest component: base64(SHA256(raw body))."""
    return base64.b64encode(hashlib.sha256(_text(body)).digest()).decode("ascii")


def doku_string_to_sign(
    client_id: str, request_id: str, timestamp: str, target: str, body: str | bytes | None
) -> str:
    """The lines DOKU signs, joined by newlines (no Digest line without a body)."""
    lines = [
        f"Client-Id:{client_id}",
        f"Request-Id:{request_id}",
        f"Request-Timestamp:{timestamp}",
        f"Request-Target:{target}",
    ]
    if body is not None and len(body) > 0:
        lines.append(f"Digest:{doku_digest(body)}")
    return "\n".join(lines)


def doku_signature(
    secret: str,
    client_id: str,
    request_id: str,
    timestamp: str,
    target: str,
    body: str | bytes | None,
) -> str:
    """Signature header: "HMACSHA256=" + base64(HMAC-SHA256(secret key, string to sign))."""
    text = doku_string_to_sign(client_id, request_id, timestamp, target, body)
    mac = hmac.new(_text(secret), text.encode("utf-8"), hashlib.sha256).digest()
    return "HMACSHA256=" + base64.b64encode(mac).decode("ascii")


# ---- Bank Indonesia SNAP ----------------------------------------------------------------------


# What minify keeps: a JSON string (escapes kept; an unterminated one runs to the end), or a
# run of anything but whitespace and quotes; the whitespace between them is what it drops.
_KEPT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[^" \t\r\n]+', re.DOTALL)


def snap_minify(body: str | bytes) -> str:
    """The body minified as SNAP asks: whitespace outside strings removed, nothing else changed
    (field order, number spelling and escapes are kept as sent)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if " " not in text and "\t" not in text and "\r" not in text and "\n" not in text:
        return text  # already minified (as providers send it)
    return "".join(_KEPT.findall(text))


def snap_body_hash(body: str | bytes) -> str:
    """lowercase(hex(SHA256(minify(body))))."""
    return hashlib.sha256(snap_minify(body).encode("utf-8")).hexdigest()


def snap_string_to_sign(
    method: str, path: str, body: str | bytes, timestamp: str, access_token: str | None = None
) -> str:
    """METHOD:Path[:AccessToken]:lowercase(hex(SHA256(minified body))):TimeStamp."""
    parts = [method.upper(), path]
    if access_token:
        parts.append(access_token)
    parts += [snap_body_hash(body), timestamp]
    return ":".join(parts)


def snap_symmetric_signature(
    secret: str,
    method: str,
    path: str,
    body: str | bytes,
    timestamp: str,
    access_token: str | None = None,
) -> str:
    """X-SIGNATURE (symmetric): base64(HMAC_SHA512(client secret, string to sign))."""
    text = snap_string_to_sign(method, path, body, timestamp, access_token)
    mac = hmac.new(_text(secret), text.encode("utf-8"), hashlib.sha512).digest()
    return base64.b64encode(mac).decode("ascii")


def load_private_key(pem: str | bytes | rsa.RSAPrivateKey) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM text (or the key itself)."""
    if isinstance(pem, rsa.RSAPrivateKey):
        return pem
    key = serialization.load_pem_private_key(_text(pem), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("SNAP asymmetric signatures need an RSA private key")
    return key


@functools.lru_cache(maxsize=64)
def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """An RSA public key from PEM text (SubjectPublicKeyInfo, or a bare base64 body); cached,
    since the same few provider keys verify every callback."""
    text = _text(pem).strip()
    if not text.startswith(b"-----BEGIN"):
        text = b"-----BEGIN PUBLIC KEY-----\n" + text + b"\n-----END PUBLIC KEY-----\n"
    key = serialization.load_pem_public_key(text)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("SNAP asymmetric signatures need an RSA public key")
    return key


def snap_asymmetric_signature(
    private_key: str | bytes | rsa.RSAPrivateKey,
    method: str,
    path: str,
    body: str | bytes,
    timestamp: str,
) -> str:
    """X-SIGNATURE (asymmetric): base64(SHA256withRSA(private key, METHOD:Path:hash:TimeStamp))."""
    text = snap_string_to_sign(method, path, body, timestamp)
    signed = load_private_key(private_key).sign(
        text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
    )
    return base64.b64encode(signed).decode("ascii")


def snap_asymmetric_valid(
    public_key: str | bytes,
    signature: str,
    method: str,
    path: str,
    body: str | bytes,
    timestamp: str,
) -> bool:
    """True when signature is the provider's SHA256withRSA signature of this request."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key = load_public_key(public_key)
    except ValueError:
        return False
    text = snap_string_to_sign(method, path, body, timestamp)
    try:
        key.verify(raw, text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def public_pem(private_key: str | bytes | rsa.RSAPrivateKey) -> str:
    """The PEM public key that verifies a private key's signatures (what settings hold)."""
    key = load_private_key(private_key).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def snap_timestamp(at: datetime) -> str:
    """SNAP's X-TIMESTAMP: ISO-8601 in WIB with the offset, e.g. 2026-11-21T10:00:07+07:00."""
    return at.astimezone(WIB).replace(microsecond=0).isoformat()


# ---- generic ----------------------------------------------------------------------------------


def generic_signature(secret: str, timestamp: str, body: str | bytes) -> str:
    """x-pantau-signature: "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + raw body))."""
    message = _text(timestamp) + b"." + _text(body)
    return "sha256=" + hmac.new(_text(secret), message, hashlib.sha256).hexdigest()


# ---- build_callback ---------------------------------------------------------------------------


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)


def _utc_z(at: datetime) -> str:
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_callback(
    provider: str,
    body: dict[str, Any],
    secret: str,
    *,
    callback_id: str,
    received_at: datetime,
    source_ip: str,
    **options: Any,
) -> dict[str, Any]:
    """A Callback JSON value (models.inputs.Callback) signed the way `provider` signs it.

    Common options: `signed_at` (datetime, default received_at: the time the provider signs),
    `headers` (extra headers). Per provider:
    - midtrans: body needs order_id, status_code, gross_amount; signature_key is added to it.
    - xendit: `variant="token"` (default: x-callback-token = secret) or `variant="hmac"`
      (X-Callback-Signature + X-Callback-Timestamp).
    - doku: `client_id`, `request_id` (default callback_id), `request_target` (default
      /payments/notifications/doku; sent in a Request-Target header when `send_target` is true).
    - snap: `method` (POST), `path` (/v1.0/transfer-va/payment), `partner_id`, `external_id`,
      `access_token` (symmetric only); `private_key` (PEM or key) switches to asymmetric RSA,
      and then `secret` is ignored.
    - generic: x-pantau-signature + x-pantau-timestamp.
    """
    signed_at: datetime = options.get("signed_at") or received_at
    headers: dict[str, str] = {"content-type": "application/json"}
    body = dict(body)
    if provider == "midtrans":
        body["signature_key"] = midtrans_body_signature(body, secret)
        text = _dumps(body)
    elif provider == "xendit":
        text = _dumps(body)
        if options.get("variant", "token") == "hmac":
            stamp = str(int(signed_at.timestamp()))
            headers[XENDIT_TIMESTAMP] = stamp
            headers[XENDIT_SIGNATURE] = xendit_signature(secret, stamp, text)
        else:
            headers[XENDIT_TOKEN] = secret
    elif provider == "doku":
        text = _dumps(body)
        client_id = str(options.get("client_id", "MCH-0001-PANTAU"))
        request_id = str(options.get("request_id", callback_id))
        target = str(options.get("request_target", DEFAULT_DOKU_TARGET))
        stamp = _utc_z(signed_at)
        headers[DOKU_CLIENT_ID] = client_id
        headers[DOKU_REQUEST_ID] = request_id
        headers[DOKU_TIMESTAMP] = stamp
        if options.get("send_target", True):
            headers[DOKU_TARGET] = target
        headers[DOKU_SIGNATURE] = doku_signature(secret, client_id, request_id, stamp, target, text)
    elif provider == "snap":
        text = _dumps(body)
        method = str(options.get("method", "POST")).upper()
        path = str(options.get("path", DEFAULT_SNAP_PATH))
        stamp = snap_timestamp(signed_at)
        headers[SNAP_TIMESTAMP] = stamp
        headers[SNAP_PARTNER_ID] = str(options.get("partner_id", "PANTAU-PARTNER"))
        headers[SNAP_EXTERNAL_ID] = str(options.get("external_id", callback_id))
        headers[SNAP_METHOD] = method
        headers[SNAP_PATH] = path
        private_key = options.get("private_key")
        if private_key is not None:
            headers[SNAP_SIGNATURE] = snap_asymmetric_signature(
                private_key, method, path, text, stamp
            )
        else:
            token = options.get("access_token")
            if token:
                headers[SNAP_ACCESS_TOKEN] = f"Bearer {token}"
            headers[SNAP_SIGNATURE] = snap_symmetric_signature(
                secret, method, path, text, stamp, str(token) if token else None
            )
    elif provider == "generic":
        text = _dumps(body)
        stamp = _utc_z(signed_at)
        headers[GENERIC_TIMESTAMP] = stamp
        headers[GENERIC_SIGNATURE] = generic_signature(secret, stamp, text)
    else:
        raise ValueError(f"unknown callback provider {provider!r}")
    for name, value in (options.get("headers") or {}).items():
        headers[str(name).lower()] = str(value)
    return {
        "callback_id": callback_id,
        "provider": provider,
        "received_at": iso_utc(received_at),
        "source_ip": source_ip,
        "headers": headers,
        "body": text,
    }
