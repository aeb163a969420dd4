"""Metrics label cardinality stays bounded: a million distinct customers add no series, and no
label value is a customer, merchant, device, card, IP, callback or transaction id."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams import metrics
from streams.core import Record
from streams.pipeline import build_pipeline
from streams.settings import Settings
from streams.sim_callbacks import sim_settings_overrides
from streams.simulator import SimEvent, generate
from tests.conftest import DESIGN_TRANSACTION

SCENARIOS = ("card-testing", "bca-outage", "callback-storm", "account-takeover")
# Every series a full pipeline exposes for the simulated gateway's 18 channels, its alerts and
# dead-letter reasons (about 1,300 measured), with room for new metrics; not a function of
# customers.
SERIES_BOUND = 2500
# Series a 10,000-times larger customer base may add (channels, alerts or reasons that only
# show up with more traffic), far below one per customer.
GROWTH_BOUND = 150

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def series() -> set[SeriesKey]:
    """Every (sample name, labels) the registry exposes now."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in metrics.REGISTRY.collect()
        for s in family.samples
    }


def feed(events: Iterable[SimEvent], batch_size: int = 250) -> None:
    """Run events through a full pipeline's stages in micro-batches, as a worker would."""
    pipeline = build_pipeline(Settings(**sim_settings_overrides()))
    batch: list[Record] = []

    def flush() -> None:
        if batch:
            pipeline.process(batch, lambda out: None)
            pipeline.tick(lambda out: None)
            batch.clear()

    for ev in events:
        if batch and (batch[0].topic != ev.topic or len(batch) >= batch_size):
            flush()
        key = ev.key.encode() if ev.key is not None else None
        batch.append(Record(ev.topic, orjson.dumps(ev.value), key))
    flush()
    pipeline.close(lambda out: None)


def ids_in(events: Iterable[SimEvent]) -> set[str]:
    """Every identifier of a customer, merchant, device, card, IP, transaction or callback."""
    found: set[str] = set()
    for ev in events:
        v = ev.value
        for name in ("customer_id", "merchant_id", "transaction_id", "device_id", "ip",
                     "callback_id", "source_ip"):  # fmt: skip
            if isinstance(v.get(name), str):
                found.add(v[name])
        if v.get("card_bin") and v.get("card_last4"):
            found.add(f"{v['card_bin']}:{v['card_last4']}")
            found.add(str(v["card_last4"]))
        if ev.key:
            found.add(ev.key)
    return found


def _events(customers: int) -> list[SimEvent]:
    return list(
        generate(
            seed=3,
            duration=timedelta(minutes=3),
            tx_per_second=40.0,  # busy enough that thousands of distinct customers show up
            customers=customers,
            merchants=min(customers, 5000),
            invalid_rate=0.02,
            scenarios=SCENARIOS,
            diurnal=False,
        )
    )


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    before = series()
    small = _events(100)
    feed(small)
    after_small = series()
    big = _events(1_000_000)
    feed(big)
    after_big = series()
    return {
        "small": small,
        "big": big,
        "new_small": after_small - before,
        "new_big": after_big - after_small,
        "after_small": after_small,
        "all": after_big,
    }


@pytest.mark.slow  # a simulated run through the full pipeline
def test_a_million_customers_are_really_simulated(measured: dict[str, Any]) -> None:
    customers = {e.value.get("customer_id") for e in measured["big"]} - {None}
    assert len(customers) > 5000
    assert len(customers) > 10 * len({e.value.get("customer_id") for e in measured["small"]})
    assert len(measured["after_small"]) > 200  # the run exercised the metrics at all


@pytest.mark.slow  # a simulated run through the full pipeline
def test_series_do_not_grow_with_customers(measured: dict[str, Any]) -> None:
    grown = measured["new_big"]
    assert len(grown) <= GROWTH_BOUND, sorted(grown)[:20]
    assert len(measured["new_small"] | grown) <= SERIES_BOUND


@pytest.mark.slow  # a simulated run through the full pipeline
def test_no_label_value_is_an_id(measured: dict[str, Any]) -> None:
    ids = ids_in(measured["small"]) | ids_in(measured["big"])
    leaked = {
        (name, value) for name, labels in measured["all"] for _, value in labels if value in ids
    }
    assert not leaked, sorted(leaked)[:10]


def test_unknown_channels_cannot_blow_up_the_series() -> None:
    """300 transactions, each on a different made-up channel (a gateway bug that puts a merchant
    code in `channel`): the series must stay bounded."""
    before = series()
    start = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    events = [
        SimEvent(
            "payments.transactions",
            "c-1",
            {
                **DESIGN_TRANSACTION,
                "transaction_id": f"trx-chan-{i}",
                "channel": f"MERCHANT_{i:05d}",
                "created_at": (start + timedelta(seconds=i)).isoformat(),
            },
        )
        for i in range(300)
    ]
    feed(events)
    assert len(series() - before) <= GROWTH_BOUND
