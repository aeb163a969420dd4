"""Decisions from rules and the model; the rules stage swaps packs atomically or refuses them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from models.features import FeatureStore
from models.inputs import Transaction
from models.outputs import Action
from rules.engine import CompiledPack
from rules.pack import RulePack, default_pack
from streams.core import Record
from streams.fraud import FraudScorer, LabelsStage, RulesStage, pack_message
from streams.topics import Topics

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TOPICS = Topics()


def tx(i: int, **fields: Any) -> Transaction:
    base: dict[str, Any] = {
        "transaction_id": f"trx-{i}", "merchant_id": "m-1", "customer_id": "c-1",
        "amount": "150000.00", "currency": "IDR", "method": "card", "channel": "VISA",
        "status": "success", "created_at": (T0 + timedelta(seconds=i)).isoformat(),
        "card_bin": "411111", "card_last4": "1234", "card_country": "ID",
        "device_id": "d-1", "ip": "203.0.113.7", "ip_country": "ID",
    }  # fmt: skip
    base.update(fields)
    return Transaction.model_validate(base)


def pack(version: int = 1, **overrides: Any) -> RulePack:
    data: dict[str, Any] = {
        "id": "t", "version": version, "model_weight": 100,
        "rules": [
            {"id": "big", "description": "big amount", "expression": "amount > 1000000.0",
             "action": "score", "score": 70, "reason": "IDR {amount:,.0f}"},
            {"id": "huge", "description": "huge amount", "expression": "amount > 5000000.0",
             "action": "decline", "score": 0},
            {"id": "vip", "description": "allow-listed customer",
             "expression": 'customer_id == "c-vip"', "action": "allow", "score": -50},
            {"id": "foreign", "description": "foreign card", "expression": "country_mismatch",
             "action": "review", "score": 10, "mode": "shadow"},
            {"id": "retry", "description": "failed before", "expression":
             "customer_failures_1h >= 1", "action": "review", "score": 5},
        ],
    }  # fmt: skip
    data.update(overrides)
    return RulePack.model_validate(data)


def scorer(p: RulePack | None = None) -> FraudScorer:
    return FraudScorer(CompiledPack(p or pack()), model=None, store=FeatureStore())


def test_score_thresholds_and_forcing_actions() -> None:
    s = scorer()
    small, big, huge, vip = s.score(
        [
            tx(1, amount="100000"),
            tx(2, amount="2000000"),
            tx(3, amount="6000000"),
            tx(4, amount="2000000", customer_id="c-vip"),
        ]
    )
    assert (small.action, small.score, small.rule_hits) == (Action.APPROVE, 0.0, [])
    assert big.action == Action.REVIEW and big.score == 70.0  # ≥ 65 by threshold
    assert big.reasons == ["IDR 2,000,000", "score 70 ≥ review threshold"]
    assert huge.action == Action.DECLINE and huge.score == 70.0  # forced by the decline rule
    assert vip.action == Action.APPROVE and vip.score == 20.0  # allow forces approve
    for decision in (small, big, huge, vip):
        assert decision.rules_version == "t-1"
        assert decision.decided_at == T0 + timedelta(seconds=int(decision.transaction_id[4:]))
        assert decision.model_version is None and decision.model_score is None


def test_shadow_hits_are_reported_but_never_act() -> None:
    (decision,) = scorer().score([tx(1, card_country="US")])
    assert [(h.rule_id, h.shadow) for h in decision.rule_hits] == [("foreign", True)]
    assert decision.action == Action.APPROVE and decision.score == 0.0
    assert decision.reasons == []


def test_review_rule_forces_review_below_the_threshold() -> None:
    (_, second) = scorer().score([tx(1, status="failed"), tx(2)])
    assert second.score == 5.0 and second.action == Action.REVIEW
    assert second.reasons == ["failed before"]


def test_the_default_model_and_pack_decide_with_their_versions() -> None:
    from streams.fraud import load_compiled, load_model_dir

    s = FraudScorer(load_compiled(None), load_model_dir(None))
    decisions = s.score([tx(i) for i in range(3)])
    assert all(d.rules_version == default_pack().label for d in decisions)
    assert all(d.model_version and d.model_version.startswith("fraud-") for d in decisions)
    assert all(d.model_score is not None and 0 <= d.model_score <= 1 for d in decisions)


def rules_record(value: bytes, key: str = "t") -> Record:
    return Record(topic=TOPICS.rules, value=value, key=key.encode())


def test_rules_stage_swaps_packs_between_batches_and_refuses_broken_ones() -> None:
    s = scorer()
    stage = RulesStage(TOPICS, s)
    assert stage.broadcast is True
    assert s.score([tx(1, amount="2000000")])[0].action == Action.REVIEW

    newer = pack(2, thresholds={"review": 80, "decline": 95})
    assert stage.process([rules_record(pack_message(newer))]) == []
    decision = s.score([tx(2, amount="2000000")])[0]
    assert decision.rules_version == "t-2" and decision.action == Action.APPROVE

    broken = pack(3)
    broken.rules[0].expression = "amount > > 1"
    out = stage.process([rules_record(pack_message(broken))])
    alerts = [o for o in out if o.topic == TOPICS.alerts]
    assert [(a.value["alert"], a.value["status"]) for a in alerts] == [
        ("rule_pack_rejected", "firing")
    ]
    assert "t-3 refused, t-2 stays active" in alerts[0].value["summary"]
    assert "Syntax error" in alerts[0].value["summary"]
    assert any(o.topic == TOPICS.deadletter for o in out)
    assert s.score([tx(3, amount="2000000")])[0].rules_version == "t-2"

    # Not even a pack: refused as well; the alert is already firing, so no second message.
    out = stage.process([rules_record(b'{"id": "t"}')])
    assert [o.topic for o in out] == [TOPICS.deadletter]

    # A good pack afterwards resolves the alert.
    out = stage.process([rules_record(pack_message(pack(4)))])
    assert [(o.value["alert"], o.value["status"]) for o in out] == [
        ("rule_pack_rejected", "resolved")
    ]
    assert s.score([tx(4)])[0].rules_version == "t-4"


def test_labels_stage_feeds_the_merchant_fraud_rate() -> None:
    s = scorer()
    stage = LabelsStage(TOPICS, s.store)
    s.score([tx(1), tx(2)])
    label = {"transaction_id": "trx-1", "fraud": True,
             "reported_at": (T0 + timedelta(days=2)).isoformat()}  # fmt: skip
    out = stage.process([Record(topic=TOPICS.labels, value=orjson.dumps(label)),
                         Record(topic=TOPICS.labels, value=b"not json")])  # fmt: skip
    assert [o.topic for o in out] == [TOPICS.deadletter]
    s.score([tx(3, created_at=(T0 + timedelta(days=2, hours=1)).isoformat())])
    row = s.rows[0]
    assert row["merchant_frauds_30d"] == 1
    assert row["merchant_fraud_rate_30d"] == 1 / 3


def test_scoring_counts_decisions_hits_scores_and_versions() -> None:
    from streams import metrics

    def value(name: str, **labels: str) -> float:
        found = metrics.REGISTRY.get_sample_value(name, labels)
        return found or 0.0

    before_review = value("pantau_fraud_decisions_total", action="review", channel="VISA")
    before_shadow = value("pantau_fraud_rule_hits_total", rule="foreign", mode="shadow")
    before_batches = value("pantau_fraud_scoring_duration_seconds_count")
    before_scores = value("pantau_fraud_score_count")
    s = scorer(pack(9))
    s.score([tx(1, amount="2000000"), tx(2, card_country="US")])
    assert (
        value("pantau_fraud_decisions_total", action="review", channel="VISA") == before_review + 1
    )
    assert value("pantau_fraud_rule_hits_total", rule="foreign", mode="shadow") == before_shadow + 1
    assert value("pantau_fraud_scoring_duration_seconds_count") == before_batches + 1
    assert value("pantau_fraud_score_count") == before_scores + 2
    assert value("pantau_fraud_info", rules_version="t-9", model_version="none") == 1.0


def test_a_redelivered_attempt_gets_the_decision_it_already_had() -> None:
    s = scorer()
    first = s.score([tx(i, status="failed") for i in range(3)] + [tx(3)])
    # The first attempt comes back after the others (its batch was not acknowledged).
    again = s.score([tx(0, status="failed"), tx(4)])
    assert again[0] == first[0]
    assert again[1].rules_version == "t-1"
    # Remembered for an hour of event time, then forgotten (bounded memory).
    s.score([tx(5000)])
    assert "trx-0" not in {d.transaction_id for d in s.recent.values()}
    assert len(s.recent) == 1


def test_the_decision_memory_is_bounded_by_count_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.fraud

    monkeypatch.setattr(streams.fraud, "MAX_REMEMBERED_DECISIONS", 10)
    s = scorer()
    s.score([tx(i) for i in range(25)])  # all within the hour
    assert len(s.recent) == 10
    assert {d.transaction_id for d in s.recent.values()} == {f"trx-{i}" for i in range(15, 25)}


def test_unknown_channels_are_counted_as_other() -> None:
    from streams import metrics

    before = metrics.REGISTRY.get_sample_value(
        "pantau_fraud_decisions_total", {"action": "approve", "channel": "other"}
    )
    scorer().score([tx(1, channel="MERCHANT_X1"), tx(2, channel="MERCHANT_X2")])
    after = metrics.REGISTRY.get_sample_value(
        "pantau_fraud_decisions_total", {"action": "approve", "channel": "other"}
    )
    assert (after or 0) - (before or 0) == 2


def test_decisions_are_valid_contract_values() -> None:
    """Decisions are built without per-payment validation: they must validate all the same."""
    from models.outputs import FraudDecision

    s = scorer()
    for decision in s.score([tx(1, amount="2000000", card_country="US"), tx(2)]):
        dumped = decision.model_dump(mode="json")
        assert FraudDecision.model_validate(dumped).model_dump(mode="json") == dumped
        assert dumped["decided_at"].endswith("Z") and dumped["schema_version"] == 1
