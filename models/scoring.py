"""Decisions: rule hits and the model's probability combined into a 0-100 score and an action."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from models.outputs import Action, FraudDecision, RuleHit

_RANK = {Action.APPROVE: 0, Action.REVIEW: 1, Action.DECLINE: 2}


def reason_text(template: str | None, description: str, row: Mapping[str, Any]) -> str:
    """A rule's reason with the row's values filled in (plain names only), else its description."""
    if not template:
        return description
    try:
        for _, name, _, _ in string.Formatter().parse(template):
            if name is not None and (not name.isidentifier() or name not in row):
                return description
        return template.format_map(row)
    except (ValueError, TypeError, KeyError, IndexError):
        return description


def decide(
    *,
    transaction_id: str,
    decided_at: datetime,
    row: Mapping[str, Any],
    rules: Sequence[Any],
    hits: np.ndarray,
    pack: Any,
    model_score: float | None,
    model_version: str | None,
    channel: str | None = None,
    method: str | None = None,
    amount: Decimal | None = None,
) -> FraudDecision:
    """One decision: score = model_weight × probability + the scores of enabled hits (0-100);
    an enabled decline hit declines, else an allow hit approves, else a review hit reviews at least;
    without a forcing hit the pack's thresholds decide. Shadow hits are reported, never acted on."""
    total = pack.model_weight * model_score if model_score is not None else 0.0
    rule_hits: list[RuleHit] = []
    reasons: list[str] = []
    forced: set[str] = set()
    for rule, hit in zip(rules, hits, strict=True):
        if not hit:
            continue
        shadow = rule.mode == "shadow"
        rule_hits.append(
            RuleHit(rule_id=rule.id, action=rule.action.value, score=rule.score, shadow=shadow)
        )
        if shadow:
            continue
        total += rule.score
        if rule.action.value != "score":
            forced.add(rule.action.value)
        reasons.append(reason_text(rule.reason, rule.description, row))
    score = round(min(100.0, max(0.0, total)), 2)
    thresholds = pack.thresholds
    if score >= thresholds.decline:
        action = Action.DECLINE
    elif score >= thresholds.review:
        action = Action.REVIEW
    else:
        action = Action.APPROVE
    by_score = action
    if "decline" in forced:
        action = Action.DECLINE
    elif "allow" in forced:
        action = Action.APPROVE
    elif "review" in forced and _RANK[action] < _RANK[Action.REVIEW]:
        action = Action.REVIEW
    if model_score is not None and model_score >= 0.5:
        reasons.append(f"model score {model_score:.2f}")
    if action == by_score and action != Action.APPROVE:
        reasons.append(f"score {score:g} ≥ {action.value} threshold")
    return FraudDecision(
        transaction_id=transaction_id,
        action=action,
        score=score,
        model_score=None if model_score is None else round(float(model_score), 6),
        model_version=model_version,
        rules_version=pack.label,
        rule_hits=rule_hits,
        reasons=reasons,
        decided_at=decided_at,
        channel=channel,
        method=method,
        amount=amount,
    )
