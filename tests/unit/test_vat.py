"""VAT tagging: every category, inclusive and exclusive prices, amounts across the whole range,
both sides of a rate change, and base + PPN + PPnBM equal to the price for inclusive prices."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from models.common import MAX_AMOUNT, MIN_AMOUNT
from models.inputs import Transaction
from models.outputs import VatMechanism
from rules.vat import (
    DEFAULT_TABLE,
    LUXURY_RATE_MISSING,
    UNKNOWN_CATEGORY,
    VatTagger,
    load_vat_table,
    round_half_up,
)

TAGGER = VatTagger()
TABLE_TEXT = DEFAULT_TABLE.read_text(encoding="utf-8")


def tx(**fields: Any) -> Transaction:
    base: dict[str, Any] = {
        "transaction_id": "trx-1",
        "merchant_id": "m-1",
        "customer_id": "c-1",
        "amount": "150000.00",
        "currency": "IDR",
        "method": "card",
        "channel": "VISA",
        "status": "success",
        "created_at": "2026-11-21T03:00:00.123+07:00",
        "goods_category": "premium_goods",
    }
    base.update(fields)
    return Transaction.model_validate(base)


def test_design_example() -> None:
    tag = TAGGER.tag(tx())
    assert tag is not None
    assert tag.model_dump(mode="json") == {
        "category": "premium_goods",
        "mechanism": "standard",
        "rate": "0.11",
        "base": "135135.14",
        "amount": "14864.86",
        "luxury_tax_rate": "0",
        "luxury_tax_amount": "0.00",
        "table_version": "2025-01-01",
        "flags": [],
    }


# (category, includes VAT, luxury rate) → (mechanism, rate, base, PPN, PPnBM) for IDR 150,000.00
CASES = [
    ("basic_necessities", True, None, "exempt", "0", "150000.00", "0.00", "0.00"),
    ("basic_needs", False, None, "exempt", "0", "150000.00", "0.00", "0.00"),
    ("medical_services", True, None, "exempt", "0", "150000.00", "0.00", "0.00"),
    ("education", True, None, "exempt", "0", "150000.00", "0.00", "0.00"),
    ("financial_services", True, None, "exempt", "0", "150000.00", "0.00", "0.00"),
    ("public_transport", True, None, "exempt", "0", "150000.00", "0.00", "0.00"),
    # 12% × 11/12 = 11%: 150000 × 0.11 / 1.11 = 14864.864… → 14864.86
    ("general_goods", True, None, "standard", "0.11", "135135.14", "14864.86", "0.00"),
    ("standard", True, None, "standard", "0.11", "135135.14", "14864.86", "0.00"),
    ("general_services", False, None, "standard", "0.11", "150000.00", "16500.00", "0.00"),
    ("premium_goods", False, None, "standard", "0.11", "150000.00", "16500.00", "0.00"),
    ("digital_services", True, None, "standard", "0.11", "135135.14", "14864.86", "0.00"),
    # Luxury: 12% on the full price plus PPnBM 20%: 150000 / 1.32 = 113636.36…;
    # PPN 150000 × 0.12 / 1.32 = 13636.3636… → 13636.36; PPnBM 22727.2727… → 22727.27
    ("luxury_goods", True, "0.20", "standard", "0.12", "113636.37", "13636.36", "22727.27"),
    ("luxury_vehicles", False, "0.40", "standard", "0.12", "150000.00", "18000.00", "60000.00"),
]


@pytest.mark.parametrize(
    ("category", "inclusive", "luxury", "mechanism", "rate", "base", "vat", "ppnbm"), CASES
)
def test_every_category(
    category: str,
    inclusive: bool,
    luxury: str | None,
    mechanism: str,
    rate: str,
    base: str,
    vat: str,
    ppnbm: str,
) -> None:
    tag = TAGGER.tag(
        tx(goods_category=category, price_includes_vat=inclusive, luxury_tax_rate=luxury)
    )
    assert tag is not None
    got = (tag.mechanism.value, tag.rate, tag.base, tag.amount, tag.luxury_tax_amount)
    assert got == (mechanism, Decimal(rate), Decimal(base), Decimal(vat), Decimal(ppnbm))
    assert str(tag.base).endswith(base[-3:]) and len(str(tag.amount).split(".")[1]) == 2
    assert tag.flags == []


def test_table_covers_every_category_in_cases() -> None:
    table = load_vat_table()
    tested = {table.aliases.get(c[0], c[0]) for c in CASES}
    assert tested == set(table.periods[-1].categories)


def test_reverse_charge_for_cross_border_digital_services() -> None:
    tag = TAGGER.tag(tx(goods_category="digital_services", cross_border=True, amount="55000.00"))
    assert tag is not None
    assert tag.mechanism == VatMechanism.REVERSE_CHARGE
    # The buyer self-assesses 11% on what it paid abroad.
    assert (tag.rate, tag.base, tag.amount) == (
        Decimal("0.11"),
        Decimal("55000.00"),
        Decimal("6050.00"),
    )
    # Cross-border goods are not services: standard.
    goods = TAGGER.tag(tx(goods_category="premium_goods", cross_border=True))
    assert goods is not None and goods.mechanism == VatMechanism.STANDARD


def test_unknown_and_missing_category_use_the_default_and_are_flagged() -> None:
    tag = TAGGER.tag(tx(goods_category="space_tourism"))
    assert tag is not None
    assert (tag.category, tag.flags, tag.amount) == (
        "general_goods",
        [UNKNOWN_CATEGORY],
        Decimal("14864.86"),
    )
    missing = TAGGER.tag(tx(goods_category=None))
    assert missing is not None and missing.flags == ["category_missing"]


def test_luxury_without_its_rate_is_flagged() -> None:
    tag = TAGGER.tag(tx(goods_category="luxury_goods"))
    assert tag is not None
    assert tag.flags == [LUXURY_RATE_MISSING] and tag.luxury_tax_amount == Decimal("0.00")
    odd = TAGGER.tag(tx(goods_category="luxury_goods", luxury_tax_rate="0.05"))
    assert odd is not None and odd.flags == ["luxury_tax_rate_out_of_range"]
    ignored = TAGGER.tag(tx(goods_category="premium_goods", luxury_tax_rate="0.20"))
    assert ignored is not None
    assert ignored.flags == ["luxury_tax_rate_ignored"] and ignored.luxury_tax_rate == 0


@pytest.mark.parametrize("status", ["failed", "pending"])
def test_unsuccessful_payments_get_no_vat(status: str) -> None:
    assert TAGGER.tag(tx(status=status)) is None


@pytest.mark.parametrize(
    ("created_at", "version", "rate", "vat"),
    [
        # The date is the transaction's date in WIB: 2022-03-31T17:30Z is already April 1st.
        ("2022-03-31T23:59:59+07:00", "1985-04-01", "0.1", "10000.00"),
        ("2022-03-31T17:00:00Z", "2022-04-01", "0.11", "11000.00"),
        ("2024-12-31T23:59:59+07:00", "2022-04-01", "0.11", "11000.00"),
        ("2025-01-01T00:00:00+07:00", "2025-01-01", "0.11", "11000.00"),
    ],
)
def test_dates_on_each_side_of_a_rate_change(
    created_at: str, version: str, rate: str, vat: str
) -> None:
    tag = TAGGER.tag(tx(created_at=created_at, price_includes_vat=False, amount="100000.00"))
    assert tag is not None
    assert (tag.table_version, tag.rate, tag.amount) == (version, Decimal(rate), Decimal(vat))


def test_luxury_rate_changes_in_2025() -> None:
    before = TAGGER.tag(
        tx(goods_category="luxury_goods", luxury_tax_rate="0.20", price_includes_vat=False,
           amount="100000.00", created_at="2024-12-31T12:00:00+07:00")
    )  # fmt: skip
    after = TAGGER.tag(
        tx(goods_category="luxury_goods", luxury_tax_rate="0.20", price_includes_vat=False,
           amount="100000.00", created_at="2025-01-01T12:00:00+07:00")
    )  # fmt: skip
    assert before is not None and after is not None
    assert (before.amount, after.amount) == (Decimal("11000.00"), Decimal("12000.00"))
    assert before.luxury_tax_amount == after.luxury_tax_amount == Decimal("20000.00")


def test_finance_adds_next_years_rates_by_editing_the_table(tmp_path: Path) -> None:
    data = yaml.safe_load(TABLE_TEXT)
    future = dict(data["periods"][-1], effective_from=date(2027, 1, 1), version="2027-01-01")
    future["categories"] = dict(
        future["categories"],
        general_goods={"mechanism": "standard", "rate": "0.12", "tax_base": "1"},
    )
    data["periods"].append(future)
    path = tmp_path / "ppn.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    tagger = VatTagger(load_vat_table(path))
    old = tagger.tag(tx(goods_category="general_goods", created_at="2026-12-31T23:00:00+07:00"))
    new = tagger.tag(tx(goods_category="general_goods", created_at="2027-01-01T00:00:00+07:00"))
    assert old is not None and new is not None
    assert (old.rate, old.table_version) == (Decimal("0.11"), "2025-01-01")
    assert (new.rate, new.table_version) == (Decimal("0.12"), "2027-01-01")


def test_the_rounding_rule_is_written_in_the_table() -> None:
    table = load_vat_table()
    assert table.rounding.mode == "ROUND_HALF_UP" and table.rounding.places == 2
    assert "half up" in table.rounding.rule and "base + PPN + PPnBM equals the price" in (
        table.rounding.rule
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"default_category": "nothing"}, "default_category"),
        ({"aliases": {"x": "nothing"}}, "aliases.x"),
        ({"rounding": {"places": 2, "mode": "ROUND_HALF_UP"}}, "rounding.rule"),
    ],
)
def test_a_broken_table_is_refused_with_where(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = yaml.safe_load(TABLE_TEXT)
    data.update(change)
    path = tmp_path / "ppn.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_vat_table(path)


def test_round_half_up() -> None:
    from fractions import Fraction

    assert round_half_up(Fraction(5, 1000)) == Decimal("0.01")  # 0.005 → 0.01 (not banker's)
    assert round_half_up(Fraction(4999, 1000000)) == Decimal("0.00")
    assert round_half_up(Fraction(0)) == Decimal("0.00")


amounts = st.decimals(min_value=MIN_AMOUNT, max_value=MAX_AMOUNT, places=2)
categories = st.sampled_from(
    ["basic_necessities", "general_goods", "premium_goods", "digital_services", "luxury_goods",
     "luxury_vehicles", "unknown_thing"]
)  # fmt: skip
luxury_rates = st.sampled_from([None, "0.10", "0.20", "0.25", "0.35", "0.40"])
dates = st.sampled_from(
    ["2021-06-01T10:00:00+07:00", "2023-06-01T10:00:00+07:00", "2026-11-21T10:00:00+07:00"]
)


@settings(max_examples=400, deadline=None)
@given(amounts, categories, luxury_rates, dates, st.booleans())
def test_inclusive_parts_sum_to_the_price(
    amount: Decimal, category: str, luxury: str | None, created_at: str, inclusive: bool
) -> None:
    tag = TAGGER.tag(
        tx(amount=str(amount), goods_category=category, luxury_tax_rate=luxury,
           created_at=created_at, price_includes_vat=inclusive)
    )  # fmt: skip
    assert tag is not None
    for value in (tag.base, tag.amount, tag.luxury_tax_amount):
        assert value == value.quantize(Decimal("0.01")) and value >= 0
        assert value.as_tuple().exponent == -2
    if inclusive:
        assert tag.base + tag.amount + tag.luxury_tax_amount == amount
    else:
        assert tag.base == amount
        # Exclusive: each tax is base × rate rounded half up, to the cent.
        expected = (amount * tag.rate).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
        assert tag.amount == expected
    # The effective rate holds to within half a cent on each tax.
    if tag.mechanism == VatMechanism.STANDARD:
        total = 1 + tag.rate + tag.luxury_tax_rate
        net = amount / total if inclusive else amount
        assert abs(tag.amount - net * tag.rate) <= Decimal("0.005") + Decimal("1e-20")
