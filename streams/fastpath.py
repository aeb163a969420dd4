"""Fast-path decoding of ordinary transactions; anything unusual is left to the pydantic contract.

`models.inputs.Transaction` stays the source of truth: `fast_transaction` accepts only values whose
every field is in the plain form the contract would keep unchanged (canonical strings, exact enum
values, IPv4 dotted quads, ISO times with an offset, decimal strings with at most two places),
and builds the same model the contract would. For anything else it returns None and the caller
validates with pydantic, which also writes the error messages. tests/unit/test_fastpath.py checks
that both agree on valid and invalid inputs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from models.common import MAX_AMOUNT, MIN_AMOUNT, Method, Status
from models.inputs import Transaction

_AMOUNT = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,2})?")
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_CHANNEL = re.compile(r"[A-Z0-9_]{2,32}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_RATE = re.compile(r"[01](?:\.[0-9]{1,6})?")
_BIN = re.compile(r"[0-9]{6,8}")
_LAST4 = re.compile(r"[0-9]{4}")
_METHODS = {m.value: m for m in Method}
_STATUSES = {s.value: s for s in Status}
_REQUIRED = (
    "transaction_id",
    "merchant_id",
    "customer_id",
    "amount",
    "currency",
    "method",
    "channel",
    "status",
    "created_at",
)
_FIELDS = frozenset(Transaction.model_fields)
_set = object.__setattr__


def _construct(fields_set: set[str], **values: Any) -> Transaction:
    """What `Transaction.model_construct` builds (every field given), without its per-field
    default lookups: the validated values, which of them the input named, no extra, no private."""
    model = Transaction.__new__(Transaction)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def _plain(value: Any, limit: int) -> bool:
    """A non-empty string the contract keeps as it is (no edge whitespace, within its length)."""
    return type(value) is str and 0 < len(value) <= limit and value == value.strip()


def _optional_text(value: Any, limit: int) -> tuple[bool, str | None]:
    if value is None:
        return True, None
    if type(value) is not str or value != value.strip() or len(value) > limit:
        return False, None
    return True, value or None


def fast_transaction(data: dict[str, Any]) -> Transaction | None:
    """The Transaction for an ordinary value (no floats, no nesting, canonical fields), else None.

    The caller must already know the raw bytes hold no card-number-shaped digit run and no JSON
    escape, so no string here can hold a card number (the contract's model check would pass)."""
    get = data.get
    for name in _REQUIRED:
        if not _plain(get(name), 200):
            return None
    for value in data.values():
        if value is not None and type(value) not in (str, bool, int):
            return None  # floats, lists, objects: the contract decides
    amount_text = data["amount"]
    if not _AMOUNT.fullmatch(amount_text):
        return None
    amount = Decimal(amount_text)
    if amount < MIN_AMOUNT or amount > MAX_AMOUNT:
        return None
    if data["currency"] != "IDR" or not _CHANNEL.fullmatch(data["channel"]):
        return None
    method = _METHODS.get(data["method"])
    status = _STATUSES.get(data["status"])
    created = data["created_at"]
    if method is None or status is None or not _TIME.fullmatch(created):
        return None
    try:
        created_at = datetime.fromisoformat(created)
    except ValueError:
        return None
    ok, error_code = _optional_text(get("error_code"), 64)
    ok2, goods_category = _optional_text(get("goods_category"), 64)
    ok3, device_id = _optional_text(get("device_id"), 200)
    if not (ok and ok2 and ok3):
        return None
    if device_id is None and get("device_id") == "":
        device_id = ""  # the contract keeps an empty device id as it is
    latency = get("latency_ms")
    if latency is not None and (type(latency) is not int or not 0 <= latency <= 3_600_000):
        return None
    includes_vat = get("price_includes_vat", True)
    cross_border = get("cross_border", False)
    if type(includes_vat) is not bool or type(cross_border) is not bool:
        return None
    rate_text = get("luxury_tax_rate")
    luxury_rate = None
    if rate_text is not None:
        if type(rate_text) is not str or not _RATE.fullmatch(rate_text):
            return None
        luxury_rate = Decimal(rate_text)
        if luxury_rate > 1:
            return None
    card_bin, last4 = get("card_bin"), get("card_last4")
    if card_bin is not None and not (type(card_bin) is str and _BIN.fullmatch(card_bin)):
        return None
    if last4 is not None and not (type(last4) is str and _LAST4.fullmatch(last4)):
        return None
    card_country, ip_country, ip = get("card_country"), get("ip_country"), get("ip")
    for country in (card_country, ip_country):
        if country is not None and not (type(country) is str and _COUNTRY.fullmatch(country)):
            return None
    if ip is not None and not (type(ip) is str and _IPV4.fullmatch(ip)):
        return None
    return _construct(
        {k for k in data if k in _FIELDS},
        transaction_id=data["transaction_id"],
        merchant_id=data["merchant_id"],
        customer_id=data["customer_id"],
        amount=amount,
        currency="IDR",
        method=method,
        channel=data["channel"],
        status=status,
        error_code=error_code,
        latency_ms=latency,
        created_at=created_at.astimezone(UTC),
        goods_category=goods_category,
        price_includes_vat=includes_vat,
        luxury_tax_rate=luxury_rate,
        cross_border=cross_border,
        card_bin=card_bin,
        card_last4=last4,
        card_country=card_country,
        device_id=device_id,
        ip=ip,
        ip_country=ip_country,
    )
