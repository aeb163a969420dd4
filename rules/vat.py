"""VAT (PPN) and PPnBM tagging of successful payments from the dated rate table in rules/vat/."""

from __future__ import annotations

from datetime import date, timedelta, timezone
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.common import Status
from models.inputs import Transaction
from models.outputs import VatMechanism, VatTag

VAT_DIR = Path(__file__).resolve().parent / "vat"
DEFAULT_TABLE = VAT_DIR / "ppn.yaml"
WIB = timezone(timedelta(hours=7), "WIB")
LUXURY_RANGE = (Fraction(1, 10), Fraction(2, 5))  # PPnBM 10%–40%

# Flags a tag may carry (bounded: they are also metric label values).
UNKNOWN_CATEGORY = "unknown_category"
CATEGORY_MISSING = "category_missing"
LUXURY_RATE_MISSING = "luxury_tax_rate_missing"
LUXURY_RATE_IGNORED = "luxury_tax_rate_ignored"
LUXURY_RATE_OUT_OF_RANGE = "luxury_tax_rate_out_of_range"
BEFORE_TABLE = "before_table"


def _fraction(text: str) -> Fraction:
    """A rate or share written as "0.12" or "11/12"."""
    try:
        return Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"must be a decimal like 0.12 or a fraction like 11/12 (got {text!r})"
        ) from None


class CategoryTax(BaseModel):
    """How one goods category is taxed in one period."""

    model_config = ConfigDict(extra="forbid")

    mechanism: VatMechanism
    rate: str = "0"
    tax_base: str = "1"
    luxury: bool = False

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: Any) -> str:
        if not 0 <= _fraction(value) <= 1:
            raise ValueError("must be a fraction between 0 and 1 (0.12 for 12%)")
        return str(value)

    @field_validator("tax_base")
    @classmethod
    def _base(cls, value: Any) -> str:
        if not 0 < _fraction(value) <= 1:
            raise ValueError("must be a share of the price in (0, 1], e.g. 11/12")
        return str(value)

    @model_validator(mode="after")
    def _exempt_is_zero(self) -> CategoryTax:
        if self.mechanism == VatMechanism.EXEMPT and _fraction(self.rate) != 0:
            raise ValueError("an exempt category has no rate")
        if self.mechanism == VatMechanism.REVERSE_CHARGE:
            raise ValueError(
                "reverse_charge is decided per transaction (cross_border and "
                "reverse_charge_categories); give the category's standard rate here"
            )
        return self

    @property
    def effective_rate(self) -> Fraction:
        """The nominal rate times the tax base share (12% × 11/12 = 11%)."""
        return _fraction(self.rate) * _fraction(self.tax_base)


class Period(BaseModel):
    """The rates in effect from one date on."""

    model_config = ConfigDict(extra="forbid")

    effective_from: date
    version: str | None = None
    categories: dict[str, CategoryTax]

    @property
    def table_version(self) -> str:
        """What tags produced from this period carry as table_version."""
        return self.version or self.effective_from.isoformat()


class Rounding(BaseModel):
    """The rounding rule, written in the table's file."""

    model_config = ConfigDict(extra="forbid")

    places: int = Field(default=2, ge=0, le=6)
    mode: Literal["ROUND_HALF_UP"] = "ROUND_HALF_UP"
    rule: str = Field(min_length=1)


