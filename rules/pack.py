"""The fraud rule pack (value of topic pantau.rules) and loading it from YAML with line numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.common import UtcDatetime

RULE_ID = r"^[a-z][a-z0-9_]{0,63}$"
DEFAULT_PACK = Path(__file__).parent / "fraud" / "core.yaml"


class RuleAction(StrEnum):
    """What a hit does: allow forces approve, review and decline force at least that, score only
    adds the rule's score."""

    SCORE = "score"
    ALLOW = "allow"
    REVIEW = "review"
    DECLINE = "decline"


class RuleMode(StrEnum):
    """enabled rules act; shadow rules are evaluated and reported (shadow=true) but never act."""

    ENABLED = "enabled"
    SHADOW = "shadow"


class Thresholds(BaseModel):
    """Score thresholds of the pack (0-100): review at or above `review`, decline at `decline`."""

    model_config = ConfigDict(extra="forbid")

    review: Annotated[float, Field(ge=0, le=100)] = 65.0
    decline: Annotated[float, Field(ge=0, le=100)] = 85.0

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.decline < self.review:
            raise ValueError("decline threshold must be ≥ review threshold")
        return self


class Examples(BaseModel):
    """Inputs (transaction fields and features; the rest take zero values) the rule must and must
    not match: `rules check` runs them."""

    model_config = ConfigDict(extra="forbid")

    match: list[dict[str, Any]] = Field(default_factory=list)
    no_match: list[dict[str, Any]] = Field(default_factory=list)


class Rule(BaseModel):
    """One rule: `action` with `score` when `expression` (CEL over the transaction and features)."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=RULE_ID)]
    description: Annotated[str, Field(min_length=1, max_length=500)]
    expression: Annotated[str, Field(min_length=1, max_length=4000)]
    action: RuleAction = RuleAction.REVIEW
    score: Annotated[float, Field(ge=-100, le=100)] = 0.0
    mode: RuleMode = RuleMode.ENABLED
    reason: Annotated[str, Field(max_length=300)] | None = None
    examples: Examples = Field(default_factory=Examples)


class RulePack(BaseModel):
    """A versioned set of fraud rules with its thresholds; decisions name `<id>-<version>`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    thresholds: Thresholds = Field(default_factory=Thresholds)
    model_weight: Annotated[float, Field(ge=0, le=100)] = Field(
        default=100.0, description="points the model's probability contributes (score × weight)"
    )
    rules: list[Rule] = Field(default_factory=list)
    published_at: UtcDatetime | None = None

    @property
    def label(self) -> str:
        """The version every decision carries, e.g. core-7."""
        return f"{self.id}-{self.version}"


@dataclass
class Located:
    """A pack read from YAML, with where each rule field starts in the file (1-based line, col)."""

    pack: RulePack
    path: str
    positions: dict[tuple[int, str], tuple[int, int, str]] = field(default_factory=dict)
    # (rule index, field) → (line, column, scalar style: '' plain, '"'/"'" quoted, '|'/'>' block)

    def where(self, index: int, name: str) -> tuple[int, int, str]:
        """Line, column and style of a rule's field (the rule's start when unknown)."""
        return self.positions.get((index, name)) or self.positions.get((index, "")) or (1, 1, "")


class PackError(Exception):
    """A pack that cannot be read: each problem as 'file:line:col: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _positions(root: yaml.Node | None) -> dict[tuple[int, str], tuple[int, int, str]]:
    out: dict[tuple[int, str], tuple[int, int, str]] = {}
    if not isinstance(root, yaml.MappingNode):
        return out
    for key, value in root.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode):
            for index, item in enumerate(value.value):
                mark = item.start_mark
                out[(index, "")] = (mark.line + 1, mark.column + 1, "")
                if isinstance(item, yaml.MappingNode):
                    for k, v in item.value:
                        m = v.start_mark
                        out[(index, str(k.value))] = (
                            m.line + 1,
                            m.column + 1,
                            getattr(v, "style", None) or "",
                        )
        else:
            m = value.start_mark
            out[(-1, str(key.value))] = (m.line + 1, m.column + 1, "")
    return out


def _error_location(
    loc: tuple[int | str, ...], positions: dict[tuple[int, str], tuple[int, int, str]]
) -> tuple[int, int]:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        name = str(loc[2]) if len(loc) > 2 else ""
        found = positions.get((loc[1], name)) or positions.get((loc[1], ""))
        if found:
            return found[0], found[1]
    if loc:
        found = positions.get((-1, str(loc[0])))
        if found:
            return found[0], found[1]
    return 1, 1


def parse_pack(text: str, path: str = "<pack>") -> Located:
    """Read a pack from YAML text; raises PackError naming file:line:col for every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise PackError([f"{where}: YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise PackError([f"{path}:1:1: a rule pack must be a mapping with id, version and rules"])
    positions = _positions(root)
    try:
        pack = RulePack.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            line, col = _error_location(tuple(error["loc"]), positions)
            dotted = ".".join(str(p) for p in error["loc"])
            problems.append(f"{path}:{line}:{col}: {dotted}: {error['msg']}")
        raise PackError(problems) from None
    return Located(pack=pack, path=path, positions=positions)


def load_pack(path: Path) -> Located:
    """Read a pack file; raises PackError (file:line:col) or OSError."""
    return parse_pack(path.read_text(encoding="utf-8"), str(path))


def default_pack() -> RulePack:
    """The shipped default pack (rules/fraud/core.yaml)."""
    return load_pack(DEFAULT_PACK).pack
