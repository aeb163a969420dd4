"""Input contracts: Transaction, Callback, BalanceSnapshot, FraudLabel (DESIGN.md §3)."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from models.common import (
    Amount,
    Contract,
    Identifier,
    Method,
    Money,
    Provider,
    Rate,
    Status,
    UtcDatetime,
    refuse_pans,
)
from models.pan import mask_pans

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CHANNEL = re.compile(r"^[A-Z0-9_]{2,32}$")


def _check_currency(value: str) -> str:
    value = value.upper()
    if not _CURRENCY.match(value):
        raise ValueError("must be an ISO 4217 code such as IDR")
    if value != "IDR":
        raise ValueError(f"only IDR is supported for now (got {value})")
    return value


class Transaction(Contract):
    """One payment attempt as the gateway saw it; a retry is a new event with the same id."""

    transaction_id: Identifier
    merchant_id: Identifier
    customer_id: Identifier
    amount: Amount
    currency: str
    method: Method
    channel: str
    status: Status
    error_code: Annotated[str, Field(max_length=64)] | None = None
    latency_ms: Annotated[int, Field(ge=0, le=3_600_000)] | None = None
    created_at: UtcDatetime
    goods_category: Annotated[str, Field(max_length=64)] | None = None
    price_includes_vat: bool = True
    luxury_tax_rate: Rate | None = None
    cross_border: bool = False
    card_bin: Annotated[str, Field(pattern=r"^[0-9]{6,8}$")] | None = None
    card_last4: Annotated[str, Field(pattern=r"^[0-9]{4}$")] | None = None
    card_country: str | None = None
    device_id: Annotated[str, Field(max_length=200)] | None = None
    ip: str | None = None
    ip_country: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_card_numbers(cls, data: Any) -> Any:
        return refuse_pans(data)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return _check_currency(value)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        value = value.strip().upper()
        if not _CHANNEL.match(value):
            raise ValueError("must be a provider name of 2-32 letters, digits or _ (e.g. BCA)")
        return value

    @field_validator("card_country", "ip_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.upper()
        if not _COUNTRY.match(value):
            raise ValueError("must be an ISO 3166 alpha-2 code such as ID")
        return value

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None

    @field_validator("error_code", "goods_category")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


@functools.lru_cache(maxsize=4096)
def _canonical_ip(value: str) -> str:
    """An IP address in its canonical text (a provider's few senders repeat: cached)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


class Callback(Contract):
    """A webhook exactly as the gateway's receiver got it; card-like digit runs are masked."""

    callback_id: Identifier
    provider: Provider
    received_at: UtcDatetime
    source_ip: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Annotated[str, Field(max_length=1_000_000)]

    @field_validator("source_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        return _canonical_ip(value)

    @field_validator("headers")
    @classmethod
    def _lower_headers(cls, value: dict[str, str]) -> dict[str, str]:
        # HTTP header names are case-insensitive: keep them lower-case.
        return {k.lower(): v for k, v in value.items()}

    def masked_body(self) -> str:
        """The body with card-like digit runs masked, for anything Pantau stores or sends."""
        return mask_pans(self.body)


class BalanceSnapshot(Contract):
    """A merchant's deposit balance (used for payouts) at a moment."""

    merchant_id: Identifier
    balance: Money
    currency: str
    at: UtcDatetime

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return _check_currency(value)

    @field_validator("balance")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if not value.is_finite():
            raise ValueError("must be a finite number")
        return value


class FraudLabel(Contract):
    """A confirmed fraud or chargeback report, arriving days after the payment."""

    transaction_id: Identifier
    fraud: bool
    reported_at: UtcDatetime
