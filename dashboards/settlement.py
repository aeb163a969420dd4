"""The Settlement dashboard: delay by channel, missing and untrusted callbacks, low balances."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards import common as c
from streams import metrics as m

UID = "pantau-settlement"

DAY = "1d"


def delay_p95() -> c.Panel:
    """Settlement delay p95 by channel, with the 4 h line."""
    return c.timeseries_panel(
        "Settlement delay p95 by channel",
        "95th percentile of settlement time minus created_at, over the settlement rule's "
        "event-time window (the value the settlement_delay_high alert judges). The dashed line "
        f"is the alert threshold ({c.SETTLEMENT_DELAY_LINE_S / 3600:.0f} h).",
        "s",
        c.targets(
            (
                "max by (channel) ("
                f'{c.gauge(m.SETTLEMENT_DELAY_QUANTILE)}{{quantile="0.95"}})',
                "{{channel}}",
            )
        ),
        line=c.SETTLEMENT_DELAY_LINE_S,
    )


def delay_quantiles() -> c.Panel:
    """Settlement delay p50 / p95 by channel from the histogram."""
    return c.timeseries_panel(
        "Settlement delay p50 / p95 (histogram)",
        "Settlement delay quantiles by channel from the delay histogram of every worker "
        "(over the last hour of settlements seen).",
        "s",
        c.targets(
            (c.quantile(0.5, m.SETTLEMENT_DELAY, ["channel"], window="1h"), "p50 {{channel}}"),
            (c.quantile(0.95, m.SETTLEMENT_DELAY, ["channel"], window="1h"), "p95 {{channel}}"),
        ),
        line=c.SETTLEMENT_DELAY_LINE_S,
    )


def missing_callbacks() -> c.Panel:
    """Transactions that passed their deadline without a final callback."""
    return c.timeseries_panel(
        "Missing callbacks by channel",
        "Transactions without a final callback past their method's deadline "
        "(rules/settlement.yaml), per hour, by channel and method.",
        "short",
        c.targets(
            (
                c.increase(c.counter(m.CALLBACKS_MISSING), ["channel", "method"], window="1h"),
                "{{channel}} {{method}}",
            )
        ),
        stacked=True,
    )


def verification_failures() -> c.Panel:
    """Untrusted callbacks by provider and reason."""
    return c.timeseries_panel(
        "Callback verification failures",
        "Callbacks that failed verification (signature, timestamp tolerance, source address), "
        "dead-lettered and never applied, per second by provider and reason.",
        "ops",
        c.targets(
            (
                c.rate(c.counter(m.CALLBACK_VERIFICATION_FAILURES), ["provider", "reason"]),
                "{{provider}}: {{reason}}",
            )
        ),
        stacked=True,
    )


def callbacks_by_result() -> c.Panel:
    """Callbacks by provider and result."""
    return c.timeseries_panel(
        "Callbacks by provider and result",
        "Callbacks received per second: trusted, untrusted or duplicate, by provider.",
        "ops",
        c.targets(
            (c.rate(c.counter(m.CALLBACKS), ["provider", "result"]), "{{provider}} {{result}}")
        ),
        stacked=True,
    )


def trusted_by_status() -> c.Panel:
    """Trusted callbacks forwarded to settlement, by provider and status."""
    return c.timeseries_panel(
        "Trusted callbacks by status",
        "Verified, first-seen callbacks forwarded to settlement per second, by provider and the "
        "status they report (settled, pending, failed, refunded).",
        "ops",
        c.targets(
            (c.rate(c.counter(m.CALLBACK_FACTS), ["provider", "status"]), "{{provider}} {{status}}")
        ),
        stacked=True,
    )


def unmatched_callbacks() -> c.Panel:
    """Trusted callbacks whose transaction never arrived."""
    return c.timeseries_panel(
        "Unmatched callbacks",
        "Trusted callbacks whose transaction never arrived within the wait, per hour, by "
        "provider.",
        "short",
        c.targets(
            (
                c.increase(c.counter(m.CALLBACKS_UNMATCHED), ["provider"], window="1h"),
                "{{provider}}",
            )
        ),
    )


def awaiting() -> c.Panel:
    """Transactions waiting for their final callback."""
    return c.stat(
        "Awaiting a final callback",
        "Transactions still waiting for their final callback, over every worker.",
        "short",
        c.targets((f"sum({c.gauge(m.SETTLEMENT_AWAITING)})", "awaiting")),
    )


def low_balances() -> c.Panel:
    """Merchants below their balance threshold."""
    return c.stat(
        "Merchants with a low balance",
        "Merchants whose deposit balance for payouts is below their threshold "
        "(default IDR 10,000,000).",
        "short",
        c.targets((f"max({c.gauge(m.LOW_BALANCE_MERCHANTS)})", "merchants")),
        line=1,
    )


def low_balances_over_time() -> c.Panel:
    """Merchants below their balance threshold over time."""
    return c.timeseries_panel(
        "Low-balance merchants over time",
        "How many merchants are below their balance threshold.",
        "short",
        c.targets((f"max({c.gauge(m.LOW_BALANCE_MERCHANTS)})", "merchants")),
        line=1,
    )


def missing_now() -> c.Panel:
    """Missing callbacks in the last day."""
    return c.stat(
        "Missing callbacks (24 h)",
        "Transactions that passed their callback deadline in the last 24 hours.",
        "short",
        c.targets((c.increase(c.counter(m.CALLBACKS_MISSING), window=DAY), "missing")),
    )


def untrusted_now() -> c.Panel:
    """Untrusted callbacks in the last day."""
    return c.stat(
        "Untrusted callbacks (24 h)",
        "Callbacks that failed verification in the last 24 hours.",
        "short",
        c.targets(
            (c.increase(c.counter(m.CALLBACK_VERIFICATION_FAILURES), window=DAY), "untrusted")
        ),
    )


def vat_tagged() -> c.Panel:
    """Successful transactions tagged with VAT, by mechanism."""
    return c.timeseries_panel(
        "VAT tagging by mechanism",
        "Successful transactions tagged with VAT per second: standard, exempt, reverse_charge.",
        "ops",
        c.targets((c.rate(c.counter(m.VAT_TAGGED), ["mechanism"]), "{{mechanism}}")),
        stacked=True,
    )


def build() -> db.Dashboard:
    """The Settlement dashboard."""
    return c.dashboard(
        UID,
        "Pantau / Settlement",
        "Is money arriving? Settlement delay by channel, callbacks that never came or could not "
        "be trusted, and merchants running low on payout balance.",
        [
            ("Now", [awaiting(), missing_now(), untrusted_now(), low_balances()]),
            ("Delay", [delay_p95(), delay_quantiles()]),
            ("Callbacks", [missing_callbacks(), verification_failures(), callbacks_by_result(),
                           trusted_by_status(), unmatched_callbacks()]),
            ("Balances and VAT", [low_balances_over_time(), vat_tagged()]),
        ],
    )
