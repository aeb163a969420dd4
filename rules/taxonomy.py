"""The error taxonomy: whether an error code is the provider's, the customer's or the merchant's."""

from __future__ import annotations

from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ErrorClass(StrEnum):
    """Who an attempt's error is attributed to; only PROVIDER errors judge a channel."""

    PROVIDER = "provider"  # 5xx, timeouts, connection errors: the channel is at fault
    DECLINED = "declined"  # insufficient funds, blocked user, KYC, issuer declines: the customer
    MERCHANT = "merchant"  # duplicate order, bad request: the merchant's integration
    UNKNOWN = "unknown"  # a failed attempt whose code nobody classified (counted, never judged)


# The label for attempts that did not fail (success, pending): they have no error class.
NO_ERROR = "none"


class CodeSet(BaseModel):
    """Error codes of one class: exact codes and patterns (`?` one character, `*` any run)."""

    model_config = ConfigDict(extra="forbid")

    codes: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("codes", "patterns", mode="before")
    @classmethod
    def _as_strings(cls, value: object) -> object:
        # YAML reads 05 or 402 as numbers; codes are text ("05" and "5" differ).
        if isinstance(value, list):
            out = []
            for item in value:
                if isinstance(item, bool) or not isinstance(item, str | int):
                    raise ValueError(f"codes must be strings, got {item!r}")
                out.append(str(item).strip().upper())
            return out
        return value


class TaxonomySpec(BaseModel):
    """The taxonomy as rules/health.yaml writes it."""

    model_config = ConfigDict(extra="forbid")

    provider: CodeSet = Field(default_factory=CodeSet)
    declined: CodeSet = Field(default_factory=CodeSet)
    merchant: CodeSet = Field(default_factory=CodeSet)


class Taxonomy:
    """Classifies a failed attempt's error code; exact codes first, then patterns in class order."""

    def __init__(self, spec: TaxonomySpec) -> None:
        self.exact: dict[str, ErrorClass] = {}
        self.patterns: list[tuple[str, ErrorClass]] = []
        for cls, codes in (
            (ErrorClass.PROVIDER, spec.provider),
            (ErrorClass.DECLINED, spec.declined),
            (ErrorClass.MERCHANT, spec.merchant),
        ):
            for code in codes.codes:
                if code in self.exact and self.exact[code] is not cls:
                    raise ValueError(
                        f"code {code} is listed as both {self.exact[code]} and {cls}"
                    )
                self.exact[code] = cls
            self.patterns.extend((p, cls) for p in codes.patterns)
        self._cache: dict[str | None, ErrorClass] = {}

    def classify(self, error_code: str | None) -> ErrorClass:
        """The class of a failed attempt's error code (UNKNOWN when nobody claimed it)."""
        found = self._cache.get(error_code)
        if found is not None:
            return found
        found = ErrorClass.UNKNOWN
        if error_code is not None:
            code = error_code.strip().upper()
            exact = self.exact.get(code)
            if exact is not None:
                found = exact
            else:
                for pattern, cls in self.patterns:
                    if fnmatchcase(code, pattern):
                        found = cls
                        break
        if len(self._cache) < 10_000:  # codes are free text: keep the cache bounded
            self._cache[error_code] = found
        return found

    def error_class(self, status: str, error_code: str | None) -> ErrorClass | None:
        """An attempt's error class: None unless it failed."""
        if status != "failed":
            return None
        return self.classify(error_code)
