"""Prometheus alert rules: promtool checks and unit tests pass, every alert is tested both ways."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.queries import known_series, metric_names
from streams import metrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "dashboards" / "prometheus"
RULES = PROM / "pantau.rules.yml"
RULE_TESTS = PROM / "tests" / "pantau.rules.test.yml"
DOC = ROOT / "docs" / "dashboards.md"
# Series Prometheus itself adds to what it scrapes.
PROMETHEUS_SERIES = {"up"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: run `make promtool` (Debian package `prometheus`)"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    text = RULES.read_text(encoding="utf-8")
    loosened = text.replace(
        'max by (channel) (pantau_window_attempts{window="5m"}) >= 100',
        'max by (channel) (pantau_window_attempts{window="5m"}) >= 10',
    )
    assert loosened != text
    (tmp_path / RULES.name).write_text(loosened, encoding="utf-8")
    result = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    report = result.stdout + result.stderr
    assert result.returncode != 0
    assert "alertname: PantauApiErrorRateHigh" in report
    assert 'channel="OVO"' in report  # the low-volume channel would now page


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in data["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"
    assert (firing | quiet) <= alerts, "tests name alerts that do not exist"


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_has_severity_summary_and_a_runbook_that_exists(name: str) -> None:
    rule = _alerts()[name]
    assert rule["labels"]["severity"] in {"page", "critical", "warning", "ticket"}
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    doc, _, anchor = annotations["runbook_url"].partition("#")
    assert doc == "docs/dashboards.md" and anchor == name.lower()
    headings = re.findall(r"^#+\s+(\S+)\s*$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert name in headings, f"docs/dashboards.md has no runbook heading for {name}"


def test_rule_expressions_name_only_registered_metrics() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = known_series(metrics.REGISTRY) | recorded | PROMETHEUS_SERIES
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, rule
        unknown = names - known
        assert not unknown, f"{rule.get('alert') or rule['record']}: {sorted(unknown)}"


def test_thresholds_mirror_the_rules_folder() -> None:
    health = yaml.safe_load((ROOT / "rules" / "health.yaml").read_text(encoding="utf-8"))
    alerts = _alerts()
    api = alerts["PantauApiErrorRateHigh"]["expr"]
    assert f"> {health['alerts']['api_error_rate']}" in api
    assert f">= {health['alerts']['min_attempts']}" in api
    latency_s = health["alerts"]["latency_p95_ms"] / 1000
    assert f"> {latency_s}" in alerts["PantauLatencyHigh"]["expr"]
    assert f"> {health['alerts']['deadletter_rate']}" in alerts["PantauDeadLetterRateHigh"]["expr"]

    settlement = yaml.safe_load((ROOT / "rules" / "settlement.yaml").read_text(encoding="utf-8"))
    rules = settlement["alerts"]
    delay = alerts["PantauSettlementDelayHigh"]["expr"]
    assert f"> {rules['settlement_delay_high']['p95_s']:.0f}" in delay
    missing = alerts["PantauCallbacksMissing"]["expr"]
    assert f"[{rules['callbacks_missing']['window_s'] // 3600}h]" in missing
    assert f"> {rules['callbacks_missing']['threshold']}" in missing
    forged = alerts["PantauCallbackSignatureFailures"]["expr"]
    assert f"[{rules['callback_signature_failures']['window_s'] // 60}m]" in forged
    assert f"> {rules['callback_signature_failures']['threshold']}" in forged


def test_burn_rate_alerts_follow_the_sre_workbook() -> None:
    alerts = _alerts()
    expected = {
        "PantauPaymentSLOBurnFast": ("14.4", "1h", "5m", "page"),
        "PantauPaymentSLOBurnMedium": ("6", "6h", "30m", "page"),
        "PantauPaymentSLOBurnSlow": ("1", "3d", "6h", "ticket"),
    }
    for name, (factor, long, short, severity) in expected.items():
        expr = alerts[name]["expr"]
        assert f"ratio_rate{long} > ({factor} * 0.01)" in expr, name
        assert f"ratio_rate{short} > ({factor} * 0.01)" in expr, name
        assert alerts[name]["labels"]["severity"] == severity
