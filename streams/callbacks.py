"""Callback parsers per provider and their verification: a fact, or why it is untrusted."""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, NamedTuple

import orjson
from pydantic import SecretStr

from models.common import iso_utc
from models.inputs import Callback
from models.pan import mask_pans
from streams import signatures as sig

WIB = sig.WIB
SOURCES_REMEMBERED = 4096  # source addresses whose allowlist verdict is kept


class FactStatus(StrEnum):
    """A provider's status, normalized."""

    SETTLED = "settled"
    PENDING = "pending"
    FAILED = "failed"
    REFUNDED = "refunded"


FINAL_STATUSES = frozenset({FactStatus.SETTLED, FactStatus.FAILED, FactStatus.REFUNDED})


class Reason(StrEnum):
    """Why a callback is not trusted or not usable (bounded: these are metric label values)."""

    SOURCE_NOT_ALLOWED = "source_not_allowed"
    NO_SECRET = "no_secret_configured"
    MISSING_SIGNATURE = "missing_signature"
    SIGNATURE_MISMATCH = "signature_mismatch"
    MISSING_TIMESTAMP = "missing_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    STALE_TIMESTAMP = "timestamp_outside_tolerance"
    BODY_NOT_JSON = "body_not_json"
    MISSING_REFERENCE = "missing_reference"
    UNKNOWN_STATUS = "unknown_status"


@dataclass(frozen=True, slots=True)
class CallbackFact:
    """A trusted callback, normalized: which transaction, what happened, when, how much."""

    provider: str
    callback_id: str
    transaction_id: str
    status: FactStatus
    provider_status: str
    amount: Decimal | None
    settled_at: datetime
    received_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The fact as it travels on pantau.settlement (card-like runs masked)."""
        return {
            "kind": "callback",
            "provider": self.provider,
            "callback_id": mask_pans(self.callback_id),
            "transaction_id": mask_pans(self.transaction_id),
            "status": self.status.value,
            "provider_status": mask_pans(self.provider_status),
            "amount": None if self.amount is None else format(self.amount, "f"),
            "settled_at": iso_utc(self.settled_at),
            "received_at": iso_utc(self.received_at),
        }


class Untrusted(Exception):
    """A callback that must not change state, with its reason."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason.value + (f": {detail}" if detail else ""))
        self.reason = reason
        self.detail = detail


# ---- small readers -----------------------------------------------------------------------------


def load_body(text: str) -> dict[str, Any]:
    """The body as JSON with exact decimals; raises Untrusted when it is not a JSON object.

    orjson reads it when it can give the same value: no float in it (the stdlib's parse_float
    makes those Decimal) and nothing orjson refuses that the stdlib takes (NaN, integers beyond
    64 bits, lone surrogates); otherwise the stdlib reads it."""
    try:
        value = orjson.loads(text)
        exact = not _has_float(value)
    except (orjson.JSONDecodeError, RecursionError):
        exact = False
    if not exact:
        try:
            value = json.loads(text, parse_float=Decimal)
        except (ValueError, RecursionError):
            raise Untrusted(Reason.BODY_NOT_JSON) from None
    if not isinstance(value, dict):
        raise Untrusted(Reason.BODY_NOT_JSON, f"a JSON {type(value).__name__}, not an object")
    return value


def _has_float(value: Any) -> bool:
    """Whether a parsed JSON value holds a float anywhere."""
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


def _get(data: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _first_str(data: Mapping[str, Any], *paths: tuple[str, ...]) -> str | None:
    for path in paths:
        value = _get(data, *path)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, str | int | Decimal):
            text = str(value).strip()
            if text:
                return text[:200]
    return None


