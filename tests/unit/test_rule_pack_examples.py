"""Every rule of the default pack matches its own examples, both through CEL and the numpy path."""

from __future__ import annotations

import pytest

from rules.engine import batch_columns, compile_expression, example_row
from rules.pack import default_pack

PACK = default_pack()
CATEGORIES = {
    "card_testing": ["card_testing_device", "card_testing_small_amounts"],
    "account_takeover": ["ato_new_device_big_amount", "ato_device_hopping"],
    "velocity": ["velocity_customer_burst", "velocity_ip_burst"],
    "amount_outlier": ["amount_outlier"],
    "high_risk_merchant": ["high_risk_merchant"],
    "country_mismatch": ["country_mismatch"],
    "amount_limits": [
        "amount_limit_card_ewallet",
        "amount_limit_daily_customer",
        "amount_limit_hard",
    ],
}


def test_the_default_pack_covers_every_fraud_pattern() -> None:
    ids = {rule.id for rule in PACK.rules}
    for category, rules in CATEGORIES.items():
        assert set(rules) <= ids, category
    assert PACK.thresholds.review == 65 and PACK.thresholds.decline == 85


@pytest.mark.parametrize("rule", PACK.rules, ids=[r.id for r in PACK.rules])
def test_rule_matches_its_examples(rule) -> None:  # type: ignore[no-untyped-def]
    compiled = compile_expression(rule.expression)
    assert compiled.vector is not None, compiled.fallback_reason  # default rules stay vectorised
    assert rule.examples.match and rule.examples.no_match
    cases = [(e, True) for e in rule.examples.match] + [(e, False) for e in rule.examples.no_match]
    rows = [example_row(example) for example, _ in cases]
    batch = compiled.batch(batch_columns(rows, set(compiled.names)), rows, len(rows))
    for (example, expected), row, vector in zip(cases, rows, batch, strict=True):
        assert compiled.row(row) is expected, example
        assert bool(vector) is expected, example
