"""docs/fraud.md names every value a rule can read, and its example commands' verbs exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from models.features import ENTITIES, SCHEMA, WINDOWS
from streams.cli import app

DOC = (Path(__file__).parents[2] / "docs" / "fraud.md").read_text(encoding="utf-8")


def test_every_name_a_rule_can_read_is_documented() -> None:
    velocity = {f"{e}_{k}_{w}" for e in ENTITIES for k in ("count", "amount") for w in WINDOWS}
    assert "`<entity>_count_<window>`" in DOC and "`<entity>_amount_<window>`" in DOC
    for entity in ENTITIES:
        assert f"`{entity}`" in DOC
    for window in WINDOWS:
        assert f"`{window}`" in DOC
    missing = [n for n in SCHEMA if n not in velocity and f"`{n}`" not in DOC]
    assert not missing


def test_documented_commands_exist() -> None:
    runner = CliRunner()
    for verb in sorted(set(re.findall(r"\$ pantau ([a-z]+(?: [a-z]+)?)", DOC))):
        words = verb.split()
        if words[0] != "rules":
            words = words[:1]
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (verb, result.output)
