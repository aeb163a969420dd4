"""The per-channel failover state machine: healthy → degraded → failed_over → probing → healthy.

Pure: `step(state, observation, thresholds)` returns the next state and at most one transition.
Times are epoch seconds of event time, so the state is plain JSON (a Faust table value or a dict).

- **failover** (from healthy or degraded) when any of: `consecutive_failures` provider failures in
  a row; provider error rate ≥ `failover_error_rate` over the rate window with at least
  `min_attempts`; the 1-minute p95 above `failover_latency_p95_ms` for `latency_sustain_s`
  (judged only on minutes with `min_latency_samples`; a minute without enough samples neither
  breaks nor extends the breach).
- **degrade** (healthy → degraded) when the error rate (with `degraded_min_attempts`) reaches
  `degraded_error_rate` or the 5-minute p95 exceeds `degraded_latency_p95_ms`; **recover** when
  both are clear again and the channel has been degraded for at least the cooldown.
- **probe** (failed_over → probing) after `probe_after_s` once the last minute of probe traffic
  (at least `min_probe_attempts`) is healthy; probing falls back to failed_over (a new failover)
  as soon as the probe traffic fails again; after a failed probe the next one waits the cooldown,
  doubled for each further failed probe of the incident (up to `max_cooldown_s`).
- **restore** (probing → healthy) when the probe traffic has been healthy for `restore_after_s`
  and the cooldown since the latest failover has passed. A failover within the cooldown after a
  restore doubles the channel's cooldown (up to `max_cooldown_s`): a flapping channel stays out
  longer each time. After a restore, rate evidence counts only from the restore (`evidence_from`),
  so the outage that was already acted on cannot fail the channel over again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from models.outputs import ChannelState, FailoverAction
from rules.health import Thresholds


@dataclass(slots=True)
class Observation:
    """What the health stage measured for one channel when a 10 s bucket closed."""

    at: float  # event time (epoch seconds) of the evaluation: a bucket boundary
    attempts: int = 0  # over the rate window (5 min by default), counted from evidence_from
    provider_errors: int = 0
    consecutive_failures: int = 0
    attempts_1m: int = 0  # the last minute: judges probe traffic
    provider_errors_1m: int = 0
    latency_p95_1m_ms: float | None = None
    latency_samples_1m: int = 0
    latency_p95_ms: float | None = None  # over 5 minutes: judges "degraded"
    latency_samples: int = 0

    @property
    def error_rate(self) -> float:
        return self.provider_errors / self.attempts if self.attempts else 0.0

    @property
    def error_rate_1m(self) -> float:
        return self.provider_errors_1m / self.attempts_1m if self.attempts_1m else 0.0


@dataclass(slots=True)
class MachineState:
    """One channel's failover state (JSON-able through `to_dict`/`from_dict`)."""

    state: str = ChannelState.HEALTHY.value
    since: float = 0.0  # when the current state was entered
    incident_since: float | None = None  # when the channel last left healthy
    latency_breach_since: float | None = None
    failed_over_at: float | None = None
    restored_at: float | None = None
    cooldown_s: float | None = None  # the current cooldown (grows while a channel flaps)
    evidence_from: float = 0.0  # rate evidence counts from here (the latest restore)
    failed_probes: int = 0  # probes that failed in this incident (each doubles the next wait)
    transitions: int = 0  # transitions this machine made itself (0: it may still be resumed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineState:
        return cls(**data)


@dataclass(slots=True)
class Transition:
    """One state change: exactly one FailoverSignal on gateway.failover."""

    action: FailoverAction
    state: ChannelState
    reason: str
    at: float
    since: float  # when the incident started (the channel left healthy)
    probe_ratio: float
    figures: dict[str, float | int | None] = field(default_factory=dict)


def _figures(obs: Observation, st: MachineState) -> dict[str, float | int | None]:
    breach = obs.at - st.latency_breach_since if st.latency_breach_since is not None else None
    return {
        "consecutive_failures": obs.consecutive_failures,
        "provider_error_rate_5m": round(obs.error_rate, 4),
        "attempts_5m": obs.attempts,
        "latency_p95_ms": None if obs.latency_p95_ms is None else round(obs.latency_p95_ms, 1),
        "latency_p95_1m_ms": (
            None if obs.latency_p95_1m_ms is None else round(obs.latency_p95_1m_ms, 1)
        ),
        "latency_breach_s": breach,
        "provider_error_rate_1m": round(obs.error_rate_1m, 4),
        "attempts_1m": obs.attempts_1m,
    }


def failover_reason(obs: Observation, st: MachineState, th: Thresholds) -> str | None:
    """Why the channel must fail over now, or None."""
    if obs.consecutive_failures >= th.consecutive_failures:
        return "consecutive_provider_failures"
    if obs.attempts >= th.min_attempts and obs.error_rate >= th.failover_error_rate:
        return "provider_error_rate"
    if (
        st.latency_breach_since is not None
        and obs.at - st.latency_breach_since >= th.latency_sustain_s
    ):
        return "latency_p95"
    return None


def warning_reason(obs: Observation, th: Thresholds) -> str | None:
    """Why the channel is degraded now (below failover thresholds), or None."""
    if obs.attempts >= th.degraded_min_attempts and obs.error_rate >= th.degraded_error_rate:
        return "provider_error_rate"
    if (
        obs.latency_samples >= th.min_latency_samples
        and obs.latency_p95_ms is not None
        and obs.latency_p95_ms > th.degraded_latency_p95_ms
    ):
        return "latency_p95"
    return None


