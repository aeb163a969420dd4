"""Every Prometheus metric Pantau exposes, in one place: `pantau_` prefix, base units.

Label values are bounded: channel, method, status, error class, state, alert, provider, reason,
rule id, action, topic, stage. Never customer, merchant, card or transaction ids. Hot paths use
pre-bound children (`child(...)`), which cost a quarter of a `labels(...)` call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

# Buckets in seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SETTLEMENT_BUCKETS = (
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    172800.0,
)

# ---- pipeline (foundation) -------------------------------------------------------------------
EVENTS = Counter(
    "pantau_events_processed_total", "Input records processed", ["topic"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "pantau_dead_letters_total",
    "Inputs sent to the dead-letter topic",
    ["topic", "reason"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "pantau_batch_duration_seconds",
    "Time to process one micro-batch",
    ["stage"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "pantau_batch_size_events",
    "Events per micro-batch",
    ["stage"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
    registry=REGISTRY,
)
STATE_RESTORE_SECONDS = Histogram(
    "pantau_state_restore_seconds",
    "Time to restore one partition's state when a worker takes it over",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = Gauge(
    "pantau_consumer_lag_seconds",
    "Wall clock minus the event time of the last processed event",
    ["stage"],
    registry=REGISTRY,
)
OUTPUTS_DROPPED = Counter(
    "pantau_outputs_dropped_total",
    "Outputs the broker refused for good (e.g. too large), by topic and error type",
    ["topic", "error"],
    registry=REGISTRY,
)
WORKER_UP = Gauge("pantau_worker_up", "1 while this worker runs", registry=REGISTRY)
BROKER_CONNECTED = Gauge(
    "pantau_broker_connected", "1 while the worker reaches the broker", registry=REGISTRY
)
BUILD = Info("pantau_build", "Pantau version", registry=REGISTRY)

# ---- channel monitoring (health, failover, alerts) ---------------------------------------------
# Owned by streams/health.py. Label values: channel (provider name), method, status, error_class
# (provider/declined/merchant/unknown/none), window (1m/5m/1h), quantile, state, action, alert.
TRANSACTIONS = Counter(
    "pantau_transactions_total",
    "Payment attempts seen (redeliveries dropped), by channel, method, status and error class",
    ["channel", "method", "status", "error_class"],
    registry=REGISTRY,
)
ATTEMPT_LATENCY = Histogram(
    "pantau_attempt_latency_seconds",
    "Provider latency of one answered payment attempt (provider errors, i.e. timeouts, left out)",
    ["channel", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DUPLICATE_ATTEMPTS = Counter(
    "pantau_duplicate_attempts_total",
    "Redelivered attempts (same transaction_id, created_at, status) left out of health windows",
    registry=REGISTRY,
)
PROVIDER_ERROR_RATIO = Gauge(
    "pantau_provider_error_ratio",
    "Provider errors / attempts of a channel over an event-time window (1m, 5m, 1h)",
    ["channel", "window"],
    registry=REGISTRY,
)
DECLINE_RATIO = Gauge(
    "pantau_decline_ratio",
    "Customer declines / attempts of a channel over an event-time window",
    ["channel", "window"],
    registry=REGISTRY,
)
WINDOW_ATTEMPTS = Gauge(
    "pantau_window_attempts",
    "Attempts of a channel in an event-time window",
    ["channel", "window"],
    registry=REGISTRY,
)
LATENCY_QUANTILE = Gauge(
    "pantau_latency_quantile_seconds",
    "Latency quantile (0.5, 0.95, 0.99) of a channel over an event-time window",
    ["channel", "window", "quantile"],
    registry=REGISTRY,
)
CONSECUTIVE_FAILURES = Gauge(
    "pantau_consecutive_provider_failures",
    "Provider failures since the channel's latest non-failing attempt (event time)",
    ["channel"],
    registry=REGISTRY,
)
CHANNEL_STATE = Gauge(
    "pantau_channel_state",
    "1 for the failover state a channel is in, 0 for the others",
    ["channel", "state"],
    registry=REGISTRY,
)
FAILOVER_TRANSITIONS = Counter(
    "pantau_failover_transitions_total",
    "Failover state transitions (one gateway.failover message each)",
    ["channel", "action"],
    registry=REGISTRY,
)
ALERTS_FIRING = Gauge(
    "pantau_alerts_firing", "Alerts firing now, by alert name", ["alert"], registry=REGISTRY
)
ALERT_NOTIFICATIONS = Counter(
    "pantau_alert_notifications_total",
    "Alert messages sent on ops.alerts",
    ["alert", "status"],
    registry=REGISTRY,
)
DEADLETTER_RATIO = Gauge(
    "pantau_deadletter_ratio",
    "Dead letters / records of payments.transactions over the last 5 minutes of event time",
    registry=REGISTRY,
)

# ---- fraud (decisions, rules, model) ------------------------------------------------------------

FRAUD_AMOUNT_IDR = Counter(
    "pantau_fraud_amount_idr_total",
    "IDR amount of the payments decided, by action (what review and decline hold back)",
    ["action"],
    registry=REGISTRY,
)
FRAUD_DECISIONS = Counter(
    "pantau_fraud_decisions_total", "Fraud decisions", ["action", "channel"], registry=REGISTRY
)
FRAUD_RULE_HITS = Counter(
    "pantau_fraud_rule_hits_total",
    "Rule hits (shadow hits are reported, never acted on)",
    ["rule", "mode"],
    registry=REGISTRY,
)
FRAUD_SCORE = Histogram(
    "pantau_fraud_score",
    "Fraud score of each decision (0-100)",
    buckets=(5, 10, 20, 30, 40, 50, 65, 75, 85, 95, 100),
    registry=REGISTRY,
)
FRAUD_SCORING_SECONDS = Histogram(
    "pantau_fraud_scoring_duration_seconds",
    "Time to score one micro-batch (features, rules, model, decisions)",
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
FRAUD_VERSIONS = Info("pantau_fraud", "Active rule pack and model versions", registry=REGISTRY)
FRAUD_RULE_ERRORS = Counter(
    "pantau_fraud_rule_errors_total",
    "Rows a rule could not evaluate (e.g. integer division by zero): counted as no match",
    ["rule"],
    registry=REGISTRY,
)
FRAUD_RULE_PACKS = Counter(
    "pantau_fraud_rule_packs_total",
    "Rule packs received on pantau.rules, by result",
    ["result"],
    registry=REGISTRY,
)
FEATURE_KEYS = Gauge(
    "pantau_feature_keys",
    "Fraud feature state keys this worker holds, by entity (as its last eviction sweep counted)",
    ["entity"],
    registry=REGISTRY,
)
FEATURE_KEYS_EVICTED = Counter(
    "pantau_feature_keys_evicted_total",
    "Fraud feature state keys evicted because nothing in them can change a feature any more",
    ["entity"],
    registry=REGISTRY,
)


def feature_sweep(evicted: dict[str, int], kept: dict[str, int] | None) -> None:
    """Count the keys an eviction sweep evicted; when it finished, the keys it kept."""
    from models.features import ENTITIES

    for entity in ENTITIES:  # every entity's series exists from the first sweep on (rate works)
        child(FEATURE_KEYS_EVICTED, entity).inc(evicted.get(entity, 0))
    if kept is not None:
        for entity in ENTITIES:
            child(FEATURE_KEYS, entity).set(kept.get(entity, 0))


def fraud_versions(rules_version: str, model_version: str) -> None:
    """Publish the versions that make the decisions now."""
    FRAUD_VERSIONS.info({"rules_version": rules_version, "model_version": model_version})


def rule_errors(rule: str, count: int) -> None:
    """Count rows a rule could not evaluate."""
    child(FRAUD_RULE_ERRORS, rule).inc(count)


def rule_pack_result(result: str) -> None:
    """Count a received rule pack: accepted or rejected."""
    child(FRAUD_RULE_PACKS, result).inc()


_ZERO = Decimal(0)


def observe_fraud_batch(decisions: Any, seconds: float) -> None:
    """Count one scored micro-batch: decisions by action and channel, hits, scores, time."""
    from models.common import KNOWN_CHANNELS

    FRAUD_SCORING_SECONDS.observe(seconds)
    # Counted per label set, then one increment each (a lock and a call per event otherwise).
    decided: dict[tuple[str, str], int] = {}
    amounts: dict[str, Decimal] = {}
    hits: dict[tuple[str, str], int] = {}
    observe = FRAUD_SCORE.observe
    for decision in decisions:
        action = decision.action.value
        channel = decision.channel if decision.channel in KNOWN_CHANNELS else "other"
        decided[action, channel] = decided.get((action, channel), 0) + 1
        if decision.amount is not None:
            amounts[action] = amounts.get(action, _ZERO) + decision.amount
        observe(decision.score)
        for hit in decision.rule_hits:
            key = (hit.rule_id, "shadow" if hit.shadow else "enabled")
            hits[key] = hits.get(key, 0) + 1
    for labels, n in decided.items():
        child(FRAUD_DECISIONS, *labels).inc(n)
    for action, amount in amounts.items():
        child(FRAUD_AMOUNT_IDR, action).inc(float(amount))
    for labels, n in hits.items():
        child(FRAUD_RULE_HITS, *labels).inc(n)


# ---- callbacks, settlement, balances, VAT -------------------------------------------------------
# Owned by streams/settlement.py, streams/balances.py and rules/vat.py. Label values: provider
# (midtrans/xendit/doku/snap/generic), result (trusted/untrusted/duplicate), reason (the bounded
# streams.callbacks.Reason values), status (settled/pending/failed/refunded), channel, method,
# mechanism (standard/exempt/reverse_charge). Never merchant or transaction ids.
CALLBACKS = Counter(
    "pantau_callbacks_total",
    "Callbacks received, by provider and result",
    ["provider", "result"],
    registry=REGISTRY,
)
CALLBACK_VERIFICATION_FAILURES = Counter(
    "pantau_callback_verification_failures_total",
    "Untrusted callbacks (dead-lettered, never applied), by provider and reason",
    ["provider", "reason"],
    registry=REGISTRY,
)
CALLBACK_FACTS = Counter(
    "pantau_callback_facts_total",
    "Trusted callbacks forwarded to settlement",
    ["provider", "status"],
    registry=REGISTRY,
)
SETTLEMENT_DELAY = Histogram(
    "pantau_settlement_delay_seconds",
    "Settlement time minus the transaction's created_at, by channel and method",
    ["channel", "method"],
    buckets=SETTLEMENT_BUCKETS,
    registry=REGISTRY,
)
SETTLEMENT_DELAY_QUANTILE = Gauge(
    "pantau_settlement_delay_quantile_seconds",
    "Settlement delay quantile (0.5, 0.95) over the rule's event-time window",
    ["channel", "method", "quantile"],
    registry=REGISTRY,
)
CALLBACKS_MISSING = Counter(
    "pantau_callbacks_missing_total",
    "Transactions without a final callback past their method's deadline",
    ["channel", "method"],
    registry=REGISTRY,
)
CALLBACKS_UNMATCHED = Counter(
    "pantau_callbacks_unmatched_total",
    "Trusted callbacks whose transaction never arrived within the wait (bounded in count and time)",
    ["provider"],
    registry=REGISTRY,
)
SETTLEMENT_AWAITING = Gauge(
    "pantau_settlement_awaiting_transactions",
    "Transactions waiting for their final callback (this worker's partitions)",
    registry=REGISTRY,
)
LOW_BALANCE_MERCHANTS = Gauge(
    "pantau_low_balance_merchants",
    "Merchants whose deposit balance is below their threshold",
    registry=REGISTRY,
)
BALANCE_SNAPSHOTS = Counter(
    "pantau_balance_snapshots_total",
    "Balance snapshots processed (stale ones ignored)",
    ["result"],
    registry=REGISTRY,
)
VAT_TAGGED = Counter(
    "pantau_vat_tagged_total",
    "Successful transactions tagged with VAT, by mechanism",
    ["mechanism"],
    registry=REGISTRY,
)
VAT_FLAGGED = Counter(
    "pantau_vat_flagged_total",
    "VAT tags carrying a flag (unknown category…), by flag",
    ["flag"],
    registry=REGISTRY,
)


def set_build_info() -> None:
    """Label pantau_build with this install's version (and Python's), once at worker start."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        pantau = version("pantau")
    except PackageNotFoundError:  # running from a checkout that was never installed
        pantau = "unknown"
    BUILD.info({"version": pantau, "python": platform.python_version()})


