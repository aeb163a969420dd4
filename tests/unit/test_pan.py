"""Card-number detection and masking (PCI DSS: never more than the first 6 and last 4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.pan import contains_pan, find_pans, luhn_valid, mask_digits, mask_pans


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_finds_plain_and_grouped_forms() -> None:
    text = "a 4111111111111111 b 5500-0000-0000-0004 c 3782 822463 10005 d"
    assert find_pans(text) == ["4111111111111111", "5500000000000004", "378282246310005"]


def test_ids_with_dashes_are_not_joined() -> None:
    # 20261121 + 000001 would be 14 digits; ids are not card numbers.
    assert find_pans("trx-20261121-000001 trx-20261121-000019 2026-11-21T03:00:00") == []


def test_runs_longer_than_19_are_not_cards() -> None:
    assert find_pans("12345678901234567890123") == []


def test_masking_keeps_at_most_bin_and_last4() -> None:
    assert mask_digits("4111111111111111") == "411111******1111"
    assert mask_pans("pan=4111 1111 1111 1111;") == "pan=411111******1111;"
    assert mask_pans("short 1234") == "short 1234"


def _with_check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError


@given(st.text(alphabet="0123456789", min_size=12, max_size=18), st.text(max_size=20))
def test_any_luhn_valid_run_is_masked(body: str, prefix: str) -> None:
    pan = _with_check_digit(body)
    prefix = "".join(c for c in prefix if not c.isdigit())
    masked = mask_pans(f"{prefix} {pan} end")
    assert pan not in masked
    assert not contains_pan(masked)
