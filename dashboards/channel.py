"""The Channel drill-down dashboard: one channel and method in depth, via template variables."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards import common as c
from dashboards import overview
from models.common import Status
from streams import metrics as m

UID = c.CHANNEL_UID

CH = "$channel"
METHOD = "$method"
TX = c.counter(m.TRANSACTIONS)


def attempts_by_status() -> c.Panel:
    """Attempts per second by status."""
    return c.timeseries_panel(
        "Attempts by status",
        "Attempts per second of the selected channel(s) and method(s), by status.",
        "reqps",
        c.targets((c.rate(TX, ["status"], channel=CH, method=METHOD), "{{status}}")),
        stacked=True,
    )


def failures_by_class() -> c.Panel:
    """Failed attempts by error class."""
    return c.timeseries_panel(
        "Failures by error class",
        "Failed attempts per second by class: provider (the channel's fault), declined (the "
        "customer's), merchant (bad request, duplicate order).",
        "reqps",
        c.targets(
            (
                c.rate(TX, ["error_class"], channel=CH, method=METHOD, status=str(Status.FAILED)),
                "{{error_class}}",
            )
        ),
        stacked=True,
    )


def success_by_method() -> c.Panel:
    """Success ratio by method."""
    return c.timeseries_panel(
        "Success rate by method",
        "Successful / finished attempts of the selected channel(s), by method.",
        "percentunit",
        c.targets((overview.success_ratio(["method"], channel=CH, method=METHOD), "{{method}}")),
        minimum=None,
    )


def error_ratio_windows() -> c.Panel:
    """Provider error and decline ratios over the event-time windows."""
    return c.timeseries_panel(
        "Provider error and decline ratio by window",
        "Ratios over 1 min, 5 min and 1 h of event time, as the failover logic sees them. "
        f"The dashed line is the api_error_rate threshold ({c.ERROR_RATE_LINE:.0%}).",
        "percentunit",
        c.targets(
            (
                "max by (channel, window) ("
                f"{c.selector(c.gauge(m.PROVIDER_ERROR_RATIO), channel=CH)})",
                "provider errors {{channel}} {{window}}",
            ),
            (
                f"max by (channel, window) ({c.selector(c.gauge(m.DECLINE_RATIO), channel=CH)})",
                "declines {{channel}} {{window}}",
            ),
        ),
        line=c.ERROR_RATE_LINE,
    )


def latency_histogram() -> c.Panel:
    """Latency quantiles from the histogram, by method."""
    return c.timeseries_panel(
        "Latency p50 / p95 / p99 (histogram)",
        "Provider latency quantiles from the attempt-latency histogram (all workers).",
        "s",
        c.targets(
            *(
                (
                    c.quantile(q, m.ATTEMPT_LATENCY, ["method"], channel=CH, method=METHOD),
                    f"p{round(q * 100)} {{{{method}}}}",
                )
                for q in (0.5, 0.95, 0.99)
            )
        ),
        line=c.LATENCY_P95_LINE_S,
    )


def latency_event_time() -> c.Panel:
    """Latency quantiles over the event-time windows."""
    return c.timeseries_panel(
        "Latency quantiles by window (event time)",
        "The latency quantiles the failover logic judges, over its event-time windows.",
        "s",
        c.targets(
            (
                "max by (channel, window, quantile) ("
                f"{c.selector(c.gauge(m.LATENCY_QUANTILE), channel=CH)})",
                "{{channel}} q{{quantile}} {{window}}",
            )
        ),
        line=c.LATENCY_P95_LINE_S,
    )


def consecutive_failures() -> c.Panel:
    """Consecutive provider failures."""
    return c.timeseries_panel(
        "Consecutive provider failures",
        "Provider failures since the channel's latest non-failing attempt.",
        "short",
        c.targets(
            (
                f"max by (channel) ({c.selector(c.gauge(m.CONSECUTIVE_FAILURES), channel=CH)})",
                "{{channel}}",
            )
        ),
    )


def window_volume() -> c.Panel:
    """Attempts in each event-time window."""
    return c.timeseries_panel(
        "Attempts per window",
        "Attempts counted in each event-time window: the volume behind the ratios.",
        "short",
        c.targets(
            (
                f"max by (channel, window) ({c.selector(c.gauge(m.WINDOW_ATTEMPTS), channel=CH)})",
                "{{channel}} {{window}}",
            )
        ),
    )


def state() -> c.Panel:
    """The channel's failover state over time."""
    return c.state_timeline(
        "Failover state",
        "The selected channel's failover state.",
        c.targets((overview.state_code(channel=CH), "{{channel}}")),
        overview.state_mappings(),
    )


def transitions() -> c.Panel:
    """Failover transitions by action."""
    return c.timeseries_panel(
        "Failover transitions",
        "gateway.failover messages by action (degrade, recover, failover, probe, restore).",
        "short",
        c.targets(
            (
                c.increase(c.counter(m.FAILOVER_TRANSITIONS), ["action"], channel=CH),
                "{{action}}",
            )
        ),
        stacked=True,
    )


def variables() -> list[db.QueryVariable]:
    """`channel`, and `method` among the chosen channels', from the transactions counter."""
    return [
        c.label_variable("channel", TX, "channel", "Channel"),
        c.label_variable("method", TX, "method", "Method", channel=CH),
    ]


def build() -> db.Dashboard:
    """The Channel drill-down dashboard."""
    return c.dashboard(
        UID,
        "Pantau / Channel",
        "One channel in depth: traffic, failures by class, ratios and latency as the failover "
        "logic sees them, and its failover history.",
        [
            ("Traffic", [attempts_by_status(), failures_by_class(), success_by_method(),
                         window_volume()]),
            ("Health", [error_ratio_windows(), consecutive_failures(), latency_histogram(),
                        latency_event_time()]),
            ("Failover", [state(), transitions()]),
        ],
        variables=variables(),
        annotations=overview.failover_annotations(),
    )
