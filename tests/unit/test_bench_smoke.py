"""The benchmark harness runs end to end with tiny sizes (no timed assertions: figures only)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import Figure, Report, results_markdown


def _finite(report: Report) -> None:
    assert report.figures
    for fig in report.figures:
        assert math.isfinite(fig.value) and fig.value >= 0, fig


def test_figure_verdicts_follow_the_target_direction() -> None:
    assert Figure("rate", 12_500, "events/s", target=12_000).verdict() == "pass"
    assert Figure("rate", 11_000, "events/s", target=12_000).verdict() == "miss"
    assert Figure("p99", 120, "ms", target=100, higher=False).verdict() == "miss"
    assert Figure("p99", 80, "ms", target=100, higher=False).verdict() == "pass"
    assert Figure("info", 3, "x").verdict() == ""


def test_results_markdown_has_one_row_per_figure_with_machine_and_versions() -> None:
    report = Report(
        "demo",
        [Figure("a", 1.5, "µs/event", target=2, higher=False), Figure("b", 7, "x")],
        ["a note"],
    )
    text = results_markdown([report])
    assert "| demo | a | 1.50 µs/event | < 2.00 | pass |" in text
    assert "| demo | b | 7.00 x |  |  |" in text
    assert "- machine: " in text and "pydantic" in text and "- a note" in text


def test_rules_bench_runs_and_agrees_with_cel() -> None:
    from bench import rules

    pack = rules.fifty_rule_pack()
    assert len(pack.rules) == 50 and len({r.id for r in pack.rules}) == 50
    assert len({r.expression for r in pack.rules}) == 50
    report = rules.run(events=600, batch=200, repeat=1)
    _finite(report)


def test_state_bench_runs_at_a_tiny_size() -> None:
    from bench import state

    report = state.run(small=300, large=600, per_customer=2)
    _finite(report)
    assert len(report.figures) == 4
    assert "customer" in report.notes[0]
    assert [f.what.split(",")[0] for f in report.figures[2:]] == ["eviction sweep per key"] * 2


def test_replay_bench_runs_over_a_small_simulation(tmp_path: Path) -> None:
    from bench import replay

    report = replay.run(hours=0.02, rate=3.0, work=tmp_path)
    _finite(report)
    assert (tmp_path / "out" / "fraud.decisions.jsonl").stat().st_size > 0
    assert "payments: fraud scoring" in report.notes[0]


@pytest.mark.integration
@pytest.mark.slow
def test_live_bench_runs_on_the_embedded_broker() -> None:
    from bench import live

    report = live.run(events=1_500, max_phase_s=30, latency_s=2, two_workers=False)
    assert not [n for n in report.notes if "exited" in n]
    values = {f.what: f.value for f in report.figures}
    assert values["no-op Faust agent, one worker (the ceiling)"] > 0
    assert values["Pantau full pipeline, one worker"] > 0
    assert values["decision latency p99 at half load"] > 0
