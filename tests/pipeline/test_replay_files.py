"""`pantau replay` over hand-written files: ordering, outputs, unreadable lines, exit codes."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.pipeline import build_pipeline
from streams.replay import read_events, replay
from streams.settings import Settings
from tests.conftest import DESIGN_TRANSACTION


def tx(i: int, created_at: str, **changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(DESIGN_TRANSACTION)
    value.update(transaction_id=f"trx-{i}", created_at=created_at, **changes)
    return {"topic": "payments.transactions", "key": value["customer_id"], "value": value}


def write(path: Path, lines: list[Any]) -> Path:
    with path.open("wb") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else orjson.dumps(line))
            fh.write(b"\n")
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_replay_orders_by_event_time_and_writes_every_output(tmp_path: Path) -> None:
    src = write(
        tmp_path / "in.jsonl",
        [
            tx(3, "2026-11-21T03:00:03+07:00"),
            tx(1, "2026-11-21T03:00:01+07:00"),
            tx(2, "2026-11-20T20:00:02Z"),
            tx(4, "2026-11-21T03:00:01+07:00"),  # ties keep file order
        ],
    )
    out = tmp_path / "out"
    result = replay(build_pipeline(Settings()), src, out)
    settings = Settings()
    for topic in settings.topics.outputs():
        assert (out / f"{topic}.jsonl").exists(), topic
    enriched = read(out / "payments.enriched.jsonl")
    assert [e["transaction_id"] for e in enriched] == ["trx-1", "trx-4", "trx-2", "trx-3"]
    assert result.records == 4 and result.unreadable == 0


def test_unreadable_lines_go_to_dead_letters_with_line_numbers(tmp_path: Path) -> None:
    src = write(
        tmp_path / "in.jsonl",
        [
            tx(1, "2026-11-21T03:00:01+07:00"),
            b"{not json",
            {"topic": "payments.unknown", "value": {}},
            {"topic": "payments.transactions", "value": 7},
            tx(2, "2026-11-21T03:00:02+07:00", amount="0"),
            {"topic": "payments.transactions", "value": '{"half": '},
        ],
    )
    out = tmp_path / "out"
    replay(build_pipeline(Settings()), src, out)
    letters = read(out / "payments.deadletter.jsonl")
    by_line = {d["line"]: d for d in letters}
    assert sorted(by_line) == [2, 3, 4, 5, 6]
    assert by_line[3]["reason"].startswith("line 3: topic must be one of the input topics")
    assert by_line[5]["reason"] == "amount: must be ≥ 0.01"
    assert by_line[5]["source_topic"] == "payments.transactions"
    assert by_line[6]["reason"].startswith("not valid JSON")
    assert len(read(out / "payments.enriched.jsonl")) == 1


def test_events_without_time_keep_their_place(tmp_path: Path) -> None:
    bad_time = tx(2, "not a time")
    src = write(
        tmp_path / "in.jsonl",
        [tx(1, "2026-11-21T03:00:05+07:00"), bad_time, tx(3, "2026-11-21T03:00:01+07:00")],
    )
    records, _ = read_events(src, Settings().topics)
    assert [r.line for _, _, r in records] == [3, 1, 2]


def test_cli_missing_input_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["replay", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in result.output


def test_cli_replay_writes_files(tmp_path: Path) -> None:
    src = write(tmp_path / "in.jsonl", [tx(1, "2026-11-21T03:00:01+07:00")])
    result = CliRunner().invoke(app, ["replay", str(src), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    assert len(read(tmp_path / "o" / "payments.enriched.jsonl")) == 1


def test_cli_replay_trusts_simulated_callbacks_with_their_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PANTAU_SECRETS_FILE", raising=False)
    runner = CliRunner()
    events, secrets = tmp_path / "sim.jsonl", tmp_path / "secrets.yaml"
    made = runner.invoke(
        app, ["simulate", "--out", str(events), "--secrets-file", str(secrets), "--duration", "3m"]
    )
    assert made.exit_code == 0, made.output
    callbacks = sum(1 for line in read(events) if line["topic"] == "payments.callbacks")
    assert callbacks > 50

    untrusted = runner.invoke(app, ["replay", str(events), "--out", str(tmp_path / "a"), "-q"])
    assert untrusted.exit_code == 0, untrusted.output
    letters = read(tmp_path / "a" / "payments.deadletter.jsonl")
    assert len(letters) == callbacks, "without the secrets no callback is trusted"

    trusted = runner.invoke(
        app, ["replay", str(events), "--out", str(tmp_path / "b"), "--secrets", str(secrets), "-q"]
    )
    assert trusted.exit_code == 0, trusted.output
    assert read(tmp_path / "b" / "payments.deadletter.jsonl") == []
    assert "PANTAU_SECRETS_FILE" not in os.environ, "the CLI must leave the environment as it was"


def test_windowed_batches_give_the_outputs_of_strict_event_order(tmp_path: Path) -> None:
    """Replay groups up to 10 s of event time by topic (for speed); every output file holds the
    same messages as when each batch is a run of one topic in strict event order."""
    from datetime import timedelta

    import streams.replay as replay_module
    from streams.sim_callbacks import sim_settings_overrides
    from streams.sim_output import write_file
    from streams.simulator import generate

    events = tmp_path / "events.jsonl"
    write_file(
        generate(seed=4, duration=timedelta(minutes=20), tx_per_second=3.0, customers=500,
                 invalid_rate=0.02, scenarios=("card-testing", "bca-outage", "callback-storm")),
        events,
    )  # fmt: skip
    settings = Settings(**sim_settings_overrides())
    windowed = replay_module.replay(build_pipeline(settings), events, tmp_path / "windowed")
    strict_batches = replay_module._batches

    def strict(records: Any, size: int, barriers: Any = frozenset()) -> Any:
        return strict_batches(records, size, barriers, window_s=0.0)

    replay_module._batches = strict  # type: ignore[assignment]
    try:
        plain = replay_module.replay(build_pipeline(settings), events, tmp_path / "strict")
    finally:
        replay_module._batches = strict_batches
    assert set(windowed.written) == set(plain.written)
    assert sum(windowed.written.values()) > 5000
    health = settings.topics.health
    for name in windowed.written:
        a = (tmp_path / "windowed" / f"{name}.jsonl").read_bytes().splitlines()
        b = (tmp_path / "strict" / f"{name}.jsonl").read_bytes().splitlines()
        if name == settings.topics.deadletter:  # `at` is processing time
            a = [orjson.dumps({**orjson.loads(x), "at": None}) for x in a]
            b = [orjson.dumps({**orjson.loads(x), "at": None}) for x in b]
        if name == health:
            # A channel counts as heard up to its deltas' progress (the batch's latest event
            # time), so where a quiet channel stops being judged can move by a batch: a few more
            # snapshots, every shared one identical.
            assert set(b) <= set(a) and len(a) - len(b) <= len(b) // 100, name
        else:
            assert sorted(a) == sorted(b), name


def test_rule_packs_and_labels_stay_in_place_in_a_window() -> None:
    from datetime import UTC, datetime

    from streams.core import Record
    from streams.replay import _batches

    at = datetime(2026, 11, 21, tzinfo=UTC)
    order = ["tx", "cb", "tx", "labels", "tx", "cb", "cb", "tx"]
    records = [(at, i, Record(topic, b"{}", line=i)) for i, topic in enumerate(order)]
    got = [[r.line for r in batch] for batch in _batches(records, 500, frozenset({"labels"}))]
    assert got == [[0, 2], [1], [3], [4, 7], [5, 6]]
    capped = [[r.line for r in b] for b in _batches(records, 2, frozenset({"labels"}))]
    assert capped == [[0], [1], [2], [3], [4], [5], [6], [7]]
