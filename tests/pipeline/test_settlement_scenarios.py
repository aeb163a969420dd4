"""The simulator's settlement-delay, callback-storm and low-balance scenarios through replay: the
right alerts fire and resolve once; forgeries and duplicates change nothing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.payments import PaymentsStage
from streams.pipeline import Pipeline
from streams.replay import replay
from streams.settings import Settings
from streams.settlement import SettlementStage, build_settlement
from streams.sim_callbacks import sim_settings_overrides
from streams.sim_output import replay_line
from streams.simulator import generate, incidents

MY_ALERTS = {
    "settlement_delay_high",
    "callbacks_missing",
    "callback_signature_failures",
    "low_balance",
}
SIM = {"seed": 11, "customers": 1500, "merchants": 40, "diurnal": False}


def simulate(
    path: Path, scenario: str, hours: float, rate: float, drop: tuple[str, ...] = ()
) -> Counter[str]:
    """Write a replay file of a scenario (fraud labels left out: no stage here reads them);
    events whose tag starts with one of `drop` are left out too. Returns the tags written."""
    tags: Counter[str] = Counter()
    with path.open("wb") as fh:
        events = generate(
            scenarios=[scenario], duration=timedelta(hours=hours), tx_per_second=rate, **SIM
        )
        for event in events:
            tag = event.tag or ""
            if event.topic == "fraud.labels" or (drop and tag.startswith(drop)):
                continue
            fh.write(replay_line(event))
            tags[tag.split(":")[0]] += 1
    return tags


def run(events: Path, out: Path) -> tuple[dict[str, list[dict[str, Any]]], SettlementStage]:
    """Replay through the payments stage (VAT, settlement feed) and this issue's stages, with the
    simulator's secrets and allowlists; returns every output topic's values and the settlement
    stage."""
    settings = Settings(**sim_settings_overrides())
    vat, feed, stages = build_settlement(settings)
    payments = PaymentsStage(settings.topics, vat=vat, observers=[feed])
    replay(Pipeline(settings, [payments, *stages]), events, out)
    outputs = {
        f.stem: [orjson.loads(line) for line in f.read_bytes().splitlines()]
        for f in out.glob("*.jsonl")
    }
    [settlement] = [s for s in stages if isinstance(s, SettlementStage)]
    return outputs, settlement


def transitions(outputs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    return [
        (a["fingerprint"], a["status"]) for a in outputs["ops.alerts"] if a["alert"] in MY_ALERTS
    ]


def test_settlement_delay(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    simulate(events, "settlement-delay", hours=8.5, rate=0.6)
    outputs, stage = run(events, tmp_path / "out")
    assert transitions(outputs) == [
        ("callbacks_missing/MANDIRI", "firing"),
        ("settlement_delay_high/MANDIRI/virtual_account", "firing"),
        ("callbacks_missing/MANDIRI", "resolved"),
        ("settlement_delay_high/MANDIRI/virtual_account", "resolved"),
    ]
    firing = [
        a for a in outputs["ops.alerts"] if a["status"] == "firing" and a["alert"] in MY_ALERTS
    ]
    delay = next(a for a in firing if a["alert"] == "settlement_delay_high")
    # The scenario settles 4.5-6.5 h late; the rule's threshold is 4 h.
    assert 4.5 * 3600 <= delay["value"] <= 6.5 * 3600 and delay["threshold"] == 4 * 3600
    assert delay["labels"] == {"channel": "MANDIRI", "method": "virtual_account"}
    # Every trusted payment got its VAT tag; nothing was refused.
    assert outputs["payments.deadletter"] == []
    tagged = [e for e in outputs["payments.enriched"] if e["status"] == "success"]
    assert tagged and all(e["vat"] is not None for e in tagged)
    assert all(e["vat"] is None for e in outputs["payments.enriched"] if e["status"] != "success")
    # Every callback found its transaction, but failed attempts' own failure callbacks: they
    # wait in case a retry comes.
    assert all(stage.recent[tx].get("failed") for tx in stage.early)


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("storm")
    full, clean = base / "full.jsonl", base / "clean.jsonl"
    tags = simulate(full, "callback-storm", hours=1.5, rate=1.0)
    simulate(clean, "callback-storm", hours=1.5, rate=1.0, drop=("forged", "duplicate"))
    return {
        "tags": tags,
        "full": run(full, base / "out-full"),
        "clean": run(clean, base / "out-clean"),
        "events": full,
    }


def test_callback_storm_alerts_fire_and_resolve_once(storm: dict[str, Any]) -> None:
    outputs, _ = storm["full"]
    forged_providers = {
        orjson.loads(letter["raw"])["provider"] for letter in outputs["payments.deadletter"]
    }
    assert forged_providers  # the storm forged callbacks of several providers
    expected: list[tuple[str, str]] = []
    got = transitions(outputs)
    for provider in forged_providers:
        fingerprint = f"callback_signature_failures/{provider}"
        mine = [t for t in got if t[0] == fingerprint]
        assert mine == [(fingerprint, "firing"), (fingerprint, "resolved")]
        expected += mine
    assert sorted(got) == sorted(expected)  # nothing else: no missing callbacks, no delays


def test_every_forgery_is_dead_lettered_with_its_reason(storm: dict[str, Any]) -> None:
    outputs, _ = storm["full"]
    letters = outputs["payments.deadletter"]
    assert len(letters) == storm["tags"]["forged"] > 100
    reasons = Counter(letter["reason"].split(":")[1].split()[1] for letter in letters)
    assert set(reasons) <= {
        "signature_mismatch",
        "source_not_allowed",
        "timestamp_outside_tolerance",
    }
    assert len(reasons) == 3  # wrong secrets, foreign (or leaked-key) addresses, stale replays


def test_forgeries_and_duplicates_change_nothing(storm: dict[str, Any]) -> None:
    (full, full_stage), (clean, clean_stage) = storm["full"], storm["clean"]
    assert storm["tags"]["duplicate"] > 100
    assert full["payments.enriched"] == clean["payments.enriched"]
    assert full_stage.delays == clean_stage.delays
    assert dict(full_stage.recent) == dict(clean_stage.recent)
    assert dict(full_stage.awaiting) == dict(clean_stage.awaiting) == {}
    others = [t for t in transitions(full) if not t[0].startswith("callback_signature_failures")]
    assert others == transitions(clean) == []


def test_low_balance(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    tags = simulate(events, "low-balance", hours=1.5, rate=0.5)
    assert tags["low_balance"] and tags["topup"] == 1
    outputs, _ = run(events, tmp_path / "out")
    [incident] = incidents(
        ["low-balance"], duration=timedelta(hours=1.5), customers=1500, merchants=40
    )
    fingerprint = f"low_balance/{incident.merchant}"
    assert transitions(outputs) == [(fingerprint, "firing"), (fingerprint, "resolved")]
    firing, resolved = (a for a in outputs["ops.alerts"] if a["fingerprint"] == fingerprint)
    assert firing["value"] < 10_000_000 <= resolved["value"]
    assert firing["at"] == incident.start.isoformat(timespec="milliseconds").replace("+00:00", "Z")
