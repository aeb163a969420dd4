"""Merchant deposit balances: a low-balance alert below a threshold, resolved when topped up."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models.common import iso_utc
from models.inputs import BalanceSnapshot
from models.outputs import Severity
from streams import metrics
from streams.alerts import AlertTracker
from streams.codec import Decoder, describe_errors
from streams.core import EventClock, Out, Record, Stage
from streams.settlement import RULES_DIR, BalanceRules, load_settlement_rules, load_yaml
from streams.topics import Topics

BALANCE_RULES = RULES_DIR / "balances.yaml"


def load_balance_rules(path: Path | None = None) -> BalanceRules:
    """Thresholds from rules/balances.yaml when it exists, else the `balances` section of
    rules/settlement.yaml (default IDR 10,000,000)."""
    if path is None and not BALANCE_RULES.exists():
        return load_settlement_rules().balances
    path = path or BALANCE_RULES
    try:
        return BalanceRules.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ValueError(f"{path}: {describe_errors(exc)}") from None


class BalancesStage(Stage):
    """payments.balances (keyed by merchant): `low_balance` fires below the merchant's threshold
    and resolves once a later snapshot is back at or above it. Older snapshots change nothing."""

    name = "balances"

    def __init__(
        self,
        topics: Topics,
        rules: BalanceRules | None = None,
        *,
        alerts: AlertTracker | None = None,
        latest: MutableMapping[str, Any] | None = None,
        max_bytes: int = 1_000_000,
        lateness: timedelta = timedelta(seconds=30),
        severity: Severity = Severity.WARNING,
    ) -> None:
        self.topics = topics
        self.rules = rules or BalanceRules()
        self.alerts = alerts or AlertTracker(topics.alerts, names=("low_balance",))
        # merchant_id → {"at": ISO time, "balance": decimal string} of its latest snapshot.
        self.latest: MutableMapping[str, Any] = latest if latest is not None else {}
        self.decoder = Decoder(BalanceSnapshot, topics.deadletter, max_bytes=max_bytes)
        self.clock = EventClock(lateness=lateness)
        self.severity = severity

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.balances,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for record in records:
            event, letter = self.decoder.decode(record)
            if letter is not None:
                out.append(letter)
                continue
            assert isinstance(event, BalanceSnapshot)
            self.clock.observe(event.at)
            previous = self.latest.get(event.merchant_id)
            at = iso_utc(event.at)
            if previous is not None and previous["at"] > at:
                metrics.child(metrics.BALANCE_SNAPSHOTS, "stale").inc()
                continue
            metrics.child(metrics.BALANCE_SNAPSHOTS, "applied").inc()
            self.latest[event.merchant_id] = {"at": at, "balance": format(event.balance, "f")}
            threshold = self.rules.threshold_for(event.merchant_id)
            low = event.balance < threshold
            out.extend(
                self.alerts.update(
                    "low_balance",
                    {"merchant_id": event.merchant_id},
                    low,
                    at=event.at,
                    value=float(event.balance),
                    threshold=float(threshold),
                    severity=self.severity,
                    summary=(
                        f"deposit balance IDR {event.balance:,.2f} below IDR {threshold:,.2f}"
                        if low
                        else f"deposit balance topped up to IDR {event.balance:,.2f}"
                    ),
                )
            )
        metrics.LOW_BALANCE_MERCHANTS.set(
            sum(1 for a in self.alerts.state.values() if a.get("alert") == "low_balance")
        )
        return out
