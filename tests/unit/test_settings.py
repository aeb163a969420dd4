"""Settings come from PANTAU_* variables and a secrets file; bad values name the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings


def test_defaults() -> None:
    s = Settings()
    assert s.topics.transactions == "payments.transactions"
    assert s.topics.failover == "gateway.failover"
    assert s.partitions == 8


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_BROKER", "kafka://k1:9092")
    monkeypatch.setenv("PANTAU_PARTITIONS", "12")
    monkeypatch.setenv("PANTAU_TOPICS__ALERTS", "sre.alerts")
    s = Settings()
    assert s.broker == "kafka://k1:9092" and s.partitions == 12
    assert s.topics.alerts == "sre.alerts"


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_PARTITIONS", "zero")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert info.value.errors()[0]["loc"] == ("partitions",)


def test_broker_must_be_a_url() -> None:
    with pytest.raises(ValidationError, match="must be a URL"):
        Settings(broker="localhost:9092")


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="partitionz"):
        Settings(partitionz=3)  # type: ignore[call-arg]


def test_secrets_file_and_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "secrets.yaml"
    f.write_text(
        "callback_secrets:\n  midtrans: [new-key, old-key]\n  'midtrans:m-1': [merchant-key]\n"
    )
    monkeypatch.setenv("PANTAU_SECRETS_FILE", str(f))
    s = Settings()
    assert [x.get_secret_value() for x in s.secrets_for("midtrans", "m-1")] == [
        "merchant-key",
        "new-key",
        "old-key",
    ]
    assert "new-key" not in repr(s) and "new-key" not in str(s.model_dump())


def test_unreadable_secrets_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_SECRETS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=r"missing\.yaml"):
        Settings()


def test_secret_values_are_only_the_secrets() -> None:
    s = Settings(
        callback_secrets={"xendit": ["tok-1"]},
        broker_credentials={"mechanism": "SCRAM-SHA-512", "username": "pantau", "password": "pw-9"},
    )
    assert sorted(s.secret_values()) == ["pw-9", "tok-1"]


def test_the_health_and_settlement_rule_files_are_settings(tmp_path: Path) -> None:
    """An SRE points a worker at their own rule files; a bad one is refused naming it."""
    from streams.pipeline import build_stages
    from streams.settlement import SettlementStage

    settlement = tmp_path / "settlement.yaml"
    settlement.write_text("deadlines_s:\n  virtual_account: 1800\n", encoding="utf-8")
    settings = Settings(settlement_rules=settlement)
    [stage] = [s for s in build_stages(settings) if isinstance(s, SettlementStage)]
    assert stage.rules.deadline_for("virtual_account") == timedelta(seconds=1800)
    health = tmp_path / "health.yaml"
    health.write_text("version: [not, a, version]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"health\.yaml"):
        build_stages(Settings(health_rules=health))
