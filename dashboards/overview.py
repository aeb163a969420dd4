"""The Payments overview dashboard (SRE): traffic, success, errors, latency, states, alerts."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards import common as c
from models.common import Status
from models.outputs import ChannelState, FailoverAction
from streams import metrics as m

UID = "pantau-overview"

TX = c.counter(m.TRANSACTIONS)
FINISHED = f"{Status.SUCCESS}|{Status.FAILED}"

# The failover state machine as numbers a state timeline can colour: value → (text, colour).
STATE_CODES: dict[ChannelState, tuple[int, str]] = {
    ChannelState.HEALTHY: (0, "green"),
    ChannelState.DEGRADED: (1, "yellow"),
    ChannelState.FAILED_OVER: (2, "red"),
    ChannelState.PROBING: (3, "blue"),
}


def success_ratio(labels: list[str], **matchers: str) -> str:
    """Successful / finished (success or failed) attempts, per label set."""
    ok = c.rate(TX, labels, **matchers, status=str(Status.SUCCESS))
    done = c.rate(TX, labels, **matchers, status=FINISHED)
    return f"{ok} / {done}"


def state_code(**matchers: str) -> str:
    """One number per channel for its failover state (see STATE_CODES)."""
    name = c.gauge(m.CHANNEL_STATE)
    parts = [
        f"{code} * max by (channel) ({c.selector(name, **matchers, state=str(state))})"
        for state, (code, _) in STATE_CODES.items()
        if code
    ]
    return " + ".join(parts)


def state_mappings() -> dict[str, tuple[str, str]]:
    """Value mappings for `state_code`."""
    return {str(code): (str(state), color) for state, (code, color) in STATE_CODES.items()}


def traffic() -> c.Panel:
    """Attempts per second by channel."""
    return c.timeseries_panel(
        "Traffic by channel",
        "Payment attempts per second by channel (redeliveries dropped).",
        "reqps",
        c.targets((c.rate(TX, ["channel"]), "{{channel}}")),
        stacked=True,
    ).data_links([c.channel_link()])


def success_rate() -> c.Panel:
    """Success ratio of finished attempts by channel."""
    return c.timeseries_panel(
        "Success rate by channel",
        "Successful / finished (success + failed) attempts. Declines count as failures here; "
        "the provider error rate below is what judges a channel.",
        "percentunit",
        c.targets((success_ratio(["channel"]), "{{channel}}")),
        minimum=None,
    ).data_links([c.channel_link()])


def provider_error_rate() -> c.Panel:
    """Provider error ratio over the 5-minute event-time window, with the 5% line."""
    return c.timeseries_panel(
        "Provider error rate (api_error_rate, 5 min)",
        "Provider errors (5xx, timeouts, connection errors) / attempts over 5 minutes of event "
        f"time. The dashed line is the alert threshold ({c.ERROR_RATE_LINE:.0%}).",
        "percentunit",
        c.targets(
            (f'max by (channel) ({c.gauge(m.PROVIDER_ERROR_RATIO)}{{window="5m"}})', "{{channel}}")
        ),
        line=c.ERROR_RATE_LINE,
    ).data_links([c.channel_link()])


def latency_p95() -> c.Panel:
    """p95 provider latency by channel, with the 800 ms line."""
    return c.timeseries_panel(
        "Latency p95 by channel",
        "95th percentile provider latency from the attempt-latency histogram. A channel held "
        f"above the dashed line ({c.LATENCY_P95_LINE_S * 1000:.0f} ms) for 15 min fails over.",
        "s",
        c.targets((c.quantile(0.95, m.ATTEMPT_LATENCY, ["channel"]), "{{channel}}")),
        line=c.LATENCY_P95_LINE_S,
    ).data_links([c.channel_link()])


def channel_states() -> c.Panel:
    """Each channel's failover state over time."""
    return c.state_timeline(
        "Channel states",
        "healthy → degraded → failed_over → probing → healthy, per channel. Failovers and "
        "restores are also marked on every graph.",
        c.targets((state_code(), "{{channel}}")),
        state_mappings(),
    )


def alerts_firing() -> c.Panel:
    """Pantau's own alerts firing, by alert."""
    return c.timeseries_panel(
        "Alerts firing",
        "Alerts Pantau is firing now on ops.alerts, by alert name (max over workers).",
        "short",
        c.targets((f"max by (alert) ({c.gauge(m.ALERTS_FIRING)})", "{{alert}}")),
        stacked=True,
    )


def success_now() -> c.Panel:
    """Overall success ratio."""
    return c.stat(
        "Success rate (all channels)",
        "Successful / finished attempts over every channel.",
        "percentunit",
        c.targets((success_ratio([]), "success")),
    )


def attempts_now() -> c.Panel:
    """Overall attempts per second."""
    return c.stat(
        "Attempts/s",
        "Payment attempts per second over every channel.",
        "reqps",
        c.targets((c.rate(TX), "attempts/s")),
    )


def failed_over_now() -> c.Panel:
    """How many channels are failed over or probing."""
    states = f"{ChannelState.FAILED_OVER}|{ChannelState.PROBING}"
    return c.stat(
        "Channels failed over",
        "Channels routed away from right now (failed_over or probing).",
        "short",
        c.targets((f"sum({c.selector(c.gauge(m.CHANNEL_STATE), state=states)})", "channels")),
        line=1,
    )


def alerts_now() -> c.Panel:
    """How many alerts fire now."""
    return c.stat(
        "Alerts firing now",
        "Pantau alerts firing right now.",
        "short",
        c.targets((f"sum(max by (alert) ({c.gauge(m.ALERTS_FIRING)}))", "alerts")),
        line=1,
    )


def transitions(action: FailoverAction, color: str, title: str) -> db.AnnotationQuery:
    """Annotations where a channel took a failover transition."""
    expr = (
        f"sum by (channel) (increase("
        f"{c.selector(c.counter(m.FAILOVER_TRANSITIONS), action=str(action))}[2m])) > 0"
    )
    return c.annotation(f"{title}s", expr, color, f"{title} {{{{channel}}}}", f"{action}")


def failover_annotations() -> list[db.AnnotationQuery]:
    """Failover and restore marks on every graph."""
    return [
        transitions(FailoverAction.FAILOVER, "red", "Failover"),
        transitions(FailoverAction.RESTORE, "green", "Restore"),
    ]


def build() -> db.Dashboard:
    """The Payments overview dashboard."""
    return c.dashboard(
        UID,
        "Pantau / Payments overview",
        "Which channels are failing payments right now? Traffic, success, provider errors, "
        "latency and failover state per channel, and Pantau's alerts.",
        [
            ("Now", [success_now(), attempts_now(), failed_over_now(), alerts_now()]),
            ("Channels", [traffic(), success_rate(), provider_error_rate(), latency_p95()]),
            ("Failover and alerts", [channel_states(), alerts_firing()]),
        ],
        annotations=failover_annotations(),
    )
