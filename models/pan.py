"""Detection and masking of card numbers (PANs): Luhn-valid runs of 13-19 digits."""

from __future__ import annotations

import re

# A contiguous run of 13-19 digits, or the grouped forms people type (4-4-4-4[-3] and Amex's
# 4-6-5, with one consistent space or dash), never glued to other digits. Ids such as
# "trx-20261121-000001" are not joined across their dashes.
_CANDIDATE = re.compile(
    r"(?<![0-9])(?:[0-9]{13,19}"
    r"|[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{3})?"
    r"|[0-9]{4}([ -])[0-9]{6}\2[0-9]{5})(?![0-9])"
)


def luhn_valid(digits: str) -> bool:
    """True when a string of digits passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _pan_digits(match: str) -> str | None:
    digits = match.replace(" ", "").replace("-", "")
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return digits
    return None


def find_pans(text: str) -> list[str]:
    """Every Luhn-valid 13-19 digit run in text (as digits only)."""
    found = []
    for m in _CANDIDATE.finditer(text):
        digits = _pan_digits(m.group(0))
        if digits is not None:
            found.append(digits)
    return found


def contains_pan(text: str) -> bool:
    """True when text holds a Luhn-valid 13-19 digit run."""
    if len(text) < 13:
        return False
    return any(_pan_digits(m.group(0)) for m in _CANDIDATE.finditer(text))


def mask_digits(digits: str) -> str:
    """Keep at most the first 6 and the last 4 digits (PCI DSS 3.4.1); star the rest."""
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def mask_pans(text: str) -> str:
    """Replace every PAN-like run in text by its masked form."""

    def repl(m: re.Match[str]) -> str:
        digits = _pan_digits(m.group(0))
        return m.group(0) if digits is None else mask_digits(digits)

    if len(text) < 13:
        return text
    return _CANDIDATE.sub(repl, text)