def parse_amount(value: Any) -> Decimal | None:
    """A decimal amount from a string or number; None when absent or not a finite number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, dict):
        return parse_amount(value.get("value"))
    if not isinstance(value, str | int | Decimal | float):
        return None
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or abs(amount) > Decimal("1e15"):
        return None
    return amount


def parse_time(value: Any, naive_zone: Any = WIB) -> datetime | None:
    """An aware UTC time from ISO-8601 text, "YYYY-MM-DD HH:MM:SS" (zone naive_zone) or epoch."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | Decimal) or (isinstance(value, str) and value.isdigit()):
            number = Decimal(str(value))
            if number > Decimal("1e11"):  # milliseconds
                number = number / 1000
            return datetime.fromtimestamp(float(number), UTC)
        if not isinstance(value, str) or len(value) > 64:
            return None
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError, InvalidOperation):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=naive_zone)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# ---- status maps (each provider's documented values) -------------------------------------------

MIDTRANS_STATUS = {
    "settlement": FactStatus.SETTLED,
    "capture": FactStatus.SETTLED,  # card captured; "challenge" fraud status keeps it pending
    "pending": FactStatus.PENDING,
    "authorize": FactStatus.PENDING,
    "deny": FactStatus.FAILED,
    "cancel": FactStatus.FAILED,
    "expire": FactStatus.FAILED,
    "failure": FactStatus.FAILED,
    "refund": FactStatus.REFUNDED,
    "partial_refund": FactStatus.REFUNDED,
    "chargeback": FactStatus.REFUNDED,
    "partial_chargeback": FactStatus.REFUNDED,
}
XENDIT_STATUS = {
    "PAID": FactStatus.SETTLED,
    "SETTLED": FactStatus.SETTLED,
    "SUCCEEDED": FactStatus.SETTLED,
    "COMPLETED": FactStatus.SETTLED,
    "CAPTURED": FactStatus.SETTLED,
    "PENDING": FactStatus.PENDING,
    "ACTIVE": FactStatus.PENDING,
    "EXPIRED": FactStatus.FAILED,
    "FAILED": FactStatus.FAILED,
    "VOIDED": FactStatus.FAILED,
    "CANCELED": FactStatus.FAILED,
    "CANCELLED": FactStatus.FAILED,
    "REFUNDED": FactStatus.REFUNDED,
}
DOKU_STATUS = {
    "SUCCESS": FactStatus.SETTLED,
    "PENDING": FactStatus.PENDING,
    "FAILED": FactStatus.FAILED,
    "EXPIRED": FactStatus.FAILED,
    "REFUNDED": FactStatus.REFUNDED,
}
# SNAP latestTransactionStatus codes (00 success … 06 failed) and paymentFlagStatus.
SNAP_STATUS = {
    "00": FactStatus.SETTLED,
    "01": FactStatus.PENDING,
    "02": FactStatus.PENDING,
    "03": FactStatus.PENDING,
    "04": FactStatus.REFUNDED,
    "05": FactStatus.FAILED,
    "06": FactStatus.FAILED,
    "SUCCESS": FactStatus.SETTLED,
    "PENDING": FactStatus.PENDING,
    "FAILED": FactStatus.FAILED,
}
GENERIC_STATUS = {
    "settled": FactStatus.SETTLED,
    "success": FactStatus.SETTLED,
    "pending": FactStatus.PENDING,
    "failed": FactStatus.FAILED,
    "expired": FactStatus.FAILED,
    "refunded": FactStatus.REFUNDED,
}


class _Parsed(NamedTuple):
    reference: str | None
    provider_status: str | None
    status: FactStatus | None
    amount: Decimal | None
    settled_at: datetime | None


def _status(table: Mapping[str, FactStatus], raw: str | None, upper: bool) -> FactStatus | None:
    if raw is None:
        return None
    return table.get(raw.upper() if upper else raw.lower())


def parse_midtrans(body: dict[str, Any]) -> _Parsed:
    """Midtrans HTTP notification: order_id, transaction_status, gross_amount, settlement_time."""
    raw = _first_str(body, ("transaction_status",))
    status = _status(MIDTRANS_STATUS, raw, upper=False)
    if raw == "capture" and str(body.get("fraud_status", "accept")).lower() == "challenge":
        status = FactStatus.PENDING
    when = parse_time(body.get("settlement_time"))  # transaction_time is the creation time
    return _Parsed(
        _first_str(body, ("order_id",)), raw, status, parse_amount(body.get("gross_amount")), when
    )


