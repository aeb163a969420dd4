"""Output contracts: what Pantau sends on each output topic (DESIGN.md §3b)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from models.common import SCHEMA_VERSION, Money, OutputContract, Rate, UtcDatetime
from models.inputs import Transaction


class VatMechanism(StrEnum):
    """How VAT is collected for a payment."""

    STANDARD = "standard"
    EXEMPT = "exempt"
    REVERSE_CHARGE = "reverse_charge"


class Action(StrEnum):
    """A fraud decision's action."""

    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


class ChannelState(StrEnum):
    """States of the per-channel failover state machine."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED_OVER = "failed_over"
    PROBING = "probing"


class FailoverAction(StrEnum):
    """What a failover signal asks routers to do (one per state transition)."""

    DEGRADE = "degrade"  # healthy → degraded: keep routing, watch closely
    RECOVER = "recover"  # degraded → healthy
    FAILOVER = "failover"  # → failed_over: route away, keep probe_ratio of traffic
    PROBE = "probe"  # failed_over → probing: probe traffic is being judged
    RESTORE = "restore"  # probing → healthy: route normally again


class AlertStatus(StrEnum):
    """An alert is sent once when it starts firing and once when it resolves."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """Alert severity."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class VatTag(OutputContract):
    """VAT (PPN) and luxury-goods tax (PPnBM) of one successful payment."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(default=SCHEMA_VERSION, exclude=True)
    category: str
    mechanism: VatMechanism
    rate: Rate
    base: Money
    amount: Money
    luxury_tax_rate: Rate
    luxury_tax_amount: Money
    table_version: str
    flags: list[str] = Field(default_factory=list)


class FraudSummary(OutputContract):
    """The fraud decision's gist, carried inside payments.enriched."""

    schema_version: int = Field(default=SCHEMA_VERSION, exclude=True)
    action: Action
    score: float
    rules_version: str | None = None
    model_version: str | None = None


class EnrichedTransaction(Transaction):
    """payments.enriched: the Transaction plus its VAT tag and fraud summary."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    vat: VatTag | None = None
    fraud: FraudSummary | None = None


class RuleHit(OutputContract):
    """One rule that matched a transaction."""

    schema_version: int = Field(default=SCHEMA_VERSION, exclude=True)
    rule_id: str
    action: str
    score: float
    shadow: bool = False


class FraudDecision(OutputContract):
    """fraud.decisions: the decision on one transaction, with its reasons and versions."""

    transaction_id: str
    action: Action
    score: Annotated[float, Field(ge=0, le=100)]
    model_score: float | None = None
    model_version: str | None = None
    rules_version: str
    rule_hits: list[RuleHit] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    decided_at: UtcDatetime
    channel: str | None = None
    method: str | None = None
    amount: Money | None = None


class FailoverSignal(OutputContract):
    """gateway.failover: one message per state transition; the latest per channel is the state."""

    channel: str
    method: str | None
    action: FailoverAction
    state: ChannelState
    reason: str
    figures: dict[str, float | int | None] = Field(default_factory=dict)
    alternatives: list[str] = Field(default_factory=list)
    probe_ratio: float = 0.0
    at: UtcDatetime
    since: UtcDatetime
    rules_version: str | None = None


class WindowStats(OutputContract):
    """Counts, ratios and latency quantiles of one channel over one event-time window."""

    schema_version: int = Field(default=SCHEMA_VERSION, exclude=True)
    attempts: int = 0
    successes: int = 0
    provider_errors: int = 0
    declines: int = 0
    merchant_errors: int = 0
    unknown_errors: int = 0
    provider_error_rate: float = 0.0
    decline_rate: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None


class ChannelHealth(OutputContract):
    """channel.health: a snapshot of one channel every N seconds of event time."""

    channel: str
    method: str | None
    state: ChannelState
    since: UtcDatetime
    consecutive_provider_failures: int = 0
    windows: dict[str, WindowStats] = Field(default_factory=dict)
    at: UtcDatetime


class Alert(OutputContract):
    """ops.alerts: sent once when a condition starts firing and once when it resolves."""

    alert: str
    fingerprint: str
    status: AlertStatus
    severity: Severity
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    threshold: float | None = None
    summary: str = ""
    started_at: UtcDatetime
    at: UtcDatetime


class DeadLetter(OutputContract):
    """payments.deadletter: an input that could not be used, with why, and its original text."""

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    line: int | None = None
    reason: str
    raw: str
    at: UtcDatetime


def alert_fingerprint(alert: str, labels: dict[str, str]) -> str:
    """A stable fingerprint: the alert name, then its label values in key order."""
    parts = [labels[k] for k in sorted(labels)]
    return "/".join([alert, *parts])


__all__ = [
    "Action",
    "Alert",
    "AlertStatus",
    "ChannelHealth",
    "ChannelState",
    "DeadLetter",
    "EnrichedTransaction",
    "FailoverAction",
    "FailoverSignal",
    "FraudDecision",
    "FraudSummary",
    "RuleHit",
    "Severity",
    "VatMechanism",
    "VatTag",
    "WindowStats",
    "alert_fingerprint",
    "datetime",
]
