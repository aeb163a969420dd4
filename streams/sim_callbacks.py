"""Provider callback bodies as the simulator sends them, its secrets and its source addresses."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from models.common import Method

# Outcomes a callback reports.
PAID = "paid"
FAILED = "failed"
EXPIRED = "expired"

# The simulator's callback secrets (test values, not real keys): configure a replay or worker with
# `sim_settings_overrides()` so it verifies the simulator's callbacks.
SIM_SECRETS: dict[str, str] = {
    "midtrans": "SB-Mid-server-pantau-sim-midtrans-key",
    "xendit": "xnd-callback-token-pantau-sim",
    "doku": "SK-pantau-sim-doku-secret",
    "snap": "pantau-sim-snap-client-secret",
    "generic": "pantau-sim-generic-hmac-secret",
}
# Where each provider's callbacks come from in the simulation (documentation-style ranges chosen
# for the simulator; use the providers' published lists in production).
SIM_SOURCE_NETWORKS: dict[str, list[str]] = {
    "midtrans": ["103.208.23.0/24"],
    "xendit": ["18.141.95.0/28", "13.229.120.0/28"],
    "doku": ["103.10.129.0/24"],
    "snap": ["202.6.215.0/24"],
    "generic": ["103.28.52.0/24"],
}
SIM_SOURCE_IPS: dict[str, list[str]] = {
    "midtrans": ["103.208.23.6", "103.208.23.17", "103.208.23.102"],
    "xendit": ["18.141.95.9", "13.229.120.4"],
    "doku": ["103.10.129.16", "103.10.129.40"],
    "snap": ["202.6.215.71", "202.6.215.72"],
    "generic": ["103.28.52.11"],
}
# Addresses forged callbacks come from (outside every allowlist above).
FORGED_SOURCE_IPS = ("45.77.36.12", "185.220.101.7", "91.219.237.44", "5.188.62.140")
FORGED_SECRET = "leaked-or-guessed-secret"

# Notification paths the providers call (carried in the signed request line).
DOKU_TARGET = "/payments/notifications/doku"
SNAP_VA_PATH = "/v1.0/transfer-va/payment"
SNAP_NOTIFY_PATH = "/v1.0/debit/notify"
# Providers whose signature covers a timestamp (a replayed old callback is stale for them).
TIMESTAMPED = frozenset({"doku", "snap", "generic", "xendit"})


def sim_settings_overrides() -> dict[str, Any]:
    """`Settings(**sim_settings_overrides())` verifies every genuine simulated callback."""
    return {
        "callback_secrets": {provider: [secret] for provider, secret in SIM_SECRETS.items()},
        "callback_allowlists": {p: list(nets) for p, nets in SIM_SOURCE_NETWORKS.items()},
    }


_LETTERS = "abcdef"


def ref(rng: random.Random, length: int = 24) -> str:
    """A provider-style hex reference that never holds a long digit run (every 8th is a letter),
    so no reference can ever look like a card number."""
    h = format(rng.getrandbits(4 * length), f"0{length}x")
    return "".join([h[i : i + 7] + _LETTERS[ord(h[i + 7]) % 6] for i in range(0, length - 7, 8)])


def uuid_like(rng: random.Random) -> str:
    """An 8-4-4-4-12 id built from `ref` (no digit run can pass for a card number)."""
    r = ref(rng, 32)
    return f"{r[:8]}-{r[8:12]}-{r[12:16]}-{r[16:20]}-{r[20:]}"


_SECONDS: dict[int, tuple[str, str, str]] = {}


def _second(at: float) -> tuple[str, str, str]:
    """(WIB "Y-m-d H:M:S", WIB ISO with offset, UTC "Y-m-dTH:M:S") of a second, cached."""
    sec = int(at)
    hit = _SECONDS.get(sec)
    if hit is None:
        wib = time.gmtime(sec + 25200)
        hit = (
            time.strftime("%Y-%m-%d %H:%M:%S", wib),
            time.strftime("%Y-%m-%dT%H:%M:%S+07:00", wib),
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)),
        )
        if len(_SECONDS) > 8192:
            _SECONDS.clear()
        _SECONDS[sec] = hit
    return hit


def _wib(at: float) -> str:
    return _second(at)[0]


def _wib_iso(at: float) -> str:
    return _second(at)[1]


def _utc_iso(at: float) -> str:
    return f"{_second(at)[2]}.{int((at % 1) * 1000):03d}Z"


@dataclass(slots=True)
class Payment:
    """What a callback needs to know about the payment it reports."""

    transaction_id: str
    amount: int  # whole rupiah
    channel: str
    method: Method
    created_at: float  # epoch seconds
    card_bin: str | None = None
    card_last4: str | None = None
    va_number: str | None = None


_MIDTRANS_TYPES = {
    Method.EWALLET: None,  # the channel's own name (gopay, shopeepay)
    Method.QRIS: "qris",
    Method.CARD: "credit_card",
    Method.VIRTUAL_ACCOUNT: "bank_transfer",
    Method.CONVENIENCE_STORE: "cstore",
    Method.PAYLATER: "akulaku",
}


def _midtrans(p: Payment, outcome: str, at: float, rng: random.Random) -> dict[str, Any]:
    if outcome == PAID:
        status, code = ("capture" if p.method is Method.CARD else "settlement"), "200"
    elif outcome == FAILED:
        status, code = "deny", "202"
    else:
        status, code = "expire", "407"
    body: dict[str, Any] = {
        "transaction_time": _wib(p.created_at),
        "transaction_status": status,
        "transaction_id": uuid_like(rng),
        "status_message": "midtrans payment notification",
        "status_code": code,
    }
    if outcome == PAID:
        body["settlement_time"] = _wib(at)
    body["payment_type"] = _MIDTRANS_TYPES.get(p.method) or p.channel.lower()
    body["order_id"] = p.transaction_id
    body["merchant_id"] = "G141532850"
    body["gross_amount"] = f"{p.amount}.00"
    body["fraud_status"] = "deny" if outcome == FAILED else "accept"
    body["currency"] = "IDR"
    if p.method is Method.CARD and p.card_bin and p.card_last4:
        body["masked_card"] = f"{p.card_bin[:6]}-{p.card_last4}"
        body["card_type"] = "credit"
    return body


def _xendit(
    p: Payment, outcome: str, at: float, rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any]]:
    stamp = _utc_iso(at)
    if p.method is Method.EWALLET:
        data: dict[str, Any] = {
            "id": "ewc_" + uuid_like(rng),
            "business_id": ref(rng),
            "reference_id": p.transaction_id,
            "status": "SUCCEEDED" if outcome == PAID else "FAILED",
            "currency": "IDR",
            "charge_amount": p.amount,
            "capture_amount": p.amount if outcome == PAID else 0,
            "channel_code": f"ID_{p.channel}",
            "checkout_method": "ONE_TIME_PAYMENT",
            "created": _utc_iso(p.created_at),
            "updated": stamp,
        }
        if outcome != PAID:
            data["failure_code"] = "INSUFFICIENT_BALANCE"
        body = {"event": "ewallet.capture", "business_id": data["business_id"], "created": stamp,
                "data": data}  # fmt: skip
        return body, {"variant": "hmac"}
    if outcome == PAID and p.method is Method.VIRTUAL_ACCOUNT:
        return {
            "id": ref(rng),
            "payment_id": ref(rng),
            "callback_virtual_account_id": ref(rng),
            "owner_id": "5f3a9c2e7b1d4e6fa8c0b2d1",
            "external_id": p.transaction_id,
            "account_number": p.va_number or "886080000000",
            "bank_code": p.channel,
            "amount": p.amount,
            "transaction_timestamp": stamp,
            "merchant_code": "88608",
            "created": stamp,
            "updated": stamp,
        }, {}
    if outcome == PAID and p.method is Method.CONVENIENCE_STORE:
        return {
            "id": ref(rng),
            "external_id": p.transaction_id,
            "prefix": "PNTU",
            "payment_code": "PNTU" + ref(rng, 8).upper(),
            "retail_outlet_name": p.channel,
            "name": "PANTAU SIM",
            "amount": p.amount,
            "status": "COMPLETED",
            "transaction_timestamp": stamp,
            "payment_id": ref(rng),
            "fixed_payment_code_payment_id": ref(rng),
            "fixed_payment_code_id": ref(rng),
            "owner_id": "5f3a9c2e7b1d4e6fa8c0b2d1",
        }, {}
    # Invoices report what the other shapes do not: expiry (and card or failed payments).
    return {
        "id": ref(rng),
        "external_id": p.transaction_id,
        "user_id": "5f3a9c2e7b1d4e6fa8c0b2d1",
        "is_high": False,
        "status": {PAID: "PAID", FAILED: "FAILED", EXPIRED: "EXPIRED"}[outcome],
        "merchant_name": "Pantau Sim",
        "amount": p.amount,
        **({"paid_amount": p.amount, "paid_at": stamp} if outcome == PAID else {}),
        "payment_method": {
            Method.VIRTUAL_ACCOUNT: "BANK_TRANSFER",
            Method.CONVENIENCE_STORE: "RETAIL_OUTLET",
            Method.CARD: "CREDIT_CARD",
        }.get(p.method, "EWALLET"),
        "payment_channel": p.channel,
        "currency": "IDR",
        "created": _utc_iso(p.created_at),
        "updated": stamp,
    }, {}


_DOKU_SERVICE = {
    Method.VIRTUAL_ACCOUNT: ("VIRTUAL_ACCOUNT", "VIRTUAL_ACCOUNT_{}"),
    Method.EWALLET: ("EMONEY", "EMONEY_{}"),
    Method.CARD: ("CREDIT_CARD", "CREDIT_CARD"),
}


def _doku(p: Payment, outcome: str, at: float, rng: random.Random) -> dict[str, Any]:
    service, channel = _DOKU_SERVICE.get(p.method, ("PAYMENT", "{}"))
    body: dict[str, Any] = {
        "service": {"id": service},
        "acquirer": {"id": p.channel},
        "channel": {"id": channel.format(p.channel)},
        "order": {"invoice_number": p.transaction_id, "amount": p.amount},
        "transaction": {
            "status": {PAID: "SUCCESS", FAILED: "FAILED", EXPIRED: "EXPIRED"}[outcome],
            "date": _utc_iso(at),
            "original_request_id": ref(rng),
        },
    }
    if p.method is Method.VIRTUAL_ACCOUNT:
        body["virtual_account_info"] = {"virtual_account_number": p.va_number or "988000000000"}
    if p.method is Method.CARD and p.card_bin and p.card_last4:
        body["card_payment"] = {
            "masked_card_number": f"{p.card_bin[:6]}******{p.card_last4}",
            "approval_code": f"{rng.randrange(1_000_000):06d}",
            "response_code": "00" if outcome == PAID else "05",
        }
    return body


def _snap(
    p: Payment, outcome: str, at: float, rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any]]:
    amount = {"value": f"{p.amount}.00", "currency": "IDR"}
    if outcome == PAID and p.method is Method.VIRTUAL_ACCOUNT:
        va = p.va_number or "123450000000"
        service_id = va[:5].rjust(8)
        return {
            "partnerServiceId": service_id,
            "customerNo": va[5:],
            "virtualAccountNo": service_id + va[5:],
            "virtualAccountName": "PANTAU SIM",
            "trxId": p.transaction_id,
            "paymentRequestId": ref(rng),
            "paidAmount": amount,
            "totalAmount": amount,
            "trxDateTime": _wib_iso(at),
            "referenceNo": ref(rng, 16),
            "flagAdvise": "N",
            "paymentFlagStatus": "00",
        }, {"path": SNAP_VA_PATH, "partner_id": "PANTAU-" + p.channel}
    status, desc = {PAID: ("00", "SUCCESS"), FAILED: ("06", "FAILED"), EXPIRED: ("05", "EXPIRED")}[
        outcome
    ]
    return {
        "originalPartnerReferenceNo": p.transaction_id,
        "originalReferenceNo": ref(rng),
        "merchantId": "PANTAUSIM01",
        "amount": amount,
        "latestTransactionStatus": status,
        "transactionStatusDesc": desc,
        "createdTime": _wib_iso(p.created_at),
        "finishedTime": _wib_iso(at),
    }, {"path": SNAP_NOTIFY_PATH, "partner_id": "PANTAU-" + p.channel}


def _generic(p: Payment, outcome: str, at: float, rng: random.Random) -> dict[str, Any]:
    return {
        "transaction_id": p.transaction_id,
        "status": {PAID: "success", FAILED: "failed", EXPIRED: "expired"}[outcome],
        "amount": f"{p.amount}.00",
        "currency": "IDR",
        "channel": p.channel,
        "provider_reference": ref(rng),
        "occurred_at": _utc_iso(at),
    }


def callback_body(
    provider: str, payment: Payment, outcome: str, at: float, rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(body, build_callback options) for a provider reporting `outcome` of a payment at `at`."""
    if provider == "midtrans":
        return _midtrans(payment, outcome, at, rng), {}
    if provider == "xendit":
        return _xendit(payment, outcome, at, rng)
    if provider == "doku":
        return _doku(payment, outcome, at, rng), {"request_target": DOKU_TARGET}
    if provider == "snap":
        return _snap(payment, outcome, at, rng)
    if provider == "generic":
        return _generic(payment, outcome, at, rng), {}
    raise ValueError(f"unknown provider {provider!r}")
