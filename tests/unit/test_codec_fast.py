"""The decoder's fast paths agree with the reference checks they stand in front of."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.pan import contains_pan
from streams.codec import may_hold_pan

# Text made mostly of digits and separators, where card-number shapes are likely.
_texts = st.text(alphabet=st.sampled_from("0123456789 -x\"é"), max_size=60)


@settings(max_examples=400, deadline=None)
@given(_texts)
@example("4111111111111111")
@example("4111 1111 1111 1111")
@example("4111-1111-1111-1111")
@example("3782-822463-10005")
@example("3782 822463 10005")
@example("trx-20261121-000001")
def test_may_hold_pan_never_misses_a_card_number(text: str) -> None:
    if contains_pan(text):
        assert may_hold_pan(text.encode("utf-8"))


def test_may_hold_pan_lets_ordinary_transactions_through_and_flags_card_shapes() -> None:
    ordinary = (
        b'{"transaction_id":"trx-20261121-000001","amount":"150000.00",'
        b'"created_at":"2026-11-21T03:00:00.123+07:00","card_bin":"411111","card_last4":"1111"}'
    )
    assert not may_hold_pan(ordinary)
    assert may_hold_pan(b'{"device_id":"4111111111111111"}')
    assert may_hold_pan(b'{"note":"4111 1111 1111 1111"}')
