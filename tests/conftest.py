"""Shared fixtures: the DESIGN.md examples as plain dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

DESIGN_TRANSACTION: dict[str, Any] = {
    "transaction_id": "trx-20261121-000001",
    "merchant_id": "m-tokobaju",
    "customer_id": "c-88121",
    "amount": "150000.00",
    "currency": "IDR",
    "method": "virtual_account",
    "channel": "BCA",
    "status": "failed",
    "error_code": "503",
    "latency_ms": 912,
    "created_at": "2026-11-21T03:00:00.123+07:00",
    "goods_category": "premium_goods",
    "price_includes_vat": True,
    "luxury_tax_rate": None,
    "cross_border": False,
    "card_bin": None,
    "card_last4": None,
    "card_country": None,
    "device_id": "d-5521",
    "ip": "203.0.113.7",
    "ip_country": "ID",
}

DESIGN_CALLBACK: dict[str, Any] = {
    "callback_id": "cb-77",
    "provider": "midtrans",
    "received_at": "2026-11-21T03:00:07Z",
    "source_ip": "103.208.23.6",
    "headers": {"content-type": "application/json"},
    "body": '{"order_id":"trx-20261121-000001","status_code":"200"}',
}


@pytest.fixture
def design_transaction() -> dict[str, Any]:
    """DESIGN.md §3's Transaction example (a fresh copy per test)."""
    return copy.deepcopy(DESIGN_TRANSACTION)


@pytest.fixture
def design_callback() -> dict[str, Any]:
    """DESIGN.md §3's Callback example (a fresh copy per test)."""
    return copy.deepcopy(DESIGN_CALLBACK)


@pytest.fixture(autouse=True)
def _no_pantau_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit and pipeline tests see only the settings they make: a PANTAU_* variable in the
    shell (or one a test leaked) must not change what they check. Integration tests keep
    PANTAU_BROKER, which points them at a real Kafka."""
    if "integration" in request.node.nodeid.split("::")[0].split("/"):
        return
    import os

    for name in [n for n in os.environ if n.startswith("PANTAU_")]:
        monkeypatch.delenv(name)
