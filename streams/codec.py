"""Decoding raw message bytes into contracts, or into a dead letter that says why."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from models.outputs import DeadLetter
from models.pan import contains_pan, mask_pans
from streams.core import Out, Record

M = TypeVar("M", bound=BaseModel)

MAX_RAW_CHARS = 64_000  # how much of a refused value a dead letter keeps

# Every digit as "0", every other byte as itself: then any run models.pan's pattern can match
# shows as one of these shapes (13 digits in a row, or the grouped 4-4-4-4 and 4-6-5 forms).
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else i for i in range(256))
_PAN_SHAPES = (
    b"0" * 13,
    b"0000-0000-0000-0000",
    b"0000 0000 0000 0000",
    b"0000-000000-00000",
    b"0000 000000 00000",
)


def may_hold_pan(raw: bytes) -> bool:
    """False when the bytes cannot hold a card number (no digit run of a PAN's shape): a check
    in C that spares the regex and the Luhn sums for nearly every message. True means "look"."""
    shapes = raw.translate(_DIGITS_AS_ZERO)
    return any(shape in shapes for shape in _PAN_SHAPES)


def describe_errors(exc: ValidationError) -> str:
    """'field: message' for each error, never echoing the input (it may hold card data)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # A model-level validator names its own field ("device_id: holds a card number").
        parts.append(msg if loc == "value" and ":" in msg else f"{loc}: {msg}")
    return "; ".join(parts)


def safe_text(raw: bytes) -> str:
    """The original text for a dead letter: decoded leniently, card numbers masked, bounded."""
    text = raw.decode("utf-8", errors="replace")
    if len(text) > MAX_RAW_CHARS:
        text = text[:MAX_RAW_CHARS] + f"…[{len(text) - MAX_RAW_CHARS} more characters]"
    return mask_pans(text)


def dead_letter(
    record: Record, reason: str, deadletter_topic: str, at: datetime | None = None
) -> Out:
    """A dead-letter output for a record, keyed by its source key."""
    letter = DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        line=record.line,
        reason=mask_pans(reason),
        raw=safe_text(record.value),
        at=at or datetime.now(UTC),
    )
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    return Out.of(deadletter_topic, mask_pans(key) if key else key, letter)


def _fast_paths() -> dict[type[BaseModel], Callable[[dict[str, Any]], BaseModel | None]]:
    from models.inputs import Transaction
    from streams.fastpath import fast_transaction

    return {Transaction: fast_transaction}


class Decoder:
    """Turns records into one contract type; what fails becomes a dead letter with its reason."""

    def __init__(
        self,
        model: type[M],
        deadletter_topic: str,
        *,
        max_bytes: int = 1_000_000,
        refuse_card_numbers: bool = True,
        fast_path: bool = True,
    ) -> None:
        self.model = model
        self.deadletter_topic = deadletter_topic
        self.max_bytes = max_bytes
        self.refuse_card_numbers = refuse_card_numbers
        # The model's fast path for ordinary values (streams.fastpath), if it has one; it answers
        # None for "ask the contract" and only sees bytes with no card-number shape and no escape.
        self.fast = _fast_paths().get(model) if fast_path else None

    def decode(self, record: Record) -> tuple[BaseModel | None, Out | None]:
        """(event, None) when valid, (None, dead letter) otherwise."""
        raw = record.value
        if raw is None or len(raw) == 0:
            return None, dead_letter(record, "empty value", self.deadletter_topic)
        if len(raw) > self.max_bytes:
            return None, dead_letter(
                record,
                f"value too large: {len(raw)} bytes > max_message_bytes {self.max_bytes}",
                self.deadletter_topic,
            )
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, dead_letter(record, f"not valid JSON: {exc}", self.deadletter_topic)
        if not isinstance(data, dict):
            return None, dead_letter(
                record, f"must be a JSON object, got {type(data).__name__}", self.deadletter_topic
            )
        suspect = may_hold_pan(raw)
        if (
            self.refuse_card_numbers
            and suspect
            and contains_pan(raw.decode("utf-8", errors="replace"))
        ):
            # Anywhere in the value, even in fields the contract does not know.
            from models.common import refuse_pans

            try:
                refuse_pans(data)
                reason = "holds a card number; only card_bin and card_last4 may be sent"
            except ValueError as exc:
                reason = str(exc)
            return None, dead_letter(record, reason, self.deadletter_topic)
        if self.fast is not None and not suspect and b"\\" not in raw:
            event = self.fast(data)
            if event is not None:
                return event, None
        try:
            return self.model.model_validate(data), None
        except ValidationError as exc:
            return None, dead_letter(record, describe_errors(exc), self.deadletter_topic)
