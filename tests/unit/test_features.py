"""Fraud features against hand-computed windows: expiry, label delay, redelivery counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import FEATURES, MODEL_FEATURES, FeatureStore, decode, model_matrix
from models.inputs import FraudLabel, Transaction

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday, 07:00 WIB


def tx(i: int, at: datetime, **fields: Any) -> Transaction:
    base: dict[str, Any] = {
        "transaction_id": f"trx-{i}",
        "merchant_id": "m-toko",
        "customer_id": "c-1",
        "amount": "100000.00",
        "currency": "IDR",
        "method": "card",
        "channel": "VISA",
        "status": "success",
        "created_at": at.isoformat(),
        "card_bin": "411111",
        "card_last4": "0001",
        "card_country": "ID",
        "device_id": "d-1",
        "ip": "203.0.113.7",
        "ip_country": "ID",
    }
    base.update(fields)
    return Transaction.model_validate(base)


def bare(i: int, at: datetime, **fields: Any) -> Transaction:
    """An e-wallet payment with no device, IP or card: it touches its customer and merchant."""
    none = {"device_id": None, "ip": None, "card_bin": None, "card_last4": None}
    return tx(i, at, **{**none, "method": "ewallet", "channel": "OVO", **fields})


def test_ten_minute_window_is_this_minute_and_the_nine_before() -> None:
    store = FeatureStore()
    assert store.apply(tx(1, T0))["customer_count_10m"] == 1
    assert store.apply(tx(2, T0 + timedelta(minutes=5)))["customer_count_10m"] == 2
    f = store.apply(tx(3, T0 + timedelta(minutes=9, seconds=59)))
    assert f["customer_count_10m"] == 3
    assert f["customer_amount_10m"] == 300000.0
    # At 00:10 the 00:00 minute has left the window; 00:05, 00:09 and this one remain.
    f = store.apply(tx(4, T0 + timedelta(minutes=10)))
    assert f["customer_count_10m"] == 3
    assert f["customer_count_1h"] == 4
    assert f["customer_count_24h"] == 4


def test_hour_day_week_and_month_windows_expire() -> None:
    store = FeatureStore()
    store.apply(tx(1, T0))
    f = store.apply(tx(2, T0 + timedelta(minutes=59)))
    assert (f["customer_count_1h"], f["device_count_1h"], f["card_count_1h"]) == (2, 2, 2)
    f = store.apply(tx(3, T0 + timedelta(hours=1)))  # 00:00-00:04 bucket is 12 buckets old
    assert f["customer_count_1h"] == 2
    assert f["customer_count_24h"] == 3
    f = store.apply(tx(4, T0 + timedelta(hours=24)))  # hour 0 is 24 hours old, hour 1 is not
    assert f["customer_count_24h"] == 2
    assert f["customer_count_7d"] == 4
    f = store.apply(tx(5, T0 + timedelta(days=7)))
    assert f["customer_count_7d"] == 2  # day 1 (tx 4) and day 7
    assert f["customer_count_30d"] == 5
    f = store.apply(tx(6, T0 + timedelta(days=30)))
    assert f["customer_count_30d"] == 3  # days 1, 7 and 30
    assert f["merchant_count_30d"] == 3
    assert f["ip_amount_30d"] == 300000.0


def test_entities_are_counted_by_their_own_keys() -> None:
    store = FeatureStore()
    store.apply(tx(1, T0, customer_id="c-1", device_id="d-1", ip="203.0.113.7"))
    store.apply(tx(2, T0, customer_id="c-2", device_id="d-1", ip="203.0.113.8"))
    f = store.apply(
        tx(3, T0, customer_id="c-3", device_id="d-2", ip="203.0.113.7", card_last4="0002")
    )
    assert f["customer_count_10m"] == 1
    assert f["device_count_10m"] == 1
    assert f["ip_count_10m"] == 2
    assert f["card_count_10m"] == 1
    assert f["merchant_count_10m"] == 3
    f = store.apply(bare(4, T0, customer_id="c-4"))
    assert (f["device_count_10m"], f["ip_count_10m"], f["card_count_10m"]) == (0, 0, 0)
    assert not f["has_card"] and not f["has_device"]


def test_amount_against_the_customers_own_30_day_average() -> None:
    store = FeatureStore()
    assert store.apply(tx(1, T0, amount="100000"))["amount_to_customer_avg_30d"] == 1.0
    store.apply(tx(2, T0 + timedelta(days=1), amount="200000"))
    f = store.apply(tx(3, T0 + timedelta(days=2), amount="600000"))
    assert f["amount_to_customer_avg_30d"] == pytest.approx(4.0)  # 600k / mean(100k, 200k)
    # 30 days later the first two have expired: the average is 600k alone.
    f = store.apply(tx(4, T0 + timedelta(days=31), amount="300000"))
    assert f["amount_to_customer_avg_30d"] == pytest.approx(0.5)


def test_distinct_cards_per_device_in_24h() -> None:
    store = FeatureStore()
    for i in range(5):
        f = store.apply(
            tx(i, T0 + timedelta(minutes=i), card_last4=f"{i:04d}", customer_id=f"c-{i}")
        )
    assert f["device_cards_24h"] == 5
    f = store.apply(tx(9, T0 + timedelta(hours=3), card_last4="0001"))  # a card seen before
    assert f["device_cards_24h"] == 5
    f = store.apply(tx(10, T0 + timedelta(hours=24, minutes=2, seconds=30), card_last4="0009"))
    # cards 0000-0002 were last used more than 24 h ago... except 0001 (at 03:00)
    assert f["device_cards_24h"] == 4  # 0001, 0003, 0004 and 0009


def test_failed_attempts_before_a_success_in_one_hour() -> None:
    store = FeatureStore()
    for i in range(4):
        store.apply(tx(i, T0 + timedelta(minutes=i), status="failed", error_code="402"))
    f = store.apply(tx(5, T0 + timedelta(minutes=10)))
    assert f["customer_failures_1h"] == 4
    assert f["device_failures_1h"] == 4
    f = store.apply(tx(6, T0 + timedelta(hours=1, minutes=5)))  # the failures are over an hour old
    assert f["customer_failures_1h"] == 0
    assert f["device_failures_1h"] == 0


def test_first_use_of_a_device_night_in_wib_and_country_mismatch() -> None:
    store = FeatureStore()
    f = store.apply(tx(1, T0))
    assert f["new_device"] is True
    assert f["hour_wib"] == 7 and f["is_night"] is False
    f = store.apply(tx(2, T0 + timedelta(hours=18, minutes=30)))  # 01:30 WIB next day
    assert f["new_device"] is False
    assert f["hour_wib"] == 1 and f["is_night"] is True
    f = store.apply(tx(3, T0 + timedelta(hours=19), device_id="d-2", card_country="US"))
    assert f["new_device"] is True
    assert f["customer_devices_24h"] == 2
    assert f["country_mismatch"] is True
    f = store.apply(
        tx(
            4,
            T0 + timedelta(hours=19),
            device_id="d-3",
            card_bin=None,
            card_last4=None,
            card_country=None,
        )
    )
    assert f["country_mismatch"] is False  # no card country: no mismatch


def test_merchant_fraud_rate_counts_labels_only_once_they_arrive() -> None:
    store = FeatureStore()
    for i in range(4):
        store.apply(tx(i, T0 + timedelta(hours=i), customer_id=f"c-{i}"))
    label = FraudLabel(transaction_id="trx-1", fraud=True, reported_at=T0 + timedelta(days=3))
    # Before the label arrives the merchant looks clean.
    f = store.apply(tx(10, T0 + timedelta(days=2), customer_id="c-9"))
    assert f["merchant_frauds_30d"] == 0 and f["merchant_fraud_rate_30d"] == 0.0
    assert store.add_label(label) is True
    assert store.add_label(label) is False  # the same label twice counts once
    assert (
        store.add_label(
            FraudLabel(transaction_id="trx-2", fraud=False, reported_at=T0 + timedelta(days=3))
        )
        is False
    )
    assert (
        store.add_label(
            FraudLabel(transaction_id="trx-unknown", fraud=True, reported_at=T0 + timedelta(days=3))
        )
        is False
    )
    f = store.apply(tx(11, T0 + timedelta(days=3, hours=1), customer_id="c-8"))
    assert f["merchant_frauds_30d"] == 1
    assert f["merchant_fraud_rate_30d"] == pytest.approx(1 / 6)
    # 30 days after the label arrived it no longer counts.
    f = store.apply(tx(12, T0 + timedelta(days=33, hours=1), customer_id="c-8"))
    assert f["merchant_frauds_30d"] == 0


def test_labels_for_transactions_older_than_the_retention_are_dropped() -> None:
    store = FeatureStore()
    store.apply(tx(1, T0))
    store.expire_labels(T0 + timedelta(days=46))
    late = FraudLabel(transaction_id="trx-1", fraud=True, reported_at=T0 + timedelta(days=46))
    assert store.add_label(late) is False


def test_kept_payments_expire_whether_applied_here_or_restored() -> None:
    """expire_labels skips its walk over the shards while no kept payment can be due; payments
    restored from a changelog (`held`) are due on time too, though this store never applied
    them."""
    store = FeatureStore()
    store.apply(tx(1, T0))
    store.expire_labels(T0 + timedelta(days=44))  # not due yet
    assert store.tx_merchants
    store.apply(tx(2, T0 + timedelta(days=3), customer_id="c-2"))
    store.expire_labels(T0 + timedelta(days=46))  # trx-1 is due, trx-2 not
    assert len(store.tx_merchants) == 1
    owner = FeatureStore()
    owner.apply(tx(3, T0), partition=2)
    taker = FeatureStore()
    taker.apply(tx(4, T0 + timedelta(days=40), customer_id="c-4"), partition=5)
    taker.tx_merchants.update(owner.tx_merchants)  # partition 2 restored from its changelog
    taker.held(2)
    taker.expire_labels(T0 + timedelta(days=46))
    assert all(key.startswith("tx:5/") for key in taker.tx_merchants)
    assert len(taker.tx_merchants) == 1


def test_redelivery_is_counted_once_and_gives_the_same_features() -> None:
    store = FeatureStore()
    store.apply(tx(1, T0, amount="50000"))
    store.apply(tx(2, T0 + timedelta(minutes=1), status="failed"))
    first = store.apply(tx(3, T0 + timedelta(minutes=2), amount="400000", device_id="d-9"))
    again = store.apply(tx(3, T0 + timedelta(minutes=2), amount="400000", device_id="d-9"))
    assert again == first
    assert first["customer_count_10m"] == 3
    # A retry (same id, later time and new status) is a new attempt and counts.
    retry = store.apply(tx(3, T0 + timedelta(minutes=3), amount="400000", device_id="d-9"))
    assert retry["customer_count_10m"] == 4
    assert retry["new_device"] is False


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=40 * 86400), min_size=1, max_size=30),
    repeats=st.lists(st.integers(min_value=0, max_value=29), max_size=10),
)
def test_redelivered_events_never_change_the_counts(offsets: list[int], repeats: list[int]) -> None:
    """Any redelivery right after the original leaves every later feature unchanged."""
    events = [tx(i, T0 + timedelta(seconds=s)) for i, s in enumerate(sorted(offsets))]
    plain, doubled = FeatureStore(), FeatureStore()
    for i, event in enumerate(events):
        a = plain.apply(event)
        b = doubled.apply(event)
        if i in repeats:
            assert doubled.apply(event) == b
        assert a == b


def test_state_stays_bounded_and_its_size_is_reported() -> None:
    store = FeatureStore()
    for i in range(2000):  # one attempt every 30 minutes for about 42 days
        store.apply(
            tx(i, T0 + timedelta(minutes=30 * i), device_id=f"d-{i % 3}", card_last4=f"{i % 7:04d}")
        )
    customer = decode(store.state["customer:c-1"])
    assert sum(len(level) // 4 for level in customer.levels) <= 10 + 12 + 24 + 30
    assert len(customer.seen) <= 49  # redelivery keys for 24 h only
    assert len(customer.devices) == 3
    assert len(decode(store.state["device:d-0"]).cards) <= 7
    # Full buckets and 49 redelivery keys (a payment every 30 minutes): about 1.1 KB stored.
    assert 0 < store.bytes_per_key("customer:") < 1200


def test_model_matrix_has_one_column_per_model_feature() -> None:
    store = FeatureStore()
    rows = [store.apply(tx(i, T0 + timedelta(minutes=i))) for i in range(3)]
    matrix = model_matrix(rows)
    assert matrix.shape == (3, len(MODEL_FEATURES))
    assert matrix[2, MODEL_FEATURES.index("customer_count_10m")] == 3
    assert set(FEATURES) - {"string"} <= set(MODEL_FEATURES) | {
        n for n in FEATURES if FEATURES[n] == "string"
    }


GRAIN = {"10m": (60, 10), "1h": (300, 12), "24h": (3600, 24), "7d": (86400, 7), "30d": (86400, 30)}


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=3 * 86400), min_size=1, max_size=40),
    failed=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_windows_match_a_brute_force_count(gaps: list[int], failed: list[bool]) -> None:
    """Counts, amounts and failures-before equal a direct count over the bucket definition."""
    store = FeatureStore()
    seen: list[tuple[int, int, bool]] = []
    at = int(T0.timestamp())
    for i, gap in enumerate(gaps):
        at += gap
        amount = 1000 * (i + 1)
        status = "failed" if failed[i] else "success"
        f = store.apply(tx(i, datetime.fromtimestamp(at, UTC), amount=str(amount), status=status))
        seen.append((at, amount, failed[i]))
        for window, (grain, span) in GRAIN.items():
            inside = [(t, a, x) for t, a, x in seen if 0 <= at // grain - t // grain < span]
            assert f[f"customer_count_{window}"] == len(inside), window
            assert f[f"device_amount_{window}"] == sum(a for _, a, _ in inside), window
        hour = [x for t, _, x in seen[:-1] if 0 <= at // 300 - t // 300 < 12]
        assert f["customer_failures_1h"] == sum(hour)


def test_a_partition_scope_keeps_one_entity_state_per_partition() -> None:
    store = FeatureStore()
    # One device, card and IP, used by customers of two partitions.
    for i in range(3):
        store.apply(tx(i, T0 + timedelta(minutes=i), customer_id="c-1"), scope=0)
    f = store.apply(tx(9, T0 + timedelta(minutes=4), customer_id="c-2"), scope=5)
    assert (f["device_count_10m"], f["card_count_10m"], f["ip_count_10m"]) == (1, 1, 1)
    assert f["merchant_count_10m"] == 1
    f = store.apply(tx(3, T0 + timedelta(minutes=5), customer_id="c-1"), scope=0)
    assert (f["device_count_10m"], f["merchant_count_10m"]) == (4, 4)
    assert sorted(k for k in store.state if k.startswith("device:")) == [
        "device:0/d-1",
        "device:5/d-1",
    ]
    # Without a scope, the same attempts share one state per entity.
    shared = FeatureStore()
    for i in range(3):
        shared.apply(tx(i, T0 + timedelta(minutes=i), customer_id="c-1"))
    f = shared.apply(tx(9, T0 + timedelta(minutes=4), customer_id="c-2"))
    assert (f["device_count_10m"], f["merchant_count_10m"]) == (4, 4)


def test_a_late_label_counts_for_the_merchant_state_of_its_own_partition() -> None:
    store = FeatureStore()
    store.apply(tx(1, T0, customer_id="c-1"), scope=2)
    store.apply(tx(2, T0, customer_id="c-2"), scope=3)
    assert store.add_label(FraudLabel(transaction_id="trx-1", fraud=True, reported_at=T0))
    f = store.apply(tx(3, T0 + timedelta(hours=1), customer_id="c-1"), scope=2)
    assert f["merchant_frauds_30d"] == 1
    f = store.apply(tx(4, T0 + timedelta(hours=1), customer_id="c-2"), scope=3)
    assert f["merchant_frauds_30d"] == 0


def test_a_payment_is_kept_in_its_partitions_shards_and_a_takeover_counts_its_label() -> None:
    """Live, a payment is kept for late labels in its input partition's shards (they go to that
    partition's changelog). A label read where the partition is not held waits, and counts once
    the partition is taken over; handed over, its payments are no longer this store's."""
    owner = FeatureStore()
    owner.apply(tx(1, T0, customer_id="c-1"), partition=3)
    assert list(owner.tx_merchants) and all(k.startswith("tx:3/") for k in owner.tx_merchants)
    other = FeatureStore()
    label = FraudLabel(transaction_id="trx-1", fraud=True, reported_at=T0 + timedelta(hours=1))
    assert other.add_label(label) is False  # not known here: it waits
    assert list(other.pending) == ["trx-1"]
    other.tx_merchants.update(owner.tx_merchants)  # partition 3 restored from its changelog
    other.held(3)
    assert not other.pending
    f = other.apply(tx(2, T0 + timedelta(hours=2), customer_id="c-9"), partition=3)
    assert f["merchant_frauds_30d"] == 1
    assert other.add_label(label) is False  # counted once
    other.released(3)
    later = FraudLabel(transaction_id="trx-2", fraud=True, reported_at=T0 + timedelta(hours=3))
    assert other.add_label(later) is False and "trx-2" in other.pending