class VatTable(BaseModel):
    """A dated VAT rate table (rules/vat/*.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    currency: Literal["IDR"] = "IDR"
    rounding: Rounding
    default_category: str
    aliases: dict[str, str] = Field(default_factory=dict)
    reverse_charge_categories: list[str] = Field(default_factory=list)
    periods: list[Period] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> VatTable:
        dates = [p.effective_from for p in self.periods]
        if len(set(dates)) != len(dates):
            raise ValueError("periods: two periods share an effective_from date")
        self.periods.sort(key=lambda p: p.effective_from)
        names = set(self.periods[0].categories)
        for period in self.periods:
            if self.default_category not in period.categories:
                raise ValueError(
                    f"periods[{period.effective_from}]: default_category "
                    f"{self.default_category!r} is not in its categories"
                )
            if set(period.categories) != names:
                raise ValueError(
                    f"periods[{period.effective_from}]: must list the same categories as the "
                    f"others (differs by {sorted(names ^ set(period.categories))})"
                )
        for alias, target in self.aliases.items():
            if target not in names:
                raise ValueError(f"aliases.{alias}: {target!r} is not a category")
        return self

    def period_for(self, day: date) -> tuple[Period, bool]:
        """The period in effect on a day; (earliest period, True) for days before the table."""
        chosen = None
        for period in self.periods:
            if period.effective_from <= day:
                chosen = period
            else:
                break
        if chosen is None:
            return self.periods[0], True
        return chosen, False


def load_vat_table(path: Path | None = None) -> VatTable:
    """The rate table from YAML (rules/vat/ppn.yaml by default); ValueError naming the file."""
    path = path or DEFAULT_TABLE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a mapping")
    try:
        return VatTable.model_validate(data)
    except ValidationError as exc:
        from streams.codec import describe_errors

        raise ValueError(f"{path}: {describe_errors(exc)}") from None


def round_half_up(value: Fraction, places: int = 2) -> Decimal:
    """An exact non-negative amount rounded once, half up, to `places` decimals."""
    scaled = value * 10**places
    units = (scaled.numerator * 2 + scaled.denominator) // (scaled.denominator * 2)
    return Decimal(units).scaleb(-places)


def to_decimal(value: Fraction) -> Decimal:
    """A rate as a Decimal (exact when it terminates, else to 12 places)."""
    with localcontext() as ctx:
        ctx.prec = 28
        exact = Decimal(value.numerator) / Decimal(value.denominator)
    if Fraction(exact) == value:
        if exact == 0:
            return Decimal("0")
        exact = exact.normalize()
        # At least two places, as rates are written ("0.10", not "0.1").
        cents = exact.quantize(Decimal("0.01"))
        return cents if cents == exact else exact
    return exact.quantize(Decimal("1e-12"))


class VatTagger:
    """Tags successful payments with PPN/PPnBM from a dated table (a components.VatTagger)."""

    def __init__(self, table: VatTable | None = None) -> None:
        self.table = table or load_vat_table()
        # Per-event arithmetic that depends only on the table: computed once, same values.
        self._days: dict[date, tuple[Period, bool]] = {}
        self._rates: dict[int, Fraction] = {}
        self._decimals: dict[Fraction, Decimal] = {}
        self._zero = round_half_up(Fraction(0), self.table.rounding.places)
        self._quantum = Decimal(1).scaleb(-self.table.rounding.places)

    def _period(self, day: date) -> tuple[Period, bool]:
        found = self._days.get(day)
        if found is None:
            if len(self._days) > 4096:
                self._days.clear()
            found = self._days[day] = self.table.period_for(day)
        return found

    def _rate(self, tax: CategoryTax) -> Fraction:
        rate = self._rates.get(id(tax))
        if rate is None:
            rate = self._rates[id(tax)] = tax.effective_rate
        return rate

    def _decimal(self, rate: Fraction) -> Decimal:
        found = self._decimals.get(rate)
        if found is None:
            if len(self._decimals) > 4096:
                self._decimals.clear()
            found = self._decimals[rate] = to_decimal(rate)
        return found

    def tag(self, transaction: Transaction) -> VatTag | None:
        """The VAT tag of a successful payment; None for pending or failed ones."""
        if transaction.status != Status.SUCCESS:
            return None
        tag = self.compute(transaction)
        from streams import metrics

        metrics.child(metrics.VAT_TAGGED, tag.mechanism.value).inc()
        for flag in tag.flags:
            metrics.child(metrics.VAT_FLAGGED, flag).inc()
        return tag

    def compute(self, tx: Transaction) -> VatTag:
        """The tag, whatever the transaction's status (tag() applies the status rule)."""
        table = self.table
        places = table.rounding.places
        flags: list[str] = []
        period, before = self._period(tx.created_at.astimezone(WIB).date())
        if before:
            flags.append(BEFORE_TABLE)
        category = tx.goods_category
        if category is not None:
            category = table.aliases.get(category, category)
        if category is None:
            flags.append(CATEGORY_MISSING)
            category = table.default_category
        elif category not in period.categories:
            flags.append(UNKNOWN_CATEGORY)
            category = table.default_category
        tax = period.categories[category]
        price = Fraction(tx.amount)
        zero = self._zero

        luxury_rate = Fraction(0)
        if tax.luxury:
            if tx.luxury_tax_rate is None:
                flags.append(LUXURY_RATE_MISSING)
            else:
                luxury_rate = Fraction(tx.luxury_tax_rate)
                if not LUXURY_RANGE[0] <= luxury_rate <= LUXURY_RANGE[1]:
                    flags.append(LUXURY_RATE_OUT_OF_RANGE)
        elif tx.luxury_tax_rate:
            flags.append(LUXURY_RATE_IGNORED)

        if tax.mechanism == VatMechanism.EXEMPT:
            return VatTag(
                category=category,
                mechanism=VatMechanism.EXEMPT,
                rate=Decimal("0"),
                base=round_half_up(price, places),
                amount=zero,
                luxury_tax_rate=Decimal("0"),
                luxury_tax_amount=zero,
                table_version=period.table_version,
                flags=flags,
            )
        rate = self._rate(tax)
        if tx.cross_border and category in table.reverse_charge_categories:
            # The buyer self-assesses: the price paid abroad carries no Indonesian PPN, so it is
            # the base whatever price_includes_vat says, and the tag says what the buyer owes.
            return VatTag(
                category=category,
                mechanism=VatMechanism.REVERSE_CHARGE,
                rate=self._decimal(rate),
                base=round_half_up(price, places),
                amount=round_half_up(price * rate, places),
                luxury_tax_rate=Decimal("0"),
                luxury_tax_amount=zero,
                table_version=period.table_version,
                flags=flags,
            )
        if tx.price_includes_vat:
            total = 1 + rate + luxury_rate
            vat = round_half_up(price * rate / total, places)
            luxury = round_half_up(price * luxury_rate / total, places)
            base = (Decimal(tx.amount) - vat - luxury).quantize(self._quantum)
        else:
            base = round_half_up(price, places)
            vat = round_half_up(price * rate, places)
            luxury = round_half_up(price * luxury_rate, places)
        return VatTag(
            category=category,
            mechanism=VatMechanism.STANDARD,
            rate=self._decimal(rate),
            base=base,
            amount=vat,
            luxury_tax_rate=self._decimal(luxury_rate),
            luxury_tax_amount=luxury,
            table_version=period.table_version,
            flags=flags,
        )
