"""The failover state machine, table-driven: one case per situation a channel meets."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from models.outputs import ChannelState, FailoverAction
from rules.failover import MachineState, Observation, Transition, step
from rules.health import Thresholds

TH = Thresholds()
STEP = 10.0  # the health stage evaluates every 10 s bucket


def healthy(at: float) -> Observation:
    """A busy channel in good shape: 120 attempts per 5 min, no errors, p95 300 ms."""
    return Observation(
        at=at, attempts=120, provider_errors=0, consecutive_failures=0, attempts_1m=24,
        provider_errors_1m=0, latency_p95_1m_ms=300.0, latency_samples_1m=24, latency_p95_ms=300.0,
        latency_samples=120,
    )


def outage(start: float, end: float = float("inf")) -> Callable[[float], Observation]:
    """Every attempt fails from `start` to `end` (24 attempts a minute)."""

    def obs(at: float) -> Observation:
        if not start <= at < end:
            return healthy(at)
        failed_s = at - start
        fails = int(failed_s / 60 * 24)
        in_5m = min(fails, 120)
        return Observation(
            at=at, attempts=120, provider_errors=in_5m, consecutive_failures=fails,
            attempts_1m=24, provider_errors_1m=min(fails, 24), latency_p95_1m_ms=300.0,
            latency_samples_1m=24, latency_p95_ms=300.0,
        )

    return obs


def error_rate(rate: float, start: float, attempts: int = 120) -> Callable[[float], Observation]:
    """A steady provider error rate from `start`, scattered (never more than 2 in a row)."""

    def obs(at: float) -> Observation:
        if at < start:
            return healthy(at)
        return Observation(
            at=at, attempts=attempts, provider_errors=round(attempts * rate),
            consecutive_failures=2 if rate > 0 else 0, attempts_1m=attempts // 5,
            provider_errors_1m=round(attempts // 5 * rate), latency_p95_1m_ms=300.0,
            latency_samples_1m=attempts // 5, latency_p95_ms=300.0,
        )

    return obs


def slow(start: float, minutes: float, p95: float = 1500.0) -> Callable[[float], Observation]:
    """p95 latency of `p95` ms for `minutes`, no errors."""

    def obs(at: float) -> Observation:
        o = healthy(at)
        if start <= at < start + minutes * 60:
            o.latency_p95_1m_ms = p95
            o.latency_p95_ms = p95
        return o

    return obs


def blips(at: float) -> Observation:
    """One provider failure every two minutes: never two in a row, 1% over 5 minutes."""
    o = healthy(at)
    o.provider_errors = 1 if int(at) % 300 >= 60 else 0
    o.consecutive_failures = 1 if int(at) % 120 < 10 else 0
    o.provider_errors_1m = 1 if int(at) % 120 < 60 else 0
    return o


def low_volume(at: float) -> Observation:
    """A small channel: 3 attempts in 5 minutes, 2 of them provider errors."""
    return Observation(
        at=at, attempts=3, provider_errors=2, consecutive_failures=2, attempts_1m=1,
        provider_errors_1m=1, latency_p95_1m_ms=None, latency_samples_1m=1,
    )


def flapping(at: float) -> Observation:
    """Fails hard for a minute, then is fine for a minute, over and over."""
    if int(at // 60) % 2 == 0:
        return outage(at - (at % 60) - 0.001)(at)
    return healthy(at)


def run(
    timeline: Callable[[float], Observation], minutes: float, th: Thresholds = TH
) -> tuple[list[Transition], MachineState]:
    st = MachineState()
    out: list[Transition] = []
    t = 0.0
    while t <= minutes * 60:
        st, tr = step(st, timeline(t), th)
        if tr is not None:
            out.append(tr)
        t += STEP
    return out, st


@dataclass
class Case:
    name: str
    timeline: Callable[[float], Observation]
    minutes: float
    actions: list[FailoverAction]
    reasons: list[str] = field(default_factory=list)
    final: ChannelState = ChannelState.HEALTHY


F, D, R, P, S = (
    FailoverAction.FAILOVER,
    FailoverAction.DEGRADE,
    FailoverAction.RECOVER,
    FailoverAction.PROBE,
    FailoverAction.RESTORE,
)

CASES = [
    Case("steady", healthy, 30, []),
    Case("hard outage", outage(300), 30, [F], ["consecutive_provider_failures"],
         ChannelState.FAILED_OVER),
    Case("error rate 10% degrades only", error_rate(0.10, 60), 30, [D], ["provider_error_rate"],
         ChannelState.DEGRADED),
    Case("error rate 25% fails over", error_rate(0.25, 60), 30, [F], ["provider_error_rate"],
         ChannelState.FAILED_OVER),
    Case("error rate at 20% boundary fails over", error_rate(0.20, 60), 30, [F],
         ["provider_error_rate"], ChannelState.FAILED_OVER),
    Case("latency 14 minutes: degrade, recover", slow(60, 14), 40, [D, R],
         ["latency_p95", "below_thresholds"]),
    Case("latency 16 minutes: failover, then restore", slow(60, 16), 40, [D, F, P, S],
         ["latency_p95", "latency_p95", "probe_traffic_healthy", "probe_traffic_healthy"]),
    Case("isolated blips", blips, 60, []),
    Case("low volume: 2 errors in 3 attempts", low_volume, 60, []),
    Case("low volume with a big error rate but under min_attempts", error_rate(0.5, 0, 20), 30,
         []),
    Case("recovery with probes", outage(60, 300), 30, [F, P, S],
         ["consecutive_provider_failures", "probe_traffic_healthy", "probe_traffic_healthy"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_machine(case: Case) -> None:
    transitions, final = run(case.timeline, case.minutes)
    assert [t.action for t in transitions] == case.actions
    if case.reasons:
        assert [t.reason for t in transitions] == case.reasons
    assert final.state == case.final.value


def test_hard_outage_fails_over_at_the_eighth_failure() -> None:
    transitions, _ = run(outage(300), 10)
    # 24 failures a minute: the 8th failure lands 20 s into the outage.
    assert transitions[0].at == 320
    assert transitions[0].figures["consecutive_failures"] == 8
    assert transitions[0].probe_ratio == TH.probe_ratio


def test_latency_breach_needs_the_full_sustain_time() -> None:
    transitions, _ = run(slow(60, 16), 40)
    failover = next(t for t in transitions if t.action is F)
    assert failover.at - 60 == TH.latency_sustain_s
    assert failover.figures["latency_breach_s"] == TH.latency_sustain_s


def test_restore_waits_for_cooldown_and_healthy_probes() -> None:
    transitions, final = run(outage(60, 300), 30)
    failover, probe, restore = transitions
    assert probe.at - failover.at >= TH.probe_after_s
    assert restore.at - probe.at >= TH.restore_after_s
    assert restore.at - failover.at >= TH.cooldown_s
    assert restore.since == failover.at  # the incident's start, on every signal of it
    assert final.evidence_from == restore.at


def test_failing_probe_goes_back_to_failed_over() -> None:
    # Healthy for 2 minutes after the outage, then failing again while probing.
    def timeline(at: float) -> Observation:
        if at < 300:
            return outage(60)(at)
        if at < 420:
            return healthy(at)
        return outage(420)(at)

    transitions, final = run(timeline, 20)
    assert [t.action for t in transitions] == [F, P, F]
    assert transitions[2].reason == "probe_consecutive_provider_failures"
    assert final.state == ChannelState.FAILED_OVER.value


def test_flapping_inside_the_cooldown_is_damped() -> None:
    transitions, final = run(flapping, 120)
    actions = [t.action for t in transitions]
    # The input flips 120 times; the channel changes state a handful of times and never restores
    # (a minute of good traffic is never 3 minutes of healthy probes).
    assert actions[0] is F
    assert len(transitions) <= 14
    assert S not in actions and R not in actions
    probes = [t.at for t in transitions if t.action is P]
    waits = [b - a for a, b in itertools.pairwise(probes)]
    assert len(waits) >= 3
    assert waits == sorted(waits) and waits[-1] > waits[0] * 4  # each failed probe waits longer
    assert final.state == "failed_over" and final.failed_probes == len(probes)


def test_failover_soon_after_a_restore_doubles_the_cooldown() -> None:
    first, _ = run(outage(60, 300), 30)
    restore_at = next(t.at for t in first if t.action is S)

    def timeline(at: float) -> Observation:
        if at < restore_at + 60:
            return outage(60, 300)(at)
        return outage(restore_at + 60, restore_at + 180)(at)  # breaks again a minute later

    transitions, final = run(timeline, 60)
    assert [t.action for t in transitions] == [F, P, S, F, P, S]
    second_out = transitions[5].at - transitions[3].at
    assert second_out >= 2 * TH.cooldown_s
    assert final.cooldown_s == 2 * TH.cooldown_s
    assert final.state == "healthy"


def test_degrade_recover_does_not_flap_with_a_wobbling_error_rate() -> None:
    def wobble(at: float) -> Observation:
        rate = 0.08 if int(at // 30) % 2 == 0 else 0.0
        return error_rate(rate, 0)(at)

    transitions, _ = run(wobble, 20)
    actions = [t.action for t in transitions]
    # Degraded at once; a recovery needs the cooldown, during which it keeps wobbling back.
    assert actions[0] is D
    assert len(actions) <= 2 * (20 * 60 // TH.cooldown_s)
    recoveries = [t for t in transitions if t.action is R]
    degrades = [t for t in transitions if t.action is D]
    for d, r in zip(degrades, recoveries, strict=False):
        assert r.at - d.at >= TH.cooldown_s


def test_per_channel_override_changes_the_verdict() -> None:
    strict = Thresholds(consecutive_failures=3)
    transitions, _ = run(outage(300), 10, strict)
    assert transitions[0].at == 310  # at 10 s: 4 failures, over the stricter 3
    assert 3 <= int(transitions[0].figures["consecutive_failures"] or 0) < TH.consecutive_failures


def test_state_round_trips_as_json() -> None:
    _, final = run(outage(60), 10)
    import json

    assert MachineState.from_dict(json.loads(json.dumps(final.to_dict()))) == final