def parse_xendit(body: dict[str, Any]) -> _Parsed:
    """Xendit invoice (external_id, status, paid_amount, paid_at), fixed-VA paid (external_id,
    amount, transaction_timestamp, no status: a payment) and e-wallet ({event, data: {reference_id,
    status, capture_amount}}) callbacks."""
    data = body.get("data") if isinstance(body.get("data"), dict) else body
    assert isinstance(data, dict)
    raw = _first_str(data, ("status",))
    if raw is None and _first_str(data, ("payment_id",)) is not None:
        raw = "PAID"  # a fixed virtual account "paid" callback carries no status
    amount = None
    for key in ("paid_amount", "capture_amount", "amount", "charge_amount"):
        amount = parse_amount(data.get(key))
        if amount is not None:
            break
    when = (
        parse_time(data.get("paid_at"), UTC)
        or parse_time(data.get("transaction_timestamp"), UTC)
        or parse_time(data.get("updated"), UTC)
    )
    return _Parsed(
        _first_str(data, ("external_id",), ("reference_id",)),
        raw,
        _status(XENDIT_STATUS, raw, upper=True),
        amount,
        when,
    )


def parse_doku(body: dict[str, Any]) -> _Parsed:
    """DOKU non-SNAP notification: order.invoice_number, order.amount, transaction.status/date."""
    raw = _first_str(body, ("transaction", "status"))
    return _Parsed(
        _first_str(body, ("order", "invoice_number")),
        raw,
        _status(DOKU_STATUS, raw, upper=True),
        parse_amount(_get(body, "order", "amount")),
        parse_time(_get(body, "transaction", "date"), UTC),
    )


def parse_snap(body: dict[str, Any]) -> _Parsed:
    """SNAP payment notification: trxId / partnerReferenceNo, paidAmount.value, trxDateTime,
    latestTransactionStatus (a VA payment notification without one is a payment)."""
    raw = _first_str(body, ("latestTransactionStatus",), ("paymentFlagStatus",))
    if raw is None and _get(body, "paidAmount") is not None:
        raw = "00"
    amount = parse_amount(body.get("paidAmount")) or parse_amount(body.get("amount"))
    when = parse_time(body.get("trxDateTime")) or parse_time(body.get("finishedTime"))
    return _Parsed(
        _first_str(body, ("trxId",), ("originalPartnerReferenceNo",), ("partnerReferenceNo",)),
        raw,
        _status(SNAP_STATUS, raw, upper=True),
        amount,
        when,
    )


def parse_generic(body: dict[str, Any]) -> _Parsed:
    """Pantau's normalized body: transaction_id, status, amount, settled_at (or occurred_at)."""
    raw = _first_str(body, ("status",))
    return _Parsed(
        _first_str(body, ("transaction_id",), ("reference",)),
        raw,
        _status(GENERIC_STATUS, raw, upper=False),
        parse_amount(body.get("amount")),
        parse_time(body.get("settled_at"), UTC)
        or parse_time(body.get("occurred_at"), UTC)
        or parse_time(body.get("at"), UTC),
    )


PARSERS: dict[str, Callable[[dict[str, Any]], _Parsed]] = {
    "midtrans": parse_midtrans,
    "xendit": parse_xendit,
    "doku": parse_doku,
    "snap": parse_snap,
    "generic": parse_generic,
}


