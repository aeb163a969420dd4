"""Alert state: each condition is sent once when it starts firing and once when it resolves."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from models.common import iso_utc
from models.outputs import Alert, AlertStatus, Severity, alert_fingerprint
from streams.core import Out


class AlertTracker:
    """Turns per-evaluation conditions into firing/resolved transitions, keyed by fingerprint.

    `state` maps fingerprint → the firing alert's JSON value; pass a Faust table live or a dict
    in replay. Re-evaluating a condition that has not changed sends nothing.
    """

    def __init__(self, topic: str, state: MutableMapping[str, Any] | None = None) -> None:
        self.topic = topic
        self.state: MutableMapping[str, Any] = state if state is not None else {}

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
            return [Out(self.topic, fingerprint, resolved)]
        return []

    def firing(self) -> list[dict[str, Any]]:
        """The alerts firing now (their firing messages)."""
        return list(self.state.values())
