"""Shared field types of the contracts: money, rates, UTC times, enums, the PAN guard."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from models.pan import contains_pan, mask_pans

SCHEMA_VERSION = 1
MIN_AMOUNT = Decimal("0.01")
MAX_AMOUNT = Decimal("1000000000")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def iso_utc(value: datetime) -> str:
    """A time as ISO-8601 in UTC with milliseconds and a Z, as every output carries it."""
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


# Timezone-aware on input (naive times are refused), UTC inside, ISO-8601 "Z" on output.
UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
]


def _decimal_str(value: Decimal) -> str:
    return format(value, "f")


def _check_amount(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value < MIN_AMOUNT:
        raise ValueError(f"must be ≥ {MIN_AMOUNT}")
    if value > MAX_AMOUNT:
        raise ValueError(f"must be ≤ {MAX_AMOUNT}")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("must have at most 2 decimal places")
    return value


def _check_rate(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0 or value > 1:
        raise ValueError("must be a fraction between 0 and 1 (e.g. 0.20 for 20%)")
    return value


# IDR amounts: decimal string or number on input, decimal string on output.
Amount = Annotated[
    Decimal,
    AfterValidator(_check_amount),
    PlainSerializer(_decimal_str, return_type=str, when_used="json"),
]
# Any decimal money figure (a balance may be zero or negative; tax amounts may be 0.00).
Money = Annotated[Decimal, PlainSerializer(_decimal_str, return_type=str, when_used="json")]
# A rate as a fraction, never a percentage.
Rate = Annotated[
    Decimal,
    AfterValidator(_check_rate),
    PlainSerializer(_decimal_str, return_type=str, when_used="json"),
]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


class Method(StrEnum):
    """Payment methods (DESIGN.md §3)."""

    VIRTUAL_ACCOUNT = "virtual_account"
    BANK_TRANSFER = "bank_transfer"
    CARD = "card"
    EWALLET = "ewallet"
    QRIS = "qris"
    CONVENIENCE_STORE = "convenience_store"
    PAYLATER = "paylater"
    DIRECT_DEBIT = "direct_debit"


class Status(StrEnum):
    """Status of one payment attempt."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"


class Provider(StrEnum):
    """Callback providers: each selects a parser and a signature scheme."""

    MIDTRANS = "midtrans"
    XENDIT = "xendit"
    DOKU = "doku"
    SNAP = "snap"
    GENERIC = "generic"


# Known channels and their method; unknown channels are accepted and tracked all the same.
KNOWN_CHANNELS: dict[str, Method] = {
    "BCA": Method.VIRTUAL_ACCOUNT,
    "MANDIRI": Method.VIRTUAL_ACCOUNT,
    "BNI": Method.VIRTUAL_ACCOUNT,
    "BRI": Method.VIRTUAL_ACCOUNT,
    "PERMATA": Method.VIRTUAL_ACCOUNT,
    "CIMB": Method.VIRTUAL_ACCOUNT,
    "OVO": Method.EWALLET,
    "DANA": Method.EWALLET,
    "LINKAJA": Method.EWALLET,
    "GOPAY": Method.EWALLET,
    "SHOPEEPAY": Method.EWALLET,
    "QRIS": Method.QRIS,
    "INDOMARET": Method.CONVENIENCE_STORE,
    "ALFAMART": Method.CONVENIENCE_STORE,
    "AKULAKU": Method.PAYLATER,
    "KREDIVO": Method.PAYLATER,
    "VISA": Method.CARD,
    "MASTERCARD": Method.CARD,
    "JCB": Method.CARD,
}


def _strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string or number inside a JSON-like value, with its dotted path."""
    if isinstance(value, dict):
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out.extend(_strings(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            out.extend(_strings(v, f"{path}[{i}]"))
        return out
    if isinstance(value, str | int | float | Decimal) and not isinstance(value, bool):
        return [(path, str(value))]
    return []


def refuse_pans(data: Any) -> Any:
    """Raise naming the field when any value holds a card number (a Luhn-valid 13-19 digit run)."""
    for path, text in _strings(data):
        if contains_pan(text):
            raise ValueError(
                f"{path}: holds a card number ({mask_pans(text)}); only card_bin and card_last4 "
                "may be sent"
            )
    return data


class Contract(BaseModel):
    """Base of every contract: strict about shapes, friendly about extra fields."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=False)


class OutputContract(BaseModel):
    """Base of every output value: carries its schema version."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
