"""Feature state eviction: a key leaves only once it can change no feature, a chunk at a time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import (
    DAY,
    EVICT_LATENESS,
    SWEEP_EVERY,
    FeatureStore,
    decode,
    expires_at,
)
from models.inputs import FraudLabel, Transaction
from tests.unit.test_features import T0, bare, tx


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _copy(store: FeatureStore) -> FeatureStore:
    return FeatureStore(state=dict(store.state), tx_merchants=dict(store.tx_merchants))


def _expiry(store: FeatureStore, key: str) -> int:
    return expires_at(decode(store.state[key]))


_event = st.tuples(
    st.integers(min_value=0, max_value=40 * DAY),  # gap before it (seconds)
    st.sampled_from(["c-1", "c-2"]),
    st.sampled_from(["d-1", "d-2", ""]),  # "" = no device
    st.sampled_from(["0001", "0002", ""]),  # "" = no card
    st.sampled_from(["m-1", "m-2"]),
    st.booleans(),  # failed
    st.one_of(st.none(), st.integers(min_value=0, max_value=40 * DAY)),  # its label's delay
)


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(_event, min_size=1, max_size=12),
    probe=_event,
    target=st.integers(min_value=0, max_value=50),
    after=st.integers(min_value=0, max_value=2 * DAY),
)
def test_a_key_past_its_expiry_reads_as_no_state_at_all(
    history: list[tuple[Any, ...]], probe: tuple[Any, ...], target: int, after: int
) -> None:
    """Whatever the history, deleting every key whose `expires_at` is past changes no feature of
    a transaction at that time: what eviction relies on. The transaction comes just after one
    key's expiry, where an expiry too early would show."""
    store = FeatureStore()
    at = 0
    for i, (gap, customer, device, card, merchant, failed, delay) in enumerate(history):
        at += gap
        store.apply(_tx(i, at, customer, device, card, merchant, failed))
        if delay is not None:  # confirmed fraud, reported `delay` after the payment
            reported = _at(at + delay)
            store.add_label(FraudLabel(transaction_id=f"trx-{i}", fraud=True, reported_at=reported))
    keys = sorted(store.state)
    now = max(at, _expiry(store, keys[target % len(keys)]) - int(T0.timestamp())) + after
    _, customer, device, card, merchant, failed, _ = probe
    event = _tx(999, now, customer, device, card, merchant, failed)
    evicted = _copy(store)
    gone = [k for k in store.state if _expiry(store, k) <= int(_at(now).timestamp())]
    for key in gone:
        del evicted.state[key]
    assert evicted.apply(event) == store.apply(event)


def _tx(
    i: int, at: int, customer: str, device: str, card: str, merchant: str, failed: bool
) -> Transaction:
    fields: dict[str, Any] = {
        "customer_id": customer,
        "merchant_id": merchant,
        "status": "failed" if failed else "success",
        "device_id": device or None,
    }
    if card:
        fields["card_last4"] = card
    else:
        fields.update(method="ewallet", channel="OVO", card_bin=None, card_last4=None)
    return tx(i, _at(at), **fields)


def test_a_second_before_its_expiry_the_state_still_counts() -> None:
    """The expiry is not early: one second before it, the state changes a feature."""
    store = FeatureStore()
    store.apply(_tx(1, 0, "c-1", "d-1", "0001", "m-1", False))  # a device: 90 days
    store.apply(_tx(2, 0, "c-2", "", "", "m-1", False))  # no device: the 30-day window
    for customer, device, card in (("c-1", "d-1", "0001"), ("c-2", "", "")):
        key = f"customer:{customer}"
        until = _expiry(store, key) - int(T0.timestamp())
        assert until == (90 * DAY if device else 30 * DAY)
        for at, same in ((until - 1, False), (until, True)):
            evicted = _copy(store)
            del evicted.state[key]
            probe = _tx(9, at, customer, device, card, "m-2", False)
            assert (evicted.apply(probe) == _copy(store).apply(probe)) is same, (customer, at)


