"""Replays of the simulator's channel incidents through payments → health: the failover comes
inside the incident's window, healthy channels never fail over, each incident ends in a restore,
and every alert fires once and resolves once."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.health import HealthObserver, HealthStage
from streams.payments import PaymentsStage
from streams.pipeline import Pipeline
from streams.replay import replay
from streams.scenarios import Incident
from streams.settings import Settings
from streams.simulator import generate, incidents

SETTINGS = Settings()
TOPICS = SETTINGS.topics
RATE = 6.0  # transactions per second: enough for OVO's latency and BCA's volume


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each scenario simulated, written as a replay file, replayed; outputs read back."""
    runs: dict[str, Any] = {}
    for name, minutes in (("bca-outage", 50), ("ovo-latency", 60)):
        base = tmp_path_factory.mktemp(name)
        duration = timedelta(minutes=minutes)
        events = base / "events.jsonl"
        with events.open("wb") as fh:
            for ev in generate(
                scenarios=[name], seed=5, duration=duration, tx_per_second=RATE, diurnal=False
            ):
                if ev.topic == TOPICS.transactions:
                    fh.write(orjson.dumps({"topic": ev.topic, "key": ev.key, "value": ev.value}))
                    fh.write(b"\n")
        stage = HealthStage(TOPICS)
        pipeline = Pipeline(
            SETTINGS, [PaymentsStage(TOPICS, observers=[HealthObserver(TOPICS)]), stage]
        )
        replay(pipeline, events, base / "out")
        runs[name] = {
            "incident": incidents([name], duration=duration)[0],
            "stage": stage,
            **{topic: _read(base / "out" / f"{topic}.jsonl") for topic in TOPICS.outputs()},
        }
    return runs


def _read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _at(value: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(value["at"])


def _signals(run: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    return [s for s in run[TOPICS.failover] if s["channel"] == channel]


def _fire_resolve_once(run: dict[str, Any]) -> dict[str, list[str]]:
    by_fingerprint: dict[str, list[str]] = defaultdict(list)
    for alert in run[TOPICS.alerts]:
        by_fingerprint[alert["fingerprint"]].append(alert["status"])
    return dict(by_fingerprint)


def test_bca_outage(replays: dict[str, Any]) -> None:
    run = replays["bca-outage"]
    incident: Incident = run["incident"]
    assert incident.channel == "BCA"
    signals = _signals(run, "BCA")
    actions = [s["action"] for s in signals]
    # A warning may come one bucket before the failover, when a success breaks the first run.
    assert actions[-3:] == ["failover", "probe", "restore"]
    assert actions[:-3] in ([], ["degrade"])
    failover, probe, restore = signals[-3:]
    # The outage is seen within the first minute: at the first 10 s bucket it closes.
    assert incident.start < _at(failover) <= incident.start + timedelta(minutes=1)
    assert failover["reason"] == "consecutive_provider_failures"
    assert failover["figures"]["consecutive_failures"] >= 8
    assert failover["method"] == "virtual_account"
    assert failover["probe_ratio"] == 0.05
    assert failover["alternatives"] and "BCA" not in failover["alternatives"]
    assert set(failover["alternatives"]) <= {"MANDIRI", "BNI", "BRI", "PERMATA", "CIMB"}
    assert failover["rules_version"] == run["stage"].rules.version
    # Probes start once the provider answers again; restore after 3 minutes of healthy probes.
    assert incident.end < _at(probe) <= incident.end + timedelta(minutes=2)
    assert _at(restore) - _at(probe) >= timedelta(minutes=3)
    assert _at(restore) <= incident.end + timedelta(minutes=6)
    # `since` is when the incident began: the first signal of it.
    assert restore["state"] == "healthy" and restore["since"] == signals[0]["at"]


def test_ovo_latency(replays: dict[str, Any]) -> None:
    run = replays["ovo-latency"]
    incident: Incident = run["incident"]
    signals = _signals(run, "OVO")
    actions = [s["action"] for s in signals]
    failover = next(s for s in signals if s["action"] == "failover")
    # Sustained for 15 minutes (judged every 10 s on the last minute's p95), not before.
    assert (
        incident.start + timedelta(minutes=15)
        <= _at(failover)
        <= incident.start + timedelta(minutes=16)
    )
    assert failover["reason"] == "latency_p95"
    assert failover["figures"]["latency_p95_1m_ms"] > 800
    assert failover["figures"]["consecutive_failures"] < 8  # errors stayed at the healthy rate
    # A warning first, then the failover; the incident ends in a restore.
    assert actions[0] == "degrade"
    assert actions[-1] == "restore"
    assert actions.count("failover") == 1
    assert _at(signals[-1]) > incident.end


@pytest.mark.parametrize("name", ["bca-outage", "ovo-latency"])
def test_healthy_channels_never_fail_over(replays: dict[str, Any], name: str) -> None:
    run = replays[name]
    incident: Incident = run["incident"]
    others = [s for s in run[TOPICS.failover] if s["channel"] != incident.channel]
    assert [s for s in others if s["action"] in ("failover", "probe", "restore")] == []
    # Every channel of the simulation has snapshots; all but the incident's end healthy.
    latest = {h["channel"]: h for h in run[TOPICS.health]}
    assert len(latest) >= 15
    assert {c: h["state"] for c, h in latest.items() if h["state"] != "healthy"} == {}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bca-outage", {"channel_failed_over/BCA", "api_error_rate_high/BCA"}),
        ("ovo-latency", {"channel_failed_over/OVO", "latency_high/OVO"}),
    ],
)
def test_alerts_fire_and_resolve_once_each(
    replays: dict[str, Any], name: str, expected: set[str]
) -> None:
    run = replays[name]
    statuses = _fire_resolve_once(run)
    assert set(statuses) == expected
    assert all(s == ["firing", "resolved"] for s in statuses.values()), statuses
    for alert in run[TOPICS.alerts]:
        assert alert["fingerprint"] == f"{alert['alert']}/{alert['labels']['channel']}"
    incident: Incident = run["incident"]
    fired = [_at(a) for a in run[TOPICS.alerts] if a["status"] == "firing"]
    assert all(incident.start <= t <= incident.end for t in fired)