def merchant_hint(provider: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """Who the callback claims to be for, to pick merchant-specific secrets (never trusted)."""
    found = _first_str(body, ("merchant_id",))
    if found:
        return found
    if provider == "doku":
        return headers.get(sig.DOKU_CLIENT_ID) or None
    if provider == "snap":
        return headers.get(sig.SNAP_PARTNER_ID) or None
    if provider == "xendit":
        return _first_str(body, ("business_id",), ("owner_id",), ("user_id",))
    return None


# ---- verification ------------------------------------------------------------------------------


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _is_public_key(secret: str) -> bool:
    return "PUBLIC KEY" in secret[:64]


@dataclass
class CallbackVerifier:
    """Verifies callbacks: source address, signature (any valid secret: rotation), timestamp.

    `secrets_for(provider, merchant_id)` gives the valid secrets, merchant-specific first;
    `allowlists` maps provider → CIDRs (absent or empty: any address).
    """

    secrets_for: Callable[[str, str | None], Sequence[SecretStr]]
    allowlists: Mapping[str, Sequence[str]]
    tolerance: timedelta = timedelta(seconds=300)

    def __post_init__(self) -> None:
        self._networks = {
            provider: [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
            for provider, cidrs in self.allowlists.items()
            if cidrs
        }
        # (provider, source address as sent) → (allowed, the address as parsed): a provider
        # calls from a few addresses, so parsing and matching each callback's was wasted work.
        self._sources: dict[tuple[str, str], tuple[bool, str]] = {}

    def _allowed(self, provider: str, source_ip: str) -> tuple[bool, str]:
        key = (provider, source_ip)
        found = self._sources.get(key)
        if found is None:
            address = ipaddress.ip_address(source_ip)
            networks = self._networks[provider]
            found = (any(address in net for net in networks), str(address))
            if len(self._sources) >= SOURCES_REMEMBERED:
                self._sources.clear()  # forged traffic from many addresses: start over
            self._sources[key] = found
        return found

    def check(self, callback: Callback) -> CallbackFact:
        """The callback's fact when trusted; raises Untrusted with the reason otherwise."""
        provider = callback.provider.value
        if provider in self._networks:
            allowed, address = self._allowed(provider, callback.source_ip)
            if not allowed:
                raise Untrusted(Reason.SOURCE_NOT_ALLOWED, f"{provider} from {address}")
        body = load_body(callback.body)
        secrets = [
            s.get_secret_value()
            for s in self.secrets_for(provider, merchant_hint(provider, callback.headers, body))
        ]
        secrets = [s for s in secrets if s]
        if not secrets:
            raise Untrusted(Reason.NO_SECRET, provider)
        signed_at = VERIFIERS[provider](callback, body, secrets)
        if signed_at is not None:
            skew = abs(callback.received_at - signed_at)
            if skew > self.tolerance:
                raise Untrusted(
                    Reason.STALE_TIMESTAMP,
                    f"signed {int(skew.total_seconds())} s from its arrival "
                    f"(tolerance {int(self.tolerance.total_seconds())} s)",
                )
        return to_fact(callback, body)


def to_fact(callback: Callback, body: dict[str, Any]) -> CallbackFact:
    """Normalize a verified callback's body; raises Untrusted when it names no transaction."""
    parsed = PARSERS[callback.provider.value](body)
    if not parsed.reference:
        raise Untrusted(Reason.MISSING_REFERENCE)
    if parsed.status is None:
        raise Untrusted(Reason.UNKNOWN_STATUS, mask_pans(str(parsed.provider_status))[:40])
    settled_at = parsed.settled_at or callback.received_at
    return CallbackFact(
        provider=callback.provider.value,
        callback_id=callback.callback_id,
        transaction_id=parsed.reference,
        status=parsed.status,
        provider_status=parsed.provider_status or "",
        amount=parsed.amount,
        settled_at=settled_at,
        received_at=callback.received_at,
    )


def _header(callback: Callback, name: str, missing: Reason = Reason.MISSING_SIGNATURE) -> str:
    value = callback.headers.get(name)
    if not value:
        raise Untrusted(missing, name)
    return value


def _signed_time(text: str, naive_zone: Any = UTC) -> datetime:
    when = parse_time(text, naive_zone)
    if when is None:
        raise Untrusted(Reason.BAD_TIMESTAMP, text[:40])
    return when


def verify_midtrans(
    callback: Callback, body: dict[str, Any], secrets: list[str]
) -> datetime | None:
    """signature_key in the body; Midtrans signs no timestamp (duplicates are dropped instead)."""
    given = body.get("signature_key")
    if not isinstance(given, str) or not given:
        raise Untrusted(Reason.MISSING_SIGNATURE, "signature_key")
    for secret in secrets:
        if _same(sig.midtrans_body_signature(body, secret), given.lower()):
            return None
    raise Untrusted(Reason.SIGNATURE_MISMATCH)


def verify_xendit(callback: Callback, body: dict[str, Any], secrets: list[str]) -> datetime | None:
    """x-callback-token equal to a verification token, or the HMAC signature with its timestamp."""
    signature = callback.headers.get(sig.XENDIT_SIGNATURE)
    if signature:
        stamp = _header(callback, sig.XENDIT_TIMESTAMP, Reason.MISSING_TIMESTAMP)
        for secret in secrets:
            if _same(sig.xendit_signature(secret, stamp, callback.body), signature.lower()):
                return _signed_time(stamp)
        raise Untrusted(Reason.SIGNATURE_MISMATCH)
    token = callback.headers.get(sig.XENDIT_TOKEN)
    if not token:
        raise Untrusted(Reason.MISSING_SIGNATURE, sig.XENDIT_TOKEN)
    for secret in secrets:
        if _same(secret, token):
            return None
    raise Untrusted(Reason.SIGNATURE_MISMATCH)


def verify_doku(callback: Callback, body: dict[str, Any], secrets: list[str]) -> datetime | None:
    """Signature: HMACSHA256=… over Client-Id, Request-Id, Request-Timestamp, Request-Target,
    Digest. The target is the merchant's notification path (a header when the receiver records it,
    else the default)."""
    given = _header(callback, sig.DOKU_SIGNATURE)
    client_id = callback.headers.get(sig.DOKU_CLIENT_ID, "")
    request_id = callback.headers.get(sig.DOKU_REQUEST_ID, "")
    stamp = _header(callback, sig.DOKU_TIMESTAMP, Reason.MISSING_TIMESTAMP)
    target = callback.headers.get(sig.DOKU_TARGET) or sig.DEFAULT_DOKU_TARGET
    for secret in secrets:
        expected = sig.doku_signature(secret, client_id, request_id, stamp, target, callback.body)
        if _same(expected, given):
            return _signed_time(stamp)
    raise Untrusted(Reason.SIGNATURE_MISMATCH)


def verify_snap(callback: Callback, body: dict[str, Any], secrets: list[str]) -> datetime | None:
    """X-SIGNATURE: HMAC_SHA512 with a client secret, or SHA256withRSA with the provider's public
    key (a secret holding a PEM public key); X-TIMESTAMP is signed."""
    given = _header(callback, sig.SNAP_SIGNATURE)
    stamp = _header(callback, sig.SNAP_TIMESTAMP, Reason.MISSING_TIMESTAMP)
    method = callback.headers.get(sig.SNAP_METHOD, "POST")
    path = callback.headers.get(sig.SNAP_PATH) or sig.DEFAULT_SNAP_PATH
    auth = callback.headers.get(sig.SNAP_ACCESS_TOKEN, "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    for secret in secrets:
        if _is_public_key(secret):
            if sig.snap_asymmetric_valid(secret, given, method, path, callback.body, stamp):
                return _signed_time(stamp, WIB)
        else:
            expected = sig.snap_symmetric_signature(
                secret, method, path, callback.body, stamp, token
            )
            if _same(expected, given):
                return _signed_time(stamp, WIB)
    raise Untrusted(Reason.SIGNATURE_MISMATCH)


def verify_generic(callback: Callback, body: dict[str, Any], secrets: list[str]) -> datetime | None:
    """x-pantau-signature: sha256=hex(HMAC-SHA256(secret, timestamp + "." + body))."""
    given = _header(callback, sig.GENERIC_SIGNATURE)
    stamp = _header(callback, sig.GENERIC_TIMESTAMP, Reason.MISSING_TIMESTAMP)
    for secret in secrets:
        if _same(sig.generic_signature(secret, stamp, callback.body), given.lower()):
            return _signed_time(stamp)
    raise Untrusted(Reason.SIGNATURE_MISMATCH)


VERIFIERS: dict[str, Callable[[Callback, dict[str, Any], list[str]], datetime | None]] = {
    "midtrans": verify_midtrans,
    "xendit": verify_xendit,
    "doku": verify_doku,
    "snap": verify_snap,
    "generic": verify_generic,
}
