"""The callbacks stage's shortcuts give what the plain versions give: SNAP minify, the source
allowlist verdicts, the body reader (orjson where it gives the stdlib's value)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from models.inputs import Callback
from streams import callbacks as cb
from streams import signatures as sig
from streams.callbacks import CallbackVerifier, Reason, Untrusted


def reference_minify(body: str | bytes) -> str:
    """SNAP minify as a character walk (the implementation the regex replaced)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    out: list[str] = []
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch not in " \t\r\n":
            out.append(ch)
    return "".join(out)


JSONISH = st.text(alphabet=st.sampled_from('"\\ \t\r\n\x0b\u00a0a1{}:,[]é'), max_size=60)


@settings(max_examples=2000, deadline=None)
@given(JSONISH)
def test_minify_equals_the_character_walk(text: str) -> None:
    assert sig.snap_minify(text) == reference_minify(text)
    raw = text.encode("utf-8")
    assert sig.snap_minify(raw) == reference_minify(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_minify_of_any_bytes_equals_the_character_walk(raw: bytes) -> None:
    assert sig.snap_minify(raw) == reference_minify(raw)


def test_minify_keeps_strings_and_escapes() -> None:
    body = '{ "a" : "x y\\" z" ,\n\t"b":[1, 2],"c":"tail \\\\" , "d": "open  \\'
    assert sig.snap_minify(body) == '{"a":"x y\\" z","b":[1,2],"c":"tail \\\\","d":"open  \\'


def _callback(source_ip: str) -> Callback:
    return Callback.model_validate(
        {"callback_id": "cb-1", "provider": "xendit", "received_at": "2026-11-21T03:00:07Z",
         "source_ip": source_ip, "headers": {"x-callback-token": "tok-123456"},
         "body": '{"external_id":"trx-1","status":"PAID","amount":1000}'}
    )  # fmt: skip


def _verdict(verifier: CallbackVerifier, source_ip: str) -> str:
    try:
        verifier.check(_callback(source_ip))
    except Untrusted as exc:
        return f"{exc.reason.value}: {exc.detail}"
    return "trusted"


def _verifier(cidrs: Sequence[str]) -> CallbackVerifier:
    return CallbackVerifier(
        secrets_for=lambda provider, merchant: [SecretStr("tok-123456")],
        allowlists={"xendit": list(cidrs)},
    )


ADDRESSES = [
    "18.141.95.7",
    "18.141.95.7",
    "18.141.96.1",
    "203.0.113.9",
    "::ffff:18.141.95.7",
    "2001:db8::1",
    "2001:0db8:0000::0001",
    "2001:db9::1",
    "203.0.113.9",
]


def test_allowlist_verdicts_and_messages_are_those_of_each_address() -> None:
    verifier = _verifier(["18.141.95.0/24", "2001:db8::/32"])
    got = [_verdict(verifier, ip) for ip in ADDRESSES * 2]  # the second round from the cache
    assert got[: len(ADDRESSES)] == got[len(ADDRESSES) :]
    assert got[:4] == [
        "trusted",
        "trusted",
        f"{Reason.SOURCE_NOT_ALLOWED.value}: xendit from 18.141.96.1",
        f"{Reason.SOURCE_NOT_ALLOWED.value}: xendit from 203.0.113.9",
    ]
    assert got[4] == f"{Reason.SOURCE_NOT_ALLOWED.value}: xendit from ::ffff:128d:5f07"
    assert got[5] == got[6] == "trusted"  # the same address written two ways
    assert got[7] == f"{Reason.SOURCE_NOT_ALLOWED.value}: xendit from 2001:db9::1"
    # Without an allowlist nothing is parsed or remembered.
    open_verifier = _verifier([])
    assert [_verdict(open_verifier, ip) for ip in ADDRESSES] == ["trusted"] * len(ADDRESSES)
    assert not open_verifier._sources


def test_allowlist_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cb, "SOURCES_REMEMBERED", 8)
    verifier = _verifier(["10.0.0.0/8"])
    for i in range(50):
        expected = (
            "trusted" if i % 2 else f"{Reason.SOURCE_NOT_ALLOWED.value}: xendit from 11.0.0.{i}"
        )
        assert _verdict(verifier, f"{10 + (i + 1) % 2}.0.0.{i}") == expected
        assert len(verifier._sources) <= 8


def reference_body(text: str) -> Any:
    """The body reader as the stdlib alone (before orjson read what it can)."""
    try:
        value = json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError):
        return "untrusted"
    return value if isinstance(value, dict) else "untrusted"


def _read(text: str) -> Any:
    try:
        return cb.load_body(text)
    except Untrusted:
        return "untrusted"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.decimals(allow_nan=False, places=3).map(str).map(float)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(max_size=5), _JSON, max_size=5), ascii_only=st.booleans())
def test_body_reader_equals_the_stdlib_on_json(body: dict[str, Any], ascii_only: bool) -> None:
    """Same values and types (Decimal for every fraction, big integers exact, NaN, lone
    surrogates) whether orjson or the stdlib read them."""
    text = json.dumps(body, ensure_ascii=ascii_only)
    assert repr(_read(text)) == repr(reference_body(text))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet='{}[]":,.-+eE0123456789 aNIfinity\\ud800tru', max_size=30))
def test_body_reader_equals_the_stdlib_on_any_text(text: str) -> None:
    assert repr(_read(text)) == repr(reference_body(text))


def test_body_reader_keeps_fractions_exact_and_refuses_non_objects() -> None:
    assert cb.load_body('{"amount": 10000.10, "n": 18446744073709551616}') == {
        "amount": Decimal("10000.10"),
        "n": 18446744073709551616,
    }
    assert type(cb.load_body('{"amount": 10000}')["amount"]) is int
    with pytest.raises(Untrusted):
        cb.load_body("[1, 2]")
