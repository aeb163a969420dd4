"""Simulate → replay: every input line is accounted for (outputs + dead letters = inputs)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.pipeline import build_pipeline
from streams.replay import ReplayResult, replay
from streams.scenarios import SCENARIOS
from streams.settings import Settings
from streams.sim_callbacks import sim_settings_overrides
from streams.sim_output import write_file
from streams.simulator import SimEvent, generate
from streams.topics import Topics

TOPICS = Topics()


@dataclass
class Run:
    events: list[SimEvent]  # line n of the file is events[n - 1]
    out: Path
    result: ReplayResult

    def lines_of(self, topic: str, *, tag_prefixes: tuple[str, ...] = ()) -> set[int]:
        """Input line numbers of a topic (only those whose tag starts with one of the prefixes)."""
        return {
            n
            for n, e in enumerate(self.events, start=1)
            if e.topic == topic
            and (not tag_prefixes or (e.tag is not None and e.tag.startswith(tag_prefixes)))
        }

    def output(self, topic: str) -> list[dict[str, Any]]:
        path = self.out / f"{topic}.jsonl"
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """An hour of every scenario with 2% invalid events, replayed with the simulator's secrets."""
    base = tmp_path_factory.mktemp("simulate-replay")
    events = list(
        generate(
            scenarios=list(SCENARIOS),
            seed=21,
            duration=timedelta(minutes=60),
            tx_per_second=1.0,
            customers=1000,
            merchants=60,
            invalid_rate=0.02,
        )
    )
    path = base / "events.jsonl"
    write_file(iter(events), path)
    pipeline = build_pipeline(Settings(**sim_settings_overrides()))
    result = replay(pipeline, path, base / "out")
    return Run(events, base / "out", result)


def test_every_line_is_read_and_every_output_file_written(run: Run) -> None:
    assert run.result.lines == run.result.records == len(run.events)
    assert run.result.unreadable == 0
    for topic in TOPICS.outputs():
        assert (run.out / f"{topic}.jsonl").exists(), topic
    assert {e.topic for e in run.events} == {
        TOPICS.transactions, TOPICS.callbacks, TOPICS.balances, TOPICS.labels
    }  # fmt: skip


def test_dead_letters_point_at_distinct_input_lines_of_their_topic(run: Run) -> None:
    letters = run.output(TOPICS.deadletter)
    lines = [d["line"] for d in letters]
    assert len(lines) == len(set(lines))  # no input line is dead-lettered twice
    for d in letters:
        assert d["reason"]
        assert run.events[d["line"] - 1].topic == d["source_topic"]


def test_transactions_enriched_plus_dead_letters_equal_inputs(run: Run) -> None:
    inputs = run.lines_of(TOPICS.transactions)
    invalid = run.lines_of(TOPICS.transactions, tag_prefixes=("invalid:",))
    assert len(invalid) > 20
    letters = {d["line"] for d in run.output(TOPICS.deadletter)
               if d["source_topic"] == TOPICS.transactions}  # fmt: skip
    enriched = run.output(TOPICS.enriched)
    assert len(enriched) + len(letters) == len(inputs)
    assert letters == invalid  # exactly the invalid ones, each once
    valid_ids = Counter(run.events[n - 1].value["transaction_id"] for n in inputs - invalid)
    assert Counter(e["transaction_id"] for e in enriched) == valid_ids


@pytest.mark.parametrize(
    ("topic", "refused"),
    [
        # Untrusted callbacks (forged signatures, foreign addresses, stale timestamps) are
        # dead-lettered like invalid ones; genuine ones and duplicates are consumed.
        (TOPICS.callbacks, ("invalid:", "forged:")),
        (TOPICS.balances, ("invalid:",)),
        (TOPICS.labels, ("invalid:",)),
    ],
)
def test_other_inputs_are_consumed_and_only_bad_ones_dead_lettered(
    run: Run, topic: str, refused: tuple[str, ...]
) -> None:
    inputs = run.lines_of(topic)
    bad = run.lines_of(topic, tag_prefixes=refused)
    letters = {d["line"] for d in run.output(TOPICS.deadletter) if d["source_topic"] == topic}
    assert letters <= inputs
    # Every bad input is refused; whatever stage consumes the topic, no more dead letters than
    # bad inputs (a stage may legitimately consume an input without an output of its own).
    assert bad <= letters
    assert len(letters) <= len(bad)
    if topic == TOPICS.callbacks:
        assert len(bad) > 100


def test_cli_simulate_then_replay(tmp_path: Path) -> None:
    """One smoke test through the console entry points, as a user runs them."""
    events, secrets, out = tmp_path / "ev.jsonl", tmp_path / "secrets.yaml", tmp_path / "out"
    simulate = [sys.executable, "-m", "streams.cli", "simulate", "--out", str(events),
                "--duration", "6m", "--rate", "2", "--seed", "3", "--scenario", "bca-outage",
                "--invalid-rate", "0.05", "--secrets-file", str(secrets), "-q"]  # fmt: skip
    done = subprocess.run(simulate, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = events.read_bytes().splitlines()
    assert lines
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env["PANTAU_SECRETS_FILE"] = str(secrets)
    replayed = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", str(events), "--out", str(out), "-q"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    written = {p.name for p in out.iterdir()}
    assert {f"{t}.jsonl" for t in TOPICS.outputs()} <= written
    sent = Counter(orjson.loads(line)["topic"] for line in lines)
    enriched = len((out / f"{TOPICS.enriched}.jsonl").read_bytes().splitlines())
    letters = [
        orjson.loads(x) for x in (out / f"{TOPICS.deadletter}.jsonl").read_bytes().splitlines()
    ]
    tx_letters = sum(1 for d in letters if d["source_topic"] == TOPICS.transactions)
    assert enriched + tx_letters == sent[TOPICS.transactions]
    assert 0 < tx_letters < sent[TOPICS.transactions] * 0.15
    # The secrets file made the replay trust the simulator's callbacks: only the deliberately
    # broken ones are refused (without it, every callback would be).
    cb_letters = sum(1 for d in letters if d["source_topic"] == TOPICS.callbacks)
    assert 0 < cb_letters < sent[TOPICS.callbacks] * 0.15
