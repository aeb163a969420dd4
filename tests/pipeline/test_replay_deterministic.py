"""Replay decides the same way twice; backtests agree with replay; --rules and --model are used."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.sim_output import write_file
from streams.simulator import generate

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("sim")
    path, labels = tmp / "events.jsonl", tmp / "labels.jsonl"
    write_file(
        generate(scenarios=["card-testing", "account-takeover"], seed=11,
                 duration=timedelta(hours=2), tx_per_second=0.4, customers=1500, merchants=30),
        path, labels=labels,
    )  # fmt: skip
    return path, labels


def decisions(out: Path) -> list[dict[str, object]]:
    lines = (out / "fraud.decisions.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def replay(events: Path, out: Path, *extra: str) -> None:
    result = RUNNER.invoke(app, ["replay", str(events), "--out", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output


def test_replay_twice_gives_identical_decisions(events: tuple[Path, Path], tmp_path: Path) -> None:
    replay(events[0], tmp_path / "a")
    replay(events[0], tmp_path / "b")
    first = (tmp_path / "a" / "fraud.decisions.jsonl").read_bytes()
    assert first == (tmp_path / "b" / "fraud.decisions.jsonl").read_bytes()
    found = decisions(tmp_path / "a")
    assert len(found) > 1500
    # The card-testing device is stopped by rules, and every decision names both versions.
    tested = [
        d
        for d in found
        if any(
            h["rule_id"] == "card_testing_device"  # type: ignore[index]
            for h in d["rule_hits"]
        )
    ]  # type: ignore[attr-defined]
    assert tested and all(d["action"] == "decline" for d in tested)
    assert {d["rules_version"] for d in found} == {"core-1"}
    assert all(str(d["model_version"]).startswith("fraud-") for d in found)


def test_rules_and_model_options_are_used_and_backtest_agrees_with_replay(
    events: tuple[Path, Path], tmp_path: Path
) -> None:
    default = Path(__file__).parents[2] / "rules" / "fraud" / "core.yaml"
    strict = tmp_path / "strict.yaml"
    text = default.read_text().replace("version: 1", "version: 2", 1)
    text = text.replace("review: 65", "review: 30")
    strict.write_text(text)
    replay(events[0], tmp_path / "strict", "--rules", str(strict))
    strict_decisions = decisions(tmp_path / "strict")
    assert {d["rules_version"] for d in strict_decisions} == {"core-2"}

    csv_path = tmp_path / "backtest.csv"
    result = RUNNER.invoke(
        app,
        ["rules", "backtest", str(strict), "--events", str(events[0]), "--labels",
         str(events[1]), "--csv", str(csv_path), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "core-2 (candidate) vs core-1 (active)" in result.output
    rows = list(csv.DictReader(csv_path.open()))
    total = {r["pack"]: r for r in rows if r["scope"] == "total"}
    acted = sum(1 for d in strict_decisions if d["action"] != "approve")
    assert int(total["core-2"]["reviewed"]) + int(total["core-2"]["declined"]) == acted
    replay(events[0], tmp_path / "default")
    default_acted = sum(1 for d in decisions(tmp_path / "default") if d["action"] != "approve")
    assert int(total["core-1"]["reviewed"]) + int(total["core-1"]["declined"]) == default_acted
    assert acted > default_acted  # a lower review threshold reviews more
    assert float(total["core-2"]["recall"]) >= float(total["core-1"]["recall"])
    assert {r["scope"] for r in rows} == {"total", "day", "rule"}

    missing = RUNNER.invoke(app, ["replay", str(events[0]), "--out", str(tmp_path / "x"),
                                  "--model", str(tmp_path / "no-model")])  # fmt: skip
    assert missing.exit_code == 2
