"""Alert state: each condition is sent once when it starts firing and once when it resolves."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from models.common import iso_utc
from models.outputs import Alert, AlertStatus, Severity, alert_fingerprint
from streams import metrics
from streams.core import Out


class AlertTracker:
    """Turns per-evaluation conditions into firing/resolved transitions, keyed by fingerprint.

    `state` maps fingerprint → the firing alert's JSON value; pass a Faust table live or a dict
    in replay. Re-evaluating a condition that has not changed sends nothing. Every tracker keeps
    `pantau_alerts_firing{alert}` and `pantau_alert_notifications_total{alert,status}` up to date;
    `names` get a 0 series from the start, so a quiet day still shows them.
    """

    def __init__(
        self,
        topic: str,
        state: MutableMapping[str, Any] | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        self.topic = topic
        self.state: MutableMapping[str, Any] = state if state is not None else {}
        for name in names:
            metrics.child(metrics.ALERTS_FIRING, name).inc(0)
        for value in self.state.values():  # alerts already firing in restored state
            metrics.child(metrics.ALERTS_FIRING, value["alert"]).inc()

    def update(
        self,
        alert: str,
        labels: dict[str, str],
        firing: bool,
        *,
        at: datetime,
        value: float | None = None,
        threshold: float | None = None,
        severity: Severity = Severity.WARNING,
        summary: str = "",
    ) -> list[Out]:
        """Evaluate one condition; returns one Alert message when its status changes."""
        fingerprint = alert_fingerprint(alert, labels)
        current = self.state.get(fingerprint)
        if firing and current is None:
            message = Alert(
                alert=alert,
                fingerprint=fingerprint,
                status=AlertStatus.FIRING,
                severity=severity,
                labels=labels,
                value=value,
                threshold=threshold,
                summary=summary,
                started_at=at,
                at=at,
            )
            out = Out.of(self.topic, fingerprint, message)
            self.state[fingerprint] = out.value
            metrics.child(metrics.ALERTS_FIRING, alert).inc()
            metrics.child(metrics.ALERT_NOTIFICATIONS, alert, "firing").inc()
            return [out]
        if not firing and current is not None:
            del self.state[fingerprint]
            resolved = dict(current)
            resolved.update(
                status=AlertStatus.RESOLVED.value,
                value=value,
                at=iso_utc(at),
            )
            if summary:
                resolved["summary"] = summary
            metrics.child(metrics.ALERTS_FIRING, alert).dec()
            metrics.child(metrics.ALERT_NOTIFICATIONS, alert, "resolved").inc()
            return [Out(self.topic, fingerprint, resolved)]
        return []

    def firing(self) -> list[dict[str, Any]]:
        """The alerts firing now (their firing messages)."""
        return list(self.state.values())

    def release(self) -> None:
        """Take the alerts firing here off `pantau_alerts_firing`: another worker judges them
        now (and counts them, as this tracker did when it restored or fired them)."""
        for value in self.state.values():
            metrics.child(metrics.ALERTS_FIRING, value["alert"]).dec()