@pytest.mark.parametrize("name", ["bca-outage", "ovo-latency"])
def test_snapshots_every_ten_seconds_follow_the_state(replays: dict[str, Any], name: str) -> None:
    run = replays[name]
    channel = run["incident"].channel
    snaps = [h for h in run[TOPICS.health] if h["channel"] == channel]
    times = [_at(h) for h in snaps]
    assert all(b - a == timedelta(seconds=10) for a, b in itertools.pairwise(times))
    failover = next(s for s in _signals(run, channel) if s["action"] == "failover")
    restore = _signals(run, channel)[-1]
    during = [h["state"] for h in snaps if _at(failover) <= _at(h) < _at(restore)]
    assert during and set(during) <= {"failed_over", "probing"}
    view = run["stage"].channel_view(channel)
    assert view is not None and view["state"] == "healthy"
    assert view["last_signal"]["action"] == "restore"


def _example() -> Any:
    import importlib.util
    import sys

    path = Path(__file__).parents[2] / "examples" / "failover_consumer.py"
    spec = importlib.util.spec_from_file_location("failover_consumer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_example_router_follows_the_signals(
    replays: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _example()
    signals = replays["bca-outage"][TOPICS.failover]
    table = example.RoutingTable()
    shares = []
    for signal in signals:
        table.apply(signal)
        if signal["channel"] == "BCA":
            shares.append((signal["action"], table.share("BCA")))
            if signal["action"] == "failover":
                assert set(table.alternatives("BCA")) <= {"MANDIRI", "BNI", "BRI", "PERMATA"}
    assert ("failover", 0.05) in shares and shares[-1] == ("restore", 1.0)
    # An old signal delivered again (the topic read from the start) does not undo the restore.
    assert table.apply(next(s for s in signals if s["action"] == "failover")) is False
    assert table.share("BCA") == 1.0
    # Runnable on a replay's output file.
    path = tmp_path / "gateway.failover.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(s) for s in signals))
    assert example.main(["--file", str(path)]) == 0
    assert "BCA" in capsys.readouterr().out
    assert example.main(["--file", str(tmp_path / "missing.jsonl")]) == 2