def test_a_device_unused_for_90_days_is_new_again() -> None:
    store = FeatureStore()
    store.apply(_tx(1, 0, "c-1", "d-1", "", "m-1", False))
    store.apply(_tx(2, 0, "c-1", "d-2", "", "m-1", False))
    assert not store.apply(_tx(3, 89 * DAY, "c-1", "d-1", "", "m-1", False))["new_device"]
    assert store.apply(_tx(4, 89 * DAY + 1, "c-1", "d-2", "", "m-1", False))["new_device"] is False
    # d-1 last used at day 89: new again at day 179, whether or not other devices were used
    assert store.apply(_tx(5, 179 * DAY, "c-1", "d-1", "", "m-1", False))["new_device"]
    alone = FeatureStore()
    alone.apply(_tx(1, 0, "c-1", "d-1", "", "m-1", False))
    assert alone.apply(_tx(2, 90 * DAY, "c-1", "d-1", "", "m-1", False))["new_device"]


def test_a_sweep_evicts_what_expired_a_week_before_the_newest_transaction_in_chunks() -> None:
    store = FeatureStore()
    for i in range(30):  # 30 customers on day 0, with their devices, IPs and cards
        store.apply(
            tx(
                i,
                _at(i),
                customer_id=f"c-{i}",
                device_id=f"d-{i}",
                ip=f"10.0.0.{i}",
                card_last4=f"{i:04d}",
            )
        )
    assert store.expire(budget=10) is not None  # the first sweep: nothing has expired yet
    while (sweep := store.expire(budget=10)) is not None and sweep.kept is None:
        assert not sweep.evicted
    assert store.expire() is None  # the next sweep waits a day of event time
    # 40 days on, c-0..c-14 come back without device or card; the others are idle. Devices,
    # cards and IPs expire 30 days after their last use; customers are kept 90 (their devices).
    later = 40 * DAY
    for i in range(15):
        store.apply(bare(100 + i, _at(later + i), customer_id=f"c-{i}"))
    before = dict(store.state)
    now = int(_at(later + 14).timestamp())
    due = {k for k in before if _expiry(store, k) <= now - EVICT_LATENESS}
    assert {k.split(":")[0] for k in due} == {"card", "device", "ip"}
    assert len(due) == 90
    evicted: dict[str, int] = {}
    calls = 0
    while True:
        keys = set(store.state)
        sweep = store.expire(budget=25)
        assert sweep is not None
        calls += 1
        assert len(keys - set(store.state)) == sum(sweep.evicted.values())
        for entity, n in sweep.evicted.items():
            evicted[entity] = evicted.get(entity, 0) + n
        if sweep.kept is not None:
            break
    assert calls == -(-len(before) // 25)  # every key examined once, 25 per call
    assert set(before) - set(store.state) == due
    assert evicted == {"card": 30, "device": 30, "ip": 30}
    assert sweep.kept == {"customer": 30, "merchant": 1}
    # A week before the newest transaction: a key expiring later than that stays until it is due.
    store.apply(tx(200, _at(later + SWEEP_EVERY), customer_id="c-0"))
    while (sweep := store.expire()) is not None and sweep.kept is None:
        pass
    assert "customer:c-20" in store.state  # expires at day 90
    store.apply(tx(201, _at(97 * DAY), customer_id="c-0"))
    while (sweep := store.expire()) is not None and sweep.kept is None:
        pass
    assert "customer:c-20" in store.state  # day 90 is less than a week before day 97
    store.apply(tx(202, _at(97 * DAY + SWEEP_EVERY), customer_id="c-0"))
    while (sweep := store.expire()) is not None and sweep.kept is None:
        pass
    assert "customer:c-20" not in store.state and "customer:c-0" in store.state


def test_a_sweep_forgets_transactions_too_old_to_be_labelled_without_any_label() -> None:
    store = FeatureStore()
    store.apply(tx(1, T0, customer_id="c-1"))
    store.expire()
    assert len(store.tx_merchants) == 1
    store.apply(tx(2, T0 + timedelta(days=46), customer_id="c-2"))
    store.expire()
    assert len(store.tx_merchants) == 1  # only trx-2's
    assert not store.add_label(FraudLabel(transaction_id="trx-1", fraud=True, reported_at=T0))