def test_a_merchants_state_is_the_same_bytes_whatever_order_its_labels_count_in() -> None:
    """Labels count as they are read, as their payment comes or at a takeover: workers count
    the same labels in different orders, and the changelog must not tell them apart."""
    stores = FeatureStore(), FeatureStore()
    labels = [
        FraudLabel(transaction_id=f"trx-{i}", fraud=True, reported_at=T0 + timedelta(days=d))
        for i, d in ((1, 5), (2, 2))
    ]
    for store in stores:
        store.apply(tx(1, T0))
        store.apply(tx(2, T0 + timedelta(minutes=1)))
    for label in labels:
        assert stores[0].add_label(label)
    for label in reversed(labels):
        assert stores[1].add_label(label)
    assert stores[0].state["merchant:m-toko"] == stores[1].state["merchant:m-toko"]


def test_a_label_read_before_its_payment_counts_when_the_payment_comes() -> None:
    store = FeatureStore()
    label = FraudLabel(transaction_id="trx-5", fraud=True, reported_at=T0 + timedelta(days=1))
    assert store.add_label(label) is False
    assert store.apply(tx(5, T0))["merchant_frauds_30d"] == 0  # reported tomorrow
    assert not store.pending
    assert store.apply(tx(6, T0 + timedelta(days=1)))["merchant_frauds_30d"] == 1
    assert store.add_label(label) is False
    # a label never matched is forgotten once too old to count
    assert store.add_label(FraudLabel(transaction_id="trx-x", fraud=True, reported_at=T0)) is False
    store.expire_labels(T0 + timedelta(days=44))
    assert "trx-x" in store.pending
    store.expire_labels(T0 + timedelta(days=46))
    assert not store.pending
