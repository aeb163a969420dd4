"""Property tests: random callback bodies and headers never crash a parser or a verifier; each
callback becomes a trusted fact or an untrusted one with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.inputs import Callback
from streams import signatures as sig
from streams.callbacks import PARSERS, CallbackFact, Reason, Untrusted
from streams.core import Record
from streams.settings import Settings
from streams.settlement import CallbacksStage, build_verifier
from streams.topics import Topics

PROVIDERS = ["midtrans", "xendit", "doku", "snap", "generic"]
SECRET = "fuzz-secret"
RECEIVED = datetime(2026, 11, 21, 3, 0, 7, tzinfo=UTC)
VERIFIER = build_verifier(
    Settings(
        callback_secrets={p: [SECRET] for p in PROVIDERS},
        callback_allowlists={"doku": ["103.10.128.0/22"]},
    )
)
REASONS = {r.value for r in Reason}

# Keys the parsers look for, so random bodies often reach the interesting branches.
KEYS = [
    "order_id", "status_code", "gross_amount", "transaction_status", "settlement_time",
    "fraud_status", "signature_key", "merchant_id", "external_id", "reference_id", "status",
    "paid_amount", "amount", "paid_at", "payment_id", "transaction_timestamp", "data", "order",
    "transaction", "invoice_number", "date", "trxId", "paidAmount", "value",
    "latestTransactionStatus", "trxDateTime", "transaction_id", "settled_at", "at",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        ["settlement", "PAID", "SUCCESS", "00", "settled", "capture", "2026-11-21T03:00:00Z",
         "2026-11-21 10:00:00", "150000.00", "1e999", "NaN", "-0", "challenge", "1700000000000"]
    )
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=10)
header_names = st.sampled_from(
    [
        sig.XENDIT_TOKEN, sig.XENDIT_SIGNATURE, sig.XENDIT_TIMESTAMP, sig.DOKU_CLIENT_ID,
        sig.DOKU_REQUEST_ID, sig.DOKU_TIMESTAMP, sig.DOKU_TARGET, sig.DOKU_SIGNATURE,
        sig.SNAP_TIMESTAMP, sig.SNAP_SIGNATURE, sig.SNAP_PARTNER_ID, sig.SNAP_METHOD,
        sig.SNAP_PATH, sig.SNAP_ACCESS_TOKEN, sig.GENERIC_SIGNATURE, sig.GENERIC_TIMESTAMP,
    ]
) | st.text(min_size=1, max_size=12)  # fmt: skip
headers = st.dictionaries(header_names, st.text(max_size=40), max_size=6)
raw_texts = st.text(max_size=200) | bodies.map(json.dumps) | json_values.map(json.dumps)
addresses = st.sampled_from(["103.10.129.7", "198.51.100.7", "2001:db8::1"])


def _classify(callback: Callback) -> str:
    try:
        fact = VERIFIER.check(callback)
    except Untrusted as exc:
        assert exc.reason.value in REASONS
        return exc.reason.value
    assert isinstance(fact, CallbackFact)
    assert fact.transaction_id and fact.settled_at.tzinfo is not None
    json.dumps(fact.to_json())  # what travels on pantau.settlement is JSON
    return "trusted"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROVIDERS), raw_texts, headers, addresses)
def test_random_callbacks_are_facts_or_reasons(
    provider: str, body: str, head: dict[str, str], address: str
) -> None:
    callback = Callback(
        callback_id="cb-fuzz",
        provider=provider,  # type: ignore[arg-type]
        received_at=RECEIVED,
        source_ip=address,
        headers=head,
        body=body,
    )
    # Trusting one would take guessing the secret (or forging an HMAC).
    assert _classify(callback) != "trusted"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROVIDERS), bodies, st.integers(min_value=-900, max_value=900))
def test_signed_random_bodies_never_crash(provider: str, body: dict[str, Any], skew: int) -> None:
    """Correctly signed bodies of any shape: a fact, or a reason (no reference, unknown status,
    stale timestamp) — never an exception."""
    value = sig.build_callback(
        provider,
        body,
        SECRET,
        callback_id="cb-fuzz",
        received_at=RECEIVED,
        source_ip="103.10.129.7",
        signed_at=RECEIVED + timedelta(seconds=skew),
    )
    result = _classify(Callback.model_validate(value))
    if abs(skew) <= 300 and result != "trusted":
        assert result in {Reason.MISSING_REFERENCE.value, Reason.UNKNOWN_STATUS.value}


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(PROVIDERS), bodies)
def test_parsers_never_crash(provider: str, body: dict[str, Any]) -> None:
    parsed = PARSERS[provider](json.loads(json.dumps(body)))
    assert parsed.reference is None or isinstance(parsed.reference, str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=120) | raw_texts.map(str.encode), min_size=1, max_size=5))
def test_stage_turns_every_record_into_an_output(values: list[bytes]) -> None:
    topics = Topics()
    stage = CallbacksStage(topics, VERIFIER)
    records = [Record(topic=topics.callbacks, value=v, offset=i) for i, v in enumerate(values)]
    out = stage.process(records)
    letters = [o for o in out if o.topic == topics.deadletter]
    facts = [o for o in out if o.topic == topics.settlement]
    assert len(letters) + len(facts) == len(records)  # nothing here is a duplicate or trusted
    assert not facts
    for letter in letters:
        assert letter.value["reason"]
        orjson.dumps(letter.value)
