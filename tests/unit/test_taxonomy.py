"""The error taxonomy and rules/health.yaml: classes of codes, per-channel overrides, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.health import HealthRulesError, load_health_rules, parse_health_rules
from rules.taxonomy import ErrorClass

RULES = load_health_rules()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("failed", "500", ErrorClass.PROVIDER),
        ("failed", "503", ErrorClass.PROVIDER),
        ("failed", "504", ErrorClass.PROVIDER),
        ("failed", "599", ErrorClass.PROVIDER),
        ("failed", "TIMEOUT", ErrorClass.PROVIDER),
        ("failed", "timeout", ErrorClass.PROVIDER),
        ("failed", " connection_reset ", ErrorClass.PROVIDER),
        ("failed", "402", ErrorClass.DECLINED),
        ("failed", "INSUFFICIENT_FUNDS", ErrorClass.DECLINED),
        ("failed", "USER_BLOCKED", ErrorClass.DECLINED),
        ("failed", "451", ErrorClass.DECLINED),
        ("failed", "KYC_REQUIRED", ErrorClass.DECLINED),
        ("failed", "05", ErrorClass.DECLINED),
        ("failed", "51", ErrorClass.DECLINED),
        ("failed", "409", ErrorClass.MERCHANT),
        ("failed", "400", ErrorClass.MERCHANT),
        ("failed", "5000", ErrorClass.UNKNOWN),  # a pattern matches whole codes only
        ("failed", "418", ErrorClass.UNKNOWN),
        ("failed", "SOMETHING_NEW", ErrorClass.UNKNOWN),
        ("failed", None, ErrorClass.UNKNOWN),
        ("success", None, None),
        ("pending", "503", None),  # only failed attempts have an error class
    ],
)
def test_classification(status: str, code: str | None, expected: ErrorClass | None) -> None:
    assert RULES.classifier.error_class(status, code) == expected


def test_yaml_numbers_are_read_as_codes() -> None:
    rules = parse_health_rules(
        "version: 3\ntaxonomy:\n  declined:\n    codes: [05, 402]\n", "h.yaml"
    )
    assert rules.version == "3"
    # YAML reads 05 as the integer 5: the code is "5", not "05"; write "05" quoted.
    assert rules.classifier.classify("5") is ErrorClass.DECLINED
    assert rules.classifier.classify("402") is ErrorClass.DECLINED


def test_overrides_apply_per_channel_only() -> None:
    rules = parse_health_rules(
        "version: v\nchannels:\n  bca:\n    consecutive_failures: 4\n    probe_ratio: 0.1\n",
        "h.yaml",
    )
    assert rules.for_channel("BCA").consecutive_failures == 4
    assert rules.for_channel("BCA").probe_ratio == 0.1
    assert rules.for_channel("BCA").min_attempts == 30
    assert rules.for_channel("MANDIRI").consecutive_failures == 8


def test_shipped_defaults_match_the_design() -> None:
    th = RULES.thresholds
    assert (th.consecutive_failures, th.failover_error_rate, th.min_attempts) == (8, 0.20, 30)
    assert (th.failover_latency_p95_ms, th.latency_sustain_s) == (800, 900)
    assert (th.probe_ratio, th.restore_after_s) == (0.05, 180)
    assert RULES.alerts.api_error_rate == 0.05
    assert RULES.version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: x\nthresholds:\n  min_attempts: 0\n", "h.yaml:3: thresholds.min_attempts:"),
        (
            "version: x\nchannels:\n  BCA:\n    probe_ratio: 2\n",
            "h.yaml:4: channels.BCA.probe_ratio:",
        ),
        ("version: x\nthresholds:\n  consecutive_failurez: 3\n", "thresholds.consecutive_failurez"),
        ("thresholds: {}\n", "h.yaml:1: version: Field required"),
        (
            "version: x\nchannels:\n  BCA:\n    degraded_error_rate: 0.5\n",
            "channels.BCA: degraded_error_rate must not exceed failover_error_rate",
        ),
        (
            "version: x\ntaxonomy:\n  provider:\n    codes: ['500']\n"
            "  merchant:\n    codes: [500]\n",
            "h.yaml:2: taxonomy: code 500 is listed as both provider and merchant",
        ),
        ("version: x\nthresholds: [\n", "h.yaml:3: not valid YAML"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_bad_files_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(HealthRulesError) as info:
        parse_health_rules(text, "h.yaml")
    assert message in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(HealthRulesError, match=r"nope\.yaml: cannot read"):
        load_health_rules(tmp_path / "nope.yaml")
