"""The metrics module: build info and the bounded dead-letter reason label."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from streams import metrics


def test_build_info_names_the_installed_version() -> None:
    metrics.set_build_info()
    text = metrics.exposition().decode()
    assert 'pantau_build_info{python="' in text
    assert f'version="{version("pantau")}"' in text


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("amount: must be ≤ 1000000000", "amount"),
        ("line 7: topic must be one of the input topics", "unreadable_line"),
        ("not valid JSON: unexpected character", "invalid_json"),
        ("must be a JSON object, got list", "not_an_object"),
        ("value too large: 5000 bytes > max_message_bytes 2048", "too_large"),
        ("extra.note: holds a card number (411111******1111)", "card_number"),
        ("untrusted_callback: xendit signature_mismatch", "untrusted_callback"),
        ("headers.x-token: Field required", "headers"),
        ("stage payments failed: KeyError('x')", "other"),
        ("x" * 200 + ": y", "other"),
    ],
)
def test_reason_class_is_bounded(reason: str, label: str) -> None:
    assert metrics.reason_class(reason) == label


def test_fraud_amounts_are_counted_by_action() -> None:
    from decimal import Decimal

    from models.outputs import FraudDecision

    def amount(action: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "pantau_fraud_amount_idr_total", {"action": action}
        )
        return value or 0.0

    before = amount("review")
    decision = FraudDecision(
        transaction_id="trx-1", action="review", score=70.0, rules_version="core-1",
        decided_at="2026-11-21T03:00:00Z", channel="BCA", amount=Decimal("150000.50"),
    )  # fmt: skip
    metrics.observe_fraud_batch([decision], 0.001)
    assert amount("review") == before + 150000.5


def test_counters_count_nothing_while_replaying_and_gauges_still_follow() -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    sent = value("pantau_alert_notifications_total", alert="replayed", status="firing")
    repeats = value("pantau_duplicate_attempts_total")
    with metrics.replaying():
        metrics.child(metrics.ALERT_NOTIFICATIONS, "replayed", "firing").inc()
        metrics.count(metrics.DUPLICATE_ATTEMPTS)
        metrics.child(metrics.ALERTS_FIRING, "replayed").inc()
    assert value("pantau_alert_notifications_total", alert="replayed", status="firing") == sent
    assert value("pantau_duplicate_attempts_total") == repeats
    assert value("pantau_alerts_firing", alert="replayed") == 1
    metrics.child(metrics.ALERT_NOTIFICATIONS, "replayed", "firing").inc()
    metrics.count(metrics.DUPLICATE_ATTEMPTS)
    assert value("pantau_alert_notifications_total", alert="replayed", status="firing") == sent + 1
    assert value("pantau_duplicate_attempts_total") == repeats + 1
