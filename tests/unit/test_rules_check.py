"""`rules check` messages: file:line:col, did-you-mean suggestions, type errors, duplicates."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rules.check import check_file, check_text
from streams.cli import app

GOOD = """\
id: test
version: 3
rules:
  - id: burst
    description: many attempts
    expression: customer_count_10m >= 10 && amount > 1000.0
    action: review
    score: 30
    examples:
      match: [{customer_count_10m: 12, amount: 5000.0}]
      no_match: [{customer_count_10m: 2, amount: 5000.0}]
"""


def problems(text: str) -> list[str]:
    return [str(p) for p in check_text(text, "pack.yaml").problems]


def test_a_good_pack_passes_and_runs_its_examples() -> None:
    result = check_text(GOOD, "pack.yaml")
    assert result.ok, result.problems
    assert result.examples_run == 2
    assert result.pack is not None and result.pack.label == "test-3"


def test_unknown_name_points_at_it_and_suggests_the_closest() -> None:
    text = GOOD.replace("customer_count_10m >= 10", "customer_cuont_10m >= 10")
    assert problems(text) == [
        "pack.yaml:6:17: rule burst: unknown name 'customer_cuont_10m' "
        "(did you mean customer_count_10m?)"
    ]


def test_syntax_error_gives_file_line_and_column() -> None:
    text = GOOD.replace("customer_count_10m >= 10 &&", "customer_count_10m >= &&")
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith("pack.yaml:6:39: rule burst: Syntax error")


def test_syntax_error_inside_a_block_expression_maps_to_its_line() -> None:
    text = GOOD.replace(
        "    expression: customer_count_10m >= 10 && amount > 1000.0\n",
        "    expression: |\n      customer_count_10m >= 10\n        && amount > > 1000.0\n",
    )
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith("pack.yaml:8:21: rule burst: Syntax error")


def test_type_errors_are_reported() -> None:
    text = GOOD.replace("amount > 1000.0", 'amount > "1000"')
    assert problems(text) == ["pack.yaml:6:45: rule burst: cannot compare double with string"]
    text = GOOD.replace("amount > 1000.0", "amount + 1 > 1000.0")
    assert "CEL does not mix int and double" in problems(text)[0]
    text = GOOD.replace("customer_count_10m >= 10 && amount > 1000.0", "customer_count_10m + 1")
    assert problems(text) == ["pack.yaml:6:17: rule burst: expression must be bool, is int"]


def test_duplicate_ids_and_failing_examples() -> None:
    text = GOOD + GOOD[GOOD.index("  - id: burst") :].replace("score: 30", "score: 10")
    assert "pack.yaml:12:9: duplicate rule id 'burst' (first at line 4)" in problems(text)
    text = GOOD.replace("match: [{customer_count_10m: 12", "match: [{customer_count_10m: 9")
    (found,) = problems(text)
    assert found.startswith("pack.yaml:10:7: rule burst: match example 1 should match but does not")


def test_example_values_are_checked_against_the_schema() -> None:
    text = GOOD.replace("no_match: [{customer_count_10m: 2", "no_match: [{customer_count_1m: 2")
    (found,) = problems(text)
    assert "unknown name 'customer_count_1m' (did you mean customer_count_10m?)" in found
    text = GOOD.replace("no_match: [{customer_count_10m: 2", 'no_match: [{customer_count_10m: "2"')
    assert "customer_count_10m must be int" in problems(text)[0]


def test_schema_errors_name_their_line() -> None:
    text = GOOD.replace("action: review", "action: block")
    (found,) = problems(text)
    assert found.startswith("pack.yaml:7:13: rules.0.action: Input should be")
    assert problems("id: x\nversion: [1\n")[0].startswith("pack.yaml:")


def test_reason_templates_may_only_name_known_values() -> None:
    text = GOOD.replace("    score: 30\n", "    score: 30\n    reason: '{amount.__class__}'\n")
    assert "reason: unknown name '{amount.__class__}'" in problems(text)[0]


def test_cli_exits_0_for_a_good_pack_and_2_with_the_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("amount > 1000.0", "amout > 1000.0"))
    runner = CliRunner()
    ok = runner.invoke(app, ["rules", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "test-3" in ok.output
    refused = runner.invoke(app, ["rules", "check", str(bad)])
    assert refused.exit_code == 2
    assert f"{bad}:6:45: rule burst: unknown name 'amout' (did you mean amount?)" in (
        refused.output.replace("\n", "")
    )
    missing = runner.invoke(app, ["rules", "check", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2


def test_the_default_pack_passes() -> None:
    result = check_file(Path(__file__).parents[2] / "rules" / "fraud" / "core.yaml")
    assert result.ok, [str(p) for p in result.problems]


def test_unknown_functions_are_named_with_a_suggestion() -> None:
    text = GOOD.replace("amount > 1000.0", 'card_bin.startswith("4")')
    assert problems(text) == [
        "pack.yaml:6:54: rule burst: unknown function 'startswith' (did you mean startsWith?)"
    ]
    text = GOOD.replace("amount > 1000.0", "size(card_bin) >= 0")  # runs row by row: fine
    assert problems(text) == []
