"""Settings from PANTAU_* environment variables and an optional secrets file (pydantic-settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.topics import Topics

# broker_credentials keys that name things rather than prove them (not redacted, not scanned).
_NOT_SECRET_CREDENTIALS = frozenset({"mechanism", "username", "cafile", "certfile"})


class Settings(BaseSettings):
    """Everything a worker, replay or the demo needs; secrets are SecretStr and never logged."""

    model_config = SettingsConfigDict(
        env_prefix="PANTAU_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    broker: str = Field(default="kafka://localhost:9092", description="Kafka bootstrap URL(s)")
    app_id: str = "pantau"
    topics: Topics = Field(default_factory=Topics)
    partitions: int = Field(default=8, ge=1, le=1024, description="partitions of topics it creates")
    replication_factor: int = Field(default=1, ge=1, le=5)
    embedded: bool = Field(default=False, description="tuned for the embedded Tansu broker")
    session_timeout_s: float = Field(default=30.0, gt=0, le=600)
    batch_size: int = Field(default=500, ge=1, le=100_000, description="micro-batch size")
    batch_within_s: float = Field(
        default=0.005,
        gt=0,
        le=60,
        description="max wait to fill a batch (a backlog fills batch_size at once; at low load "
        "a shorter wait means lower latency and more, smaller batches)",
    )
    fetch_wait_ms: int = Field(
        default=500,
        ge=1,
        le=30_000,
        description="longest the broker may hold a fetch with no data (the embedded profile "
        "uses at most 20 ms: Tansu answers a fetch only when its wait is over)",
    )
    max_message_bytes: int = Field(
        default=1_000_000, ge=1024, description="larger values dead-letter"
    )
    allowed_lateness_s: float = Field(default=30.0, ge=0, description="event-time watermark lag")
    entity_scope: Literal["worker", "partition"] = Field(
        default="worker",
        description="device, card, IP and merchant fraud state: one per worker (sees every "
        "partition the worker holds) or one per input partition (decisions the same whatever "
        "the number of workers, equal to a replay's; velocity sees one partition's customers)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Pantau's own log level (takeovers and hand-overs log at INFO; Faust and "
        "the Kafka client log at WARNING)",
    )
    web_port: int = Field(default=6066, ge=0, le=65535, description="worker HTTP views")
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="Prometheus /metrics")
    store: str = Field(
        default="memory://",
        description="where the fraud feature state lives: memory:// or rocksdb:// "
        "(rocksdb:///dir?cache_mb=64) for state larger than memory",
    )
    state_dir: Path | None = Field(
        default=None,
        description="where a rocksdb:// store keeps its files (one directory per app id and "
        "worker, removed at close; default: the system temp directory; use a disk, not tmpfs)",
    )
    rules_pack: Path | None = Field(default=None, description="fraud rule pack file to start with")
    model_dir: Path | None = Field(default=None, description="fraud model directory")
    health_rules: Path | None = Field(
        default=None, description="channel health, failover and alert rules (rules/health.yaml)"
    )
    settlement_rules: Path | None = Field(
        default=None,
        description="settlement deadlines and alert thresholds (rules/settlement.yaml)",
    )
    secrets_file: Path | None = Field(
        default=None, description="YAML/JSON file of callback secrets"
    )
    # Callback verification: secrets per provider, or per "provider:merchant_id"; several at once
    # for rotation.
    callback_secrets: dict[str, list[SecretStr]] = Field(default_factory=dict)
    callback_allowlists: dict[str, list[str]] = Field(
        default_factory=dict, description="source CIDRs per provider; empty = any address"
    )
    callback_tolerance_s: float = Field(default=300.0, ge=0)
    broker_credentials: dict[str, SecretStr] = Field(
        default_factory=dict, description="SASL/SSL: mechanism, username, password, cafile"
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        for part in value.split(";"):
            if "://" not in part:
                raise ValueError(f"must be a URL like kafka://host:9092 (got {part!r})")
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        from streams.stores import parse_store_url

        parse_store_url(value)  # raises naming PANTAU_STORE and what is wrong
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SecretsFileSource(settings_cls), file_secret_settings)

    def scope_partitions(self) -> int | None:
        """The partition count entity state is kept per (PANTAU_ENTITY_SCOPE=partition), or
        None for one state per worker."""
        return self.partitions if self.entity_scope == "partition" else None

    def secrets_for(self, provider: str, merchant_id: str | None = None) -> list[SecretStr]:
        """The valid secrets for a provider (merchant-specific ones first)."""
        found: list[SecretStr] = []
        if merchant_id:
            found.extend(self.callback_secrets.get(f"{provider}:{merchant_id}", []))
        found.extend(self.callback_secrets.get(provider, []))
        return found

    def secret_values(self) -> list[str]:
        """Every secret's plain value (for leak scans in tests; never log these)."""
        values = [s.get_secret_value() for v in self.callback_secrets.values() for s in v]
        values += [
            s.get_secret_value()
            for k, s in self.broker_credentials.items()
            if k.lower() not in _NOT_SECRET_CREDENTIALS
        ]
        return [v for v in values if v]


class _SecretsFileSource(PydanticBaseSettingsSource):
    """Reads the file named by PANTAU_SECRETS_FILE (YAML or JSON mapping of settings)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        import os

        name = os.environ.get("PANTAU_SECRETS_FILE")
        if not name:
            return {}
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"PANTAU_SECRETS_FILE={name}: cannot read ({exc.strerror})") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"PANTAU_SECRETS_FILE={name}: not valid YAML/JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"PANTAU_SECRETS_FILE={name}: must hold a mapping of settings")
        return data
