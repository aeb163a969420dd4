"""rules/health.yaml: its schema (thresholds, per-channel overrides, alerts, taxonomy) + loader."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.common import KNOWN_CHANNELS
from rules.taxonomy import Taxonomy, TaxonomySpec

DEFAULT_PATH = Path(__file__).with_name("health.yaml")
OTHER_CHANNEL = "other"  # the metrics label of channels that are not known

Fraction = Annotated[float, Field(ge=0, le=1)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]
Millis = Annotated[float, Field(gt=0, le=3_600_000)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]


class Thresholds(BaseModel):
    """The failover state machine's thresholds for one channel (DESIGN.md §4's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_attempts: Count = 30
    consecutive_failures: Count = 8
    failover_error_rate: Fraction = 0.20
    error_rate_window_s: Seconds = 300
    failover_latency_p95_ms: Millis = 800
    latency_sustain_s: Seconds = 900
    min_latency_samples: Count = 10
    degraded_error_rate: Fraction = 0.05
    degraded_min_attempts: Count = 100
    degraded_latency_p95_ms: Millis = 800
    probe_ratio: Fraction = 0.05
    probe_after_s: Seconds = 60
    min_probe_attempts: Count = 3
    restore_after_s: Seconds = 180
    cooldown_s: Seconds = 300
    max_cooldown_s: Seconds = 3600

    @model_validator(mode="after")
    def _consistent(self) -> Thresholds:
        if self.degraded_error_rate > self.failover_error_rate:
            raise ValueError("degraded_error_rate must not exceed failover_error_rate")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be at least cooldown_s")
        return self


class ThresholdOverrides(BaseModel):
    """Any subset of the thresholds, for one channel."""

    model_config = ConfigDict(extra="forbid")

    min_attempts: Count | None = None
    consecutive_failures: Count | None = None
    failover_error_rate: Fraction | None = None
    error_rate_window_s: Seconds | None = None
    failover_latency_p95_ms: Millis | None = None
    latency_sustain_s: Seconds | None = None
    min_latency_samples: Count | None = None
    degraded_error_rate: Fraction | None = None
    degraded_min_attempts: Count | None = None
    degraded_latency_p95_ms: Millis | None = None
    probe_ratio: Fraction | None = None
    probe_after_s: Seconds | None = None
    min_probe_attempts: Count | None = None
    restore_after_s: Seconds | None = None
    cooldown_s: Seconds | None = None
    max_cooldown_s: Seconds | None = None


class AlertThresholds(BaseModel):
    """Thresholds of the channel monitoring alerts on ops.alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_error_rate: Fraction = 0.05
    min_attempts: Count = 100
    latency_p95_ms: Millis = 800
    deadletter_rate: Fraction = 0.05
    deadletter_min_records: Count = 50
    resolve_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8


class HealthRules(BaseModel):
    """The whole of rules/health.yaml."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[str, Field(min_length=1, max_length=100)]
    thresholds: Thresholds = Field(default_factory=Thresholds)
    channels: dict[str, ThresholdOverrides] = Field(default_factory=dict)
    alerts: AlertThresholds = Field(default_factory=AlertThresholds)
    taxonomy: TaxonomySpec = Field(default_factory=TaxonomySpec)
    max_channels: Annotated[int, Field(ge=1, le=100_000)] = 200

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("channels")
    @classmethod
    def _upper(cls, value: dict[str, ThresholdOverrides]) -> dict[str, ThresholdOverrides]:
        return {k.strip().upper(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _overrides_consistent(self) -> HealthRules:
        for channel in self.channels:
            try:
                self.for_channel(channel)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"channels.{channel}: {msg}") from None
        return self

    @field_validator("taxonomy")
    @classmethod
    def _one_class_per_code(cls, value: TaxonomySpec) -> TaxonomySpec:
        Taxonomy(value)  # refuses a code listed in two classes
        return value

    def for_channel(self, channel: str) -> Thresholds:
        """The defaults with the channel's overrides applied."""
        cache: dict[str, Thresholds] = self.__dict__.setdefault("_per_channel", {})
        found = cache.get(channel)
        if found is None:
            override = self.channels.get(channel)
            if override is None:
                found = self.thresholds
            else:
                merged = self.thresholds.model_dump()
                merged.update(override.model_dump(exclude_none=True))
                found = Thresholds(**merged)
            cache[channel] = found
        return found

    def metric_channel(self, channel: str) -> str:
        """The channel's metrics label: known channels (models.common.KNOWN_CHANNELS and those
        under `channels:`) are themselves; any other is "other", so a gateway that sends made-up
        channel values cannot create series without bound."""
        if channel in KNOWN_CHANNELS or channel in self.channels:
            return channel
        return OTHER_CHANNEL

    @cached_property
    def classifier(self) -> Taxonomy:
        """The taxonomy, ready to classify error codes."""
        return Taxonomy(self.taxonomy)


class HealthRulesError(ValueError):
    """rules/health.yaml cannot be used; the message names the file, the line and the field."""


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (the nearest found)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if str(key.value).strip().upper() == str(part).upper():
                    nxt = value
                    line = key.start_mark.line + 1
                    break
            if nxt is None:
                return line
            node = nxt
            if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
                line = node.start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def parse_health_rules(text: str, name: str = "health.yaml") -> HealthRules:
    """Parse and validate the YAML text; errors name the file, the line and the field."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise HealthRulesError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise HealthRulesError(f"{name}: must be a mapping with at least a `version`")
    try:
        return HealthRules.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "value"
            line = _line_of(root, loc)
            where = f"{name}:{line}" if line is not None else name
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {field}: {msg}")
        raise HealthRulesError("; ".join(parts)) from None


def load_health_rules(path: Path | None = None) -> HealthRules:
    """Read rules/health.yaml (or another file); a bad file raises HealthRulesError."""
    path = path or DEFAULT_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HealthRulesError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_health_rules(text, str(path))