# Dead-letter reasons that do not start with the field they name, by their opening words.
_REASON_KINDS = (
    ("not valid JSON", "invalid_json"),
    ("must be a JSON object", "not_an_object"),
    ("empty value", "empty"),
    ("value too large", "too_large"),
)


_FIELD = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,40}$")  # a field path such as headers.x-token


def reason_class(reason: str) -> str:
    """A dead-letter reason reduced to a bounded label: its kind, or the field it names."""
    for opening, kind in _REASON_KINDS:
        if reason.startswith(opening):
            return kind
    if "holds a card number" in reason:
        return "card_number"
    head = reason.split(":", 1)[0].strip()
    if head.startswith("line "):
        return "unreadable_line"
    if not _FIELD.match(head):
        return "other"
    return head.split(".", 1)[0]


@lru_cache(maxsize=4096)
def _child(metric: Any, labels: tuple[str, ...]) -> Any:
    return metric.labels(*labels)


class _Uncounted:
    """What a counter is while replaying: it counts nothing."""

    def inc(self, amount: float = 1) -> None:
        return None


_UNCOUNTED = _Uncounted()
_replaying = 0


@contextmanager
def replaying() -> Iterator[None]:
    """Counters count nothing inside: a shard rebuilt from its partition's input re-runs what
    its previous owner counted already (alerts sent, failovers, repeats). Gauges still follow
    the state. Only around synchronous work: another task's counting must not happen inside."""
    global _replaying
    _replaying += 1
    try:
        yield
    finally:
        _replaying -= 1


def child(metric: Any, *labels: str) -> Any:
    """A cached, pre-bound child of a labelled metric (bounded label values only)."""
    if _replaying and type(metric) is Counter:
        return _UNCOUNTED
    return _child(metric, labels)


def count(metric: Counter) -> None:
    """Add one to an unlabelled counter (nothing while replaying)."""
    if not _replaying:
        metric.inc()


def forget(metric: Any, *labels: str) -> None:
    """Remove a labelled child (its value is another worker's now); absent, nothing happens."""
    try:
        metric.remove(*labels)
    except KeyError:
        return
    _child.cache_clear()  # a cached child would no longer be exported


def exposition() -> bytes:
    """The registry in Prometheus text format."""
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY)


def serve(port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
    """Serve /metrics on a port in a background thread; returns a function that stops it."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return stop
