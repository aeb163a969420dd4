"""The Pipeline dashboard: throughput, micro-batch time, consumer lag, dead letters, workers."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards import common as c
from streams import metrics as m

UID = "pantau-pipeline"


def events_per_second() -> c.Panel:
    """Input records processed per second, by input topic."""
    return c.timeseries_panel(
        "Events/s by topic",
        "Input records the workers processed per second (all workers), by input topic.",
        "ops",
        c.targets((c.rate(c.counter(m.EVENTS), ["topic"]), "{{topic}}")),
        stacked=True,
    )


def batch_time() -> c.Panel:
    """Micro-batch processing time quantiles, by stage."""
    return c.timeseries_panel(
        "Micro-batch time p50 / p99",
        "Wall time to process one micro-batch, by stage (from the batch-duration histogram).",
        "s",
        c.targets(
            (c.quantile(0.5, m.BATCH_SECONDS, ["stage"]), "p50 {{stage}}"),
            (c.quantile(0.99, m.BATCH_SECONDS, ["stage"]), "p99 {{stage}}"),
        ),
    )


def batch_size() -> c.Panel:
    """Mean events per micro-batch, by stage."""
    return c.timeseries_panel(
        "Events per micro-batch",
        "Mean micro-batch size by stage: small batches under load mean the consumer is starved.",
        "short",
        c.targets(
            (
                f"{c.rate(c.hist_sum(m.BATCH_SIZE), ['stage'])} / "
                f"{c.rate(c.hist_count(m.BATCH_SIZE), ['stage'])}",
                "{{stage}}",
            )
        ),
    )


def consumer_lag() -> c.Panel:
    """Consumer lag in seconds of event time, by stage."""
    return c.timeseries_panel(
        "Consumer lag (seconds behind event time)",
        "Wall clock minus the event time of the last processed event, worst worker per stage. "
        f"The dashed line is the alert threshold ({c.CONSUMER_LAG_LINE_S:.0f} s).",
        "s",
        c.targets((f"max by (stage) ({c.gauge(m.CONSUMER_LAG_SECONDS)})", "{{stage}}")),
        line=c.CONSUMER_LAG_LINE_S,
    )


def dead_letters() -> c.Panel:
    """Dead letters per second, by reason."""
    return c.timeseries_panel(
        "Dead letters by reason",
        "Inputs sent to payments.deadletter per second, by source topic and reason class.",
        "ops",
        c.targets(
            (c.rate(c.counter(m.DEAD_LETTERS), ["topic", "reason"]), "{{topic}}: {{reason}}")
        ),
        stacked=True,
    )


def redeliveries() -> c.Panel:
    """Redelivered attempts left out of the health windows."""
    return c.timeseries_panel(
        "Redelivered attempts dropped",
        "Attempts seen again (same transaction_id, created_at and status: a redelivery after a "
        "rebalance or a producer retry) and left out of the health windows, per second.",
        "ops",
        c.targets((c.rate(c.counter(m.DUPLICATE_ATTEMPTS)), "redeliveries")),
    )


def workers() -> c.Panel:
    """How many workers report themselves up."""
    return c.stat(
        "Workers up",
        "Workers whose metrics endpoint reports pantau_worker_up = 1.",
        "short",
        c.targets((f"sum({c.gauge(m.WORKER_UP)})", "workers")),
    )


def broker_connected() -> c.Panel:
    """Workers that reach the broker."""
    return c.stat(
        "Workers connected to Kafka",
        "Workers that currently reach the broker (pantau_broker_connected = 1).",
        "short",
        c.targets((f"sum({c.gauge(m.BROKER_CONNECTED)})", "connected")),
    )


def throughput_total() -> c.Panel:
    """All input events per second."""
    return c.stat(
        "Events/s (all topics)",
        "Total input records processed per second over every worker.",
        "ops",
        c.targets((c.rate(c.counter(m.EVENTS)), "events/s")),
    )


def versions() -> c.Panel:
    """Running Pantau versions."""
    return c.stat(
        "Workers by version",
        "Running workers per Pantau version (a rollout shows two).",
        "short",
        c.targets((f"count by (version) ({c.info(m.BUILD)})", "{{version}}")),
    )


def feature_keys() -> c.Panel:
    """Fraud feature state keys held, by entity."""
    return c.timeseries_panel(
        "Feature state keys by entity",
        "Customer, device, card, IP and merchant keys the workers hold (all workers, as each one's "
        "last daily eviction sweep counted). Idle keys are evicted: a steady level is the active "
        "entities; a level that only grows means eviction is not running.",
        "short",
        c.targets((f"sum by (entity) ({c.gauge(m.FEATURE_KEYS)})", "{{entity}}")),
        stacked=True,
    )


def feature_evictions() -> c.Panel:
    """Idle feature keys evicted per second, by entity."""
    return c.timeseries_panel(
        "Feature keys evicted/s",
        "Keys whose state can no longer change any feature, evicted by the daily sweep.",
        "ops",
        c.targets((c.rate(c.counter(m.FEATURE_KEYS_EVICTED), ["entity"]), "{{entity}}")),
        stacked=True,
    )


def build() -> db.Dashboard:
    """The Pipeline dashboard."""
    return c.dashboard(
        UID,
        "Pantau / Pipeline",
        "Is the stream processor keeping up? Throughput, batch time, lag, dead letters, workers.",
        [
            ("Workers", [workers(), broker_connected(), throughput_total(), versions()]),
            ("Throughput", [events_per_second(), batch_time(), batch_size(), consumer_lag()]),
            ("Bad and repeated input", [dead_letters(), redeliveries()]),
            ("Fraud feature state", [feature_keys(), feature_evictions()]),
        ],
    )
