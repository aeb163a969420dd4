"""Topic names (settings with DESIGN.md §2's defaults) and which are inputs, outputs, internal."""

from __future__ import annotations

from pydantic import BaseModel


class Topics(BaseModel):
    """Every topic Pantau reads or writes; override any with PANTAU_TOPICS__<NAME>."""

    transactions: str = "payments.transactions"
    callbacks: str = "payments.callbacks"
    balances: str = "payments.balances"
    labels: str = "fraud.labels"
    rules: str = "pantau.rules"
    enriched: str = "payments.enriched"
    decisions: str = "fraud.decisions"
    failover: str = "gateway.failover"
    health: str = "channel.health"
    alerts: str = "ops.alerts"
    deadletter: str = "payments.deadletter"
    # Internal topics: how stages keyed by something other than the input's key get their data.
    health_deltas: str = "pantau.health-deltas"  # per-partition pre-aggregates, key = channel
    settlement: str = (
        "pantau.settlement"  # transaction facts and trusted callbacks, key = transaction_id
    )
    # Samples of the settlement and callback alerts, key = alert fingerprint (one partition
    # judges each alert over every worker's samples, streams/alert_windows.py).
    alert_samples: str = "pantau.alert-samples"
    # Changelog of the payments stage's customer state (per partition of payments.transactions,
    # key = state key): what a worker taking a partition over restores (streams/statelog.py).
    payments_state: str = "pantau.payments-state"
    # Changelog of the settlement stage's state (per partition of pantau.settlement, key =
    # "<map>/<transaction id or partition/window>").
    settlement_state: str = "pantau.settlement-state"
    # Changelog of the callbacks stage's dedup memory and failure counts (per partition of
    # payments.callbacks).
    callbacks_state: str = "pantau.callbacks-state"

    def inputs(self) -> list[str]:
        """Topics the gateway or the risk team produce into."""
        return [self.transactions, self.callbacks, self.balances, self.labels, self.rules]

    def outputs(self) -> list[str]:
        """Topics Pantau produces for its users."""
        return [
            self.enriched,
            self.decisions,
            self.failover,
            self.health,
            self.alerts,
            self.deadletter,
        ]

    def internal(self) -> list[str]:
        """Topics between Pantau's own stages."""
        return [self.health_deltas, self.settlement, self.alert_samples]

    def changelogs(self) -> list[str]:
        """Topics holding stage state, written and restored by the workers themselves."""
        return [self.payments_state, self.settlement_state, self.callbacks_state]

    def compacted(self) -> list[str]:
        """Topics whose latest value per key is the state (compacted on real Kafka)."""
        return [self.rules, self.failover, *self.changelogs()]

    def all(self) -> list[str]:
        """Every topic, inputs first."""
        return [*self.inputs(), *self.outputs(), *self.internal(), *self.changelogs()]
