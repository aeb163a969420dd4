"""Idle feature keys leave a worker's state, its changelog (tombstones to the owner's partition)
and its metrics as the payments stage goes on, and every decision stays the one it would be."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from models.inputs import Transaction
from streams import metrics
from streams.core import Record
from streams.payments import PaymentsStage
from streams.pipeline import build_stages
from streams.settings import Settings
from tests.unit.test_features import T0, bare, tx

SETTINGS = Settings()


def _payments() -> PaymentsStage:
    stage = next(s for s in build_stages(SETTINGS) if isinstance(s, PaymentsStage))
    assert stage.durable is not None
    return stage


def _records(txs: Sequence[tuple[int, Transaction]], start: int) -> list[Record]:
    return [
        Record(
            SETTINGS.topics.transactions,
            t.model_dump_json().encode(),
            t.customer_id.encode(),
            partition=p,
            offset=start + i,
        )
        for i, (p, t) in enumerate(txs)
    ]


def _sample(name: str, entity: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, {"entity": entity})
    return value or 0.0


def test_idle_keys_are_evicted_with_a_tombstone_in_their_partition_and_counted() -> None:
    stage, clean = _payments(), _payments()
    assert clean.fraud is not None
    getattr(clean.fraud, "store").expire = lambda: None  # noqa: B009  (a store never evicting)
    day0 = [
        (
            i % 2,
            tx(
                i,
                T0 + timedelta(seconds=i),
                customer_id=f"c-{i}",
                device_id=f"d-{i}",
                ip=f"10.0.0.{i}",
                card_last4=f"{i:04d}",
            ),
        )
        for i in range(10)
    ]
    for s in (stage, clean):
        s.process(_records(day0, 0))
    assert stage.durable is not None
    stage.durable.changes()
    evicted_before = {e: _sample("pantau_feature_keys_evicted_total", e) for e in ("card", "ip")}
    # 40 days on, c-0 pays again by e-wallet: the cards, devices and IPs (30 days) have been idle
    # for more than a week past their expiry; the customers (90 days: their devices) have not.
    later = [(0, bare(100, T0 + timedelta(days=40), customer_id="c-0"))]
    outs = stage.process(_records(later, 10))
    assert [o.value for o in outs] == [o.value for o in clean.process(_records(later, 10))]
    changes = stage.durable.changes()
    tombstones = {p: sorted(k for k, v in keys.items() if v is None) for p, keys in changes.items()}
    assert tombstones == {
        p: sorted(
            f"{e}:{k}"
            for i in range(p, 10, 2)
            for e, k in (("card", f"411111:{i:04d}"), ("device", f"d-{i}"), ("ip", f"10.0.0.{i}"))
        )
        for p in (0, 1)
    }
    fraud = stage.fraud
    assert fraud is not None
    state = getattr(fraud, "store").state  # noqa: B009
    assert sorted(k.split(":")[0] for k in state) == ["customer"] * 10 + ["merchant"]
    for entity in ("card", "ip"):
        assert _sample("pantau_feature_keys_evicted_total", entity) == evicted_before[entity] + 10
    assert _sample("pantau_feature_keys", "customer") == 10
    assert _sample("pantau_feature_keys", "device") == 0
    # 100 days on, the customers go too: their devices were last used on day 0 (c-0's windows,
    # from day 40, end on day 70). c-1 pays with its old device: new, with or without eviction.
    last = [(1, tx(101, T0 + timedelta(days=100), customer_id="c-1", device_id="d-1"))]
    outs = stage.process(_records(last, 11))
    assert [o.value for o in outs] == [o.value for o in clean.process(_records(last, 11))]
    assert sorted(k for k in state if k.startswith("customer:")) == ["customer:c-1"]
    assert getattr(fraud, "rows")[0]["new_device"]  # noqa: B009
