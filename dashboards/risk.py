"""The Risk dashboard (analysts): decisions, scores, rule hits (shadow apart), versions."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as common_models

from dashboards import common as c
from models.outputs import Action
from streams import metrics as m

UID = "pantau-risk"

DECISIONS = c.counter(m.FRAUD_DECISIONS)
HITS = c.counter(m.FRAUD_RULE_HITS)
ENABLED = "enabled"  # FRAUD_RULE_HITS `mode` label: rules that act
SHADOW = "shadow"  # rules that only report (being evaluated before they act)


def decisions_by_action() -> c.Panel:
    """Decisions per second by action."""
    return c.timeseries_panel(
        "Decisions by action",
        "Fraud decisions per second: approve, review, decline.",
        "ops",
        c.targets((c.rate(DECISIONS, ["action"]), "{{action}}")),
        stacked=True,
    )


def flagged_share_by_channel() -> c.Panel:
    """Share of decisions that are review or decline, by channel."""
    flagged = f"{Action.REVIEW}|{Action.DECLINE}"
    return c.timeseries_panel(
        "Reviewed or declined share by channel",
        "Decisions sent to review or declined / all decisions, by payment channel.",
        "percentunit",
        c.targets(
            (
                f"{c.rate(DECISIONS, ['channel'], action=flagged)} / "
                f"{c.rate(DECISIONS, ['channel'])}",
                "{{channel}}",
            )
        ),
        minimum=None,
    )


def amount_flagged() -> c.Panel:
    """IDR sent to review or declined, per hour."""
    flagged = f"{Action.REVIEW}|{Action.DECLINE}"
    return c.timeseries_panel(
        "IDR reviewed and declined (per hour)",
        "Amount of the payments sent to review or declined over the last hour, in IDR.",
        "short",
        c.targets(
            (
                c.increase(c.counter(m.FRAUD_AMOUNT_IDR), ["action"], window="1h", action=flagged),
                "{{action}}",
            )
        ),
        stacked=True,
    )


def score_distribution() -> c.Panel:
    """Fraud scores by bucket over the time range."""
    return c.bar_gauge(
        "Score distribution",
        "Decisions by fraud score (0–100) over the dashboard's time range. Review starts at 65 "
        "and decline at 85 by default.",
        "short",
        [
            c.distribution_query(
                f"sum by (le) (increase({c.bucket(m.FRAUD_SCORE)}[$__range]))"
            )
        ],
    )


def score_quantiles() -> c.Panel:
    """Score quantiles over time."""
    return c.timeseries_panel(
        "Score p50 / p95 / p99",
        "Fraud score quantiles over time: a shift means traffic, the model or the rules changed.",
        "none",
        c.targets(
            (c.quantile(0.5, m.FRAUD_SCORE), "p50"),
            (c.quantile(0.95, m.FRAUD_SCORE), "p95"),
            (c.quantile(0.99, m.FRAUD_SCORE), "p99"),
        ),
    )


def hits_enabled() -> c.Panel:
    """Hits per enabled rule."""
    return c.timeseries_panel(
        "Rule hits (enabled rules)",
        "Hits per second of each rule that acts on decisions.",
        "ops",
        c.targets((c.rate(HITS, ["rule"], mode=ENABLED), "{{rule}}")),
        stacked=True,
    )


def hits_shadow() -> c.Panel:
    """Hits per shadow rule, kept apart."""
    return c.timeseries_panel(
        "Rule hits (shadow rules)",
        "Hits per second of shadow rules: reported, never acted on. Compare with the enabled "
        "rules before switching one on.",
        "ops",
        c.targets((c.rate(HITS, ["rule"], mode=SHADOW), "{{rule}}")),
        stacked=True,
    )


def versions() -> c.Panel:
    """Rule pack and model versions making decisions now."""
    return (
        c.stat(
            "Rule pack and model versions",
            "The rule pack and model each worker decides with (two rows during a rollout).",
            "none",
            c.targets(
                (
                    f"count by (rules_version, model_version) ({c.info(m.FRAUD_VERSIONS)})",
                    "rules {{rules_version}} · model {{model_version}}",
                )
            ),
            width=c.HALF,
        )
        .text_mode(common_models.BigValueTextMode.NAME)
    )


def rule_packs() -> c.Panel:
    """Rule packs received, accepted or rejected."""
    return c.stat(
        "Rule packs received (24 h)",
        "Rule packs received on pantau.rules in the last 24 hours, by result (a rejected pack "
        "leaves the previous one active).",
        "short",
        c.targets(
            (c.increase(c.counter(m.FRAUD_RULE_PACKS), ["result"], window="1d"), "{{result}}")
        ),
    )


def scoring_time() -> c.Panel:
    """Scoring time per micro-batch."""
    return c.stat(
        "Scoring time p99 per batch",
        "99th percentile time to score one micro-batch (features, rules, model, decisions).",
        "s",
        c.targets((c.quantile(0.99, m.FRAUD_SCORING_SECONDS), "p99")),
    )


def build() -> db.Dashboard:
    """The Risk dashboard."""
    return c.dashboard(
        UID,
        "Pantau / Risk",
        "What is the fraud engine deciding, why, and with which rules and model?",
        [
            ("Versions", [versions(), rule_packs(), scoring_time()]),
            ("Decisions", [decisions_by_action(), flagged_share_by_channel(), amount_flagged(),
                           score_distribution(), score_quantiles()]),
            ("Rules", [hits_enabled(), hits_shadow()]),
        ],
    )