def probe_verdict(obs: Observation, th: Thresholds) -> tuple[bool | None, str]:
    """Judge the last minute of (probe) traffic: True healthy, False failing, None too little."""
    if obs.consecutive_failures >= th.consecutive_failures:
        return False, "consecutive_provider_failures"
    if obs.attempts_1m < th.min_probe_attempts:
        return None, "too_little_probe_traffic"
    if obs.error_rate_1m >= th.failover_error_rate:
        return False, "provider_error_rate"
    if obs.latency_p95_1m_ms is not None and obs.latency_p95_1m_ms > th.failover_latency_p95_ms:
        return False, "latency_p95"
    if obs.error_rate_1m >= th.degraded_error_rate:
        return None, "probe_error_rate_above_warning"
    return True, "probe_traffic_healthy"


def _track_latency(st: MachineState, obs: Observation, th: Thresholds) -> None:
    if obs.latency_samples_1m < th.min_latency_samples or obs.latency_p95_1m_ms is None:
        return  # too few samples: neither breaks nor extends the breach
    if obs.latency_p95_1m_ms > th.failover_latency_p95_ms:
        if st.latency_breach_since is None:
            st.latency_breach_since = obs.at
    else:
        st.latency_breach_since = None


def step(
    current: MachineState, obs: Observation, th: Thresholds
) -> tuple[MachineState, Transition | None]:
    """The next state of one channel after an observation, and the transition if it changed."""
    st = replace(current)  # every field is a scalar: a shallow copy is a whole one
    _track_latency(st, obs, th)
    state = ChannelState(st.state)
    figures = _figures(obs, st)

    def move(to: ChannelState, action: FailoverAction, reason: str, ratio: float) -> Transition:
        st.state = to.value
        st.since = obs.at
        st.transitions += 1
        if to is ChannelState.HEALTHY:
            incident = st.incident_since if st.incident_since is not None else obs.at
            st.incident_since = None
        else:
            if st.incident_since is None:
                st.incident_since = obs.at
            incident = st.incident_since
        return Transition(action, to, reason, obs.at, incident, ratio, figures)

    if state in (ChannelState.HEALTHY, ChannelState.DEGRADED):
        reason = failover_reason(obs, st, th)
        if reason is not None:
            flapping = st.restored_at is not None and obs.at - st.restored_at < (
                st.cooldown_s or th.cooldown_s
            )
            if flapping:
                st.cooldown_s = min((st.cooldown_s or th.cooldown_s) * 2, th.max_cooldown_s)
            else:
                st.cooldown_s = th.cooldown_s
            st.failed_over_at = obs.at
            tr = move(ChannelState.FAILED_OVER, FailoverAction.FAILOVER, reason, th.probe_ratio)
            return st, tr
        warning = warning_reason(obs, th)
        if state is ChannelState.HEALTHY and warning is not None:
            return st, move(ChannelState.DEGRADED, FailoverAction.DEGRADE, warning, 0.0)
        if (
            state is ChannelState.DEGRADED
            and warning is None
            and obs.at - st.since >= th.cooldown_s
        ):
            return st, move(ChannelState.HEALTHY, FailoverAction.RECOVER, "below_thresholds", 0.0)
        return st, None

    verdict, why = probe_verdict(obs, th)
    if state is ChannelState.FAILED_OVER:
        wait = th.probe_after_s
        if st.failed_probes:
            wait = min(th.cooldown_s * 2 ** (st.failed_probes - 1), th.max_cooldown_s)
        if obs.at - st.since >= wait and verdict is True:
            return st, move(ChannelState.PROBING, FailoverAction.PROBE, why, th.probe_ratio)
        return st, None

    # PROBING
    if verdict is False:
        st.failed_over_at = obs.at
        st.failed_probes += 1
        tr = move(ChannelState.FAILED_OVER, FailoverAction.FAILOVER, f"probe_{why}", th.probe_ratio)
        return st, tr
    cooldown = st.cooldown_s or th.cooldown_s
    if (
        verdict is True
        and obs.at - st.since >= th.restore_after_s
        and st.failed_over_at is not None
        and obs.at - st.failed_over_at >= cooldown
    ):
        st.restored_at = obs.at
        st.evidence_from = obs.at
        st.failed_probes = 0
        st.latency_breach_since = None
        return st, move(ChannelState.HEALTHY, FailoverAction.RESTORE, why, 0.0)
    return st, None


def resumed(state: str, at: float, since: float, th: Thresholds) -> MachineState:
    """A channel's state rebuilt from its latest gateway.failover signal (after a restart or a
    rebalance, before this machine made a transition of its own): it carries on from there, so a
    channel that was failed over is probed and restored rather than forgotten."""
    st = MachineState(state=ChannelState(state).value, since=at)
    if st.state != ChannelState.HEALTHY.value:
        st.incident_since = since
    if st.state in (ChannelState.FAILED_OVER.value, ChannelState.PROBING.value):
        st.failed_over_at = at
        st.cooldown_s = th.cooldown_s
    if st.state == ChannelState.HEALTHY.value:
        st.restored_at = at
        st.evidence_from = at
    return st
