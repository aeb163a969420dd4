"""The simulator: deterministic, realistic, valid against the contracts, and its scenarios show."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from models.common import KNOWN_CHANNELS
from models.inputs import BalanceSnapshot, Callback, FraudLabel, Transaction
from models.pan import find_pans
from streams import scenarios as sc
from streams.cli import app
from streams.settings import Settings
from streams.signatures import midtrans_signature
from streams.sim_callbacks import (
    FORGED_SOURCE_IPS,
    SIM_SECRETS,
    SIM_SOURCE_IPS,
    SIM_SOURCE_NETWORKS,
    sim_settings_overrides,
)
from streams.sim_catalog import CHANNELS, ERROR_CLASS, HOURLY_FACTOR, merchant_id
from streams.sim_cli import parse_duration, write_secrets_file
from streams.sim_output import bootstrap_servers, write_file
from streams.simulator import DEFAULT_START, SimEvent, generate, incidents

MODELS: dict[str, type[BaseModel]] = {
    "payments.transactions": Transaction,
    "payments.callbacks": Callback,
    "payments.balances": BalanceSnapshot,
    "fraud.labels": FraudLabel,
}
TIME_FIELD = {
    "payments.transactions": "created_at",
    "payments.callbacks": "received_at",
    "payments.balances": "at",
    "fraud.labels": "reported_at",
}
# Header and body fields that hold cryptographic signatures (hex or base64 of a hash): a hash
# can contain 13-19 digits in a row that happen to pass Luhn, so the card check skips them.
PROVIDER_CODES = {code for code, cls in ERROR_CLASS.items() if cls == "provider"}
SIGNATURE_HEADERS = {"x-signature", "x-callback-signature", "x-pantau-signature", "signature"}


def at_of(event: SimEvent) -> datetime:
    return datetime.fromisoformat(event.value[TIME_FIELD[event.topic]]).astimezone(UTC)


def tx(event: SimEvent) -> dict[str, Any]:
    return event.value


@pytest.fixture(scope="module")
def everything() -> list[SimEvent]:
    """All scenarios over 100 minutes at a modest rate (the default start is 23:00 WIB)."""
    return list(
        generate(
            scenarios=list(sc.SCENARIOS),
            seed=11,
            duration=timedelta(minutes=100),
            tx_per_second=6.0,
            customers=2000,
        )
    )


@pytest.fixture(scope="module")
def healthy() -> list[SimEvent]:
    """No scenario, flat rate: the base mix."""
    return list(generate(seed=5, duration=timedelta(minutes=30), tx_per_second=20.0, diurnal=False))


def transactions(events: list[SimEvent]) -> list[SimEvent]:
    return [e for e in events if e.topic == "payments.transactions"]


# ---- determinism, order, keys, contracts -------------------------------------------------------


def test_same_seed_same_events_and_other_seed_other_events() -> None:
    def run(seed: int) -> list[tuple[str, str | None, bytes]]:
        events = generate(
            scenarios=["callback-storm", "bca-outage"],
            seed=seed,
            duration=timedelta(minutes=20),
            tx_per_second=3.0,
        )
        return [(e.topic, e.key, orjson.dumps(e.value)) for e in events]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert len(first) > 5000


def test_events_come_in_event_time_order(everything: list[SimEvent]) -> None:
    times = [at_of(e) for e in everything]
    assert all(a <= b for a, b in itertools.pairwise(times))
    # The SimEvent's own time agrees with the value's (to the millisecond it is written with).
    for e in everything[:2000]:
        assert abs(e.at - at_of(e).timestamp()) < 0.002


def test_keys_follow_the_design(everything: list[SimEvent]) -> None:
    for e in everything:
        if e.topic == "payments.transactions":
            assert e.key == e.value["customer_id"]
            assert e.fraud is not None
        elif e.topic == "payments.balances":
            assert e.key == e.value["merchant_id"]
            assert e.fraud is None
        elif e.topic == "fraud.labels":
            assert e.key == e.value["transaction_id"]
        else:
            assert e.topic == "payments.callbacks"
            assert e.key is not None and e.key in e.value["body"]


def test_every_value_satisfies_its_contract(everything: list[SimEvent]) -> None:
    topics = Counter(e.topic for e in everything)
    assert set(topics) == set(MODELS)
    for e in everything:
        MODELS[e.topic].model_validate(e.value)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    names=st.lists(st.sampled_from(sorted(sc.SCENARIOS)), max_size=3),
    customers=st.integers(1, 3000),
    merchants=st.integers(1, 300),
    minutes=st.integers(1, 70),
    rate=st.floats(0.05, 3.0),
    hour=st.integers(0, 23),
)
def test_any_configuration_gives_valid_ordered_events(
    seed: int, names: list[str], customers: int, merchants: int, minutes: int, rate: float,
    hour: int,
) -> None:  # fmt: skip
    start = datetime(2026, 3, 1, hour, tzinfo=UTC)
    events = list(
        generate(
            scenarios=names, seed=seed, start=start, duration=timedelta(minutes=minutes),
            tx_per_second=rate, customers=customers, merchants=merchants,
        )
    )  # fmt: skip
    times = [e.at for e in events]
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert all(e.at >= start.timestamp() for e in events)
    for e in events:
        MODELS[e.topic].model_validate(e.value)
        if e.topic == "payments.transactions":
            assert not find_pans(orjson.dumps(e.value).decode())
            assert e.value["merchant_id"] in {merchant_id(i) for i in range(merchants)}


def test_invalid_rate_makes_tagged_events_that_the_contracts_refuse() -> None:
    events = list(
        generate(seed=3, duration=timedelta(minutes=30), tx_per_second=4.0, invalid_rate=0.05)
    )
    invalid = [e for e in events if e.tag and e.tag.startswith("invalid:")]
    share = len(invalid) / len(events)
    assert 0.03 < share < 0.07
    kinds = Counter(e.tag for e in invalid if e.topic == "payments.transactions")
    assert len(kinds) >= 8  # every way a gateway gets it wrong shows up
    for e in invalid:
        with pytest.raises((ValidationError, ValueError)):
            MODELS[e.topic].model_validate(e.value)
    invalid_ids = {id(e) for e in invalid}
    for e in events:
        if id(e) not in invalid_ids:
            MODELS[e.topic].model_validate(e.value)


def _strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, path)]
    return [(path, str(value))]


def test_no_card_number_anywhere(everything: list[SimEvent]) -> None:
    checked = 0
    for e in everything:
        fields = _strings(e.value)
        if e.topic == "payments.callbacks":
            fields = [(p, v) for p, v in fields if p.split(".")[-1] not in SIGNATURE_HEADERS]
            body = orjson.loads(e.value["body"])
            body.pop("signature_key", None)  # midtrans: SHA512 hex
            fields += [(p, v) for p, v in _strings(body) if p != ".body"]
            fields = [(p, v) for p, v in fields if p != ".body"]
        for path, text in fields:
            assert not find_pans(text), (e.topic, path, text)
            checked += 1
    assert checked > 500_000
    cards = [t.value for t in transactions(everything) if t.value["card_bin"]]
    assert cards and all(len(c["card_bin"]) == 6 and len(c["card_last4"]) == 4 for c in cards)


# ---- realism ----------------------------------------------------------------------------------


def test_channel_shares_methods_and_amounts_are_realistic(healthy: list[SimEvent]) -> None:
    firsts = [t.value for t in transactions(healthy) if t.tag != "retry"]
    assert 32_000 < len(firsts) < 40_000  # 30 min at 20/s
    shares = Counter(v["channel"] for v in firsts)
    for channel in CHANNELS:
        got = shares[channel.name] / len(firsts)
        assert abs(got - channel.share) < 0.15 * channel.share + 0.003, channel.name
    for v in firsts:
        assert KNOWN_CHANNELS[v["channel"]].value == v["method"]
        amount = Decimal(v["amount"])
        assert Decimal("0.01") <= amount <= Decimal("1000000000")
        assert v["amount"].endswith(".00") and amount % 500 == 0  # priced like shops price
    amounts = sorted(float(v["amount"]) for v in firsts)
    median = statistics.median(amounts)
    assert 50_000 < median < 400_000  # a typical Indonesian basket
    assert amounts[int(0.99 * len(amounts))] > 10 * median  # a long (log-normal) tail
    categories = Counter(v["goods_category"] for v in firsts)
    assert set(categories) == {
        "basic_needs", "standard", "premium_goods", "luxury_goods", "digital_services"
    }  # fmt: skip
    luxury = [v for v in firsts if v["goods_category"] == "luxury_goods"]
    assert all(Decimal("0.10") <= Decimal(v["luxury_tax_rate"]) <= Decimal("0.40") for v in luxury)
    assert all(
        v["luxury_tax_rate"] is None for v in firsts if v["goods_category"] != "luxury_goods"
    )
    digital = [v for v in firsts if v["goods_category"] == "digital_services"]
    assert 0 < sum(v["cross_border"] for v in digital) < len(digital)
    assert not any(v["cross_border"] for v in firsts if v["goods_category"] != "digital_services")


def test_error_classes_have_healthy_base_rates(healthy: list[SimEvent]) -> None:
    values = [t.value for t in transactions(healthy)]
    classes = Counter(ERROR_CLASS[v["error_code"]] for v in values if v["error_code"])
    assert all(v["status"] == "failed" for v in values if v["error_code"])
    assert all(v["error_code"] is None for v in values if v["status"] != "failed")
    assert 0.003 < classes["provider"] / len(values) < 0.009
    assert 0.001 < classes["merchant"] / len(values) < 0.006
    cards = [v for v in values if v["method"] == "card"]
    declined = sum(
        1 for v in cards if v["error_code"] and ERROR_CLASS[v["error_code"]] == "declined"
    )
    assert 0.04 < declined / len(cards) < 0.11
    codes = Counter(v["error_code"] for v in values if v["error_code"])
    assert {"503", "504", "TIMEOUT", "409", "05", "51", "INSUFFICIENT_FUNDS"} <= set(codes)
    # Deferred methods wait for the customer; the others settle at once.
    statuses = Counter((v["method"], v["status"]) for v in values)
    assert statuses[("virtual_account", "pending")] > 0 and not statuses[("qris", "pending")]


def test_healthy_latency_stays_under_the_latency_rule(healthy: list[SimEvent]) -> None:
    by_channel: dict[str, list[int]] = defaultdict(list)
    for t in transactions(healthy):
        if ERROR_CLASS.get(t.value["error_code"] or "") != "provider":
            by_channel[t.value["channel"]].append(t.value["latency_ms"])
    for channel, latencies in by_channel.items():
        p95 = statistics.quantiles(latencies, n=20)[-1]
        assert 100 < p95 < 700, channel


def test_retries_keep_the_id_and_come_later(healthy: list[SimEvent]) -> None:
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in transactions(healthy):
        attempts[t.value["transaction_id"]].append(t.value)
    retried = {k: v for k, v in attempts.items() if len(v) > 1}
    assert len(retried) > 50
    for chain in retried.values():
        assert all(a["status"] == "failed" for a in chain[:-1])
        assert len({(a["customer_id"], a["amount"], a["merchant_id"]) for a in chain}) == 1
        times = [datetime.fromisoformat(a["created_at"]) for a in chain]
        assert all(a < b for a, b in itertools.pairwise(times))


def test_night_in_wib_is_quiet() -> None:
    def count(hour_wib: int) -> int:
        start = datetime(2026, 11, 21, (hour_wib - 7) % 24, tzinfo=UTC)
        events = generate(seed=1, start=start, duration=timedelta(minutes=20), tx_per_second=5)
        return sum(1 for e in events if e.topic == "payments.transactions" and e.tag is None)

    assert count(3) * 4 < count(20)
    assert HOURLY_FACTOR[3] < 0.3 < 1.4 < HOURLY_FACTOR[20]


def test_callbacks_follow_payments_signed_for_the_simulator(healthy: list[SimEvent]) -> None:
    created: dict[str, dict[str, Any]] = {}
    for t in transactions(healthy):
        created[t.value["transaction_id"]] = t.value
    callbacks = [e for e in healthy if e.topic == "payments.callbacks"]
    providers = Counter(c.value["provider"] for c in callbacks)
    assert set(providers) == set(SIM_SECRETS)
    succeeded = [v for v in created.values() if v["status"] == "success"]
    called = {c.key for c in callbacks}
    assert sum(v["transaction_id"] in called for v in succeeded) / len(succeeded) > 0.9
    for c in callbacks:
        tx_value = created[str(c.key)]  # every callback reports a payment that exists
        assert datetime.fromisoformat(c.value["received_at"]) > datetime.fromisoformat(
            tx_value["created_at"]
        )
        if c.value["provider"] == "midtrans":
            body = orjson.loads(c.value["body"])
            assert body["order_id"] == c.key
            assert body["signature_key"] == midtrans_signature(
                body["order_id"], body["status_code"], body["gross_amount"], SIM_SECRETS["midtrans"]
            )
    overrides = sim_settings_overrides()
    assert set(overrides["callback_secrets"]) == set(SIM_SECRETS)
    assert set(overrides["callback_allowlists"]) == set(SIM_SECRETS)


def test_balances_every_five_minutes_per_merchant(healthy: list[SimEvent]) -> None:
    balances = [e for e in healthy if e.topic == "payments.balances"]
    per_merchant = Counter(b.key for b in balances)
    assert len(per_merchant) == 200 and set(per_merchant.values()) == {6}
    assert all(Decimal(b.value["balance"]) >= 25_000_000 for b in balances)


# ---- scenarios --------------------------------------------------------------------------------


def window(events: list[SimEvent], incident: sc.Incident) -> tuple[list[SimEvent], list[SimEvent]]:
    inside = [e for e in events if incident.contains(at_of(e))]
    outside = [e for e in events if not incident.contains(at_of(e))]
    return inside, outside


def only(kind: str, **match: str) -> sc.Incident:
    found = [
        i
        for i in incidents(list(sc.SCENARIOS), customers=2000)
        if i.kind == kind and all(getattr(i, k) == v for k, v in match.items())
    ]
    assert len(found) == 1
    return found[0]


def test_incident_windows_are_data_and_fit_the_default_file() -> None:
    found = incidents(list(sc.SCENARIOS))
    assert {i.scenario for i in found} == set(sc.SCENARIOS)
    end = DEFAULT_START + timedelta(hours=2)
    assert all(DEFAULT_START < i.start < i.end <= end for i in found)
    bca = only(sc.PROVIDER_OUTAGE, channel="BCA")
    assert (bca.start - DEFAULT_START, bca.duration) == (
        timedelta(minutes=15),
        timedelta(minutes=20),
    )
    ovo = only(sc.LATENCY_DEGRADATION, channel="OVO")
    assert ovo.duration == timedelta(minutes=25) > timedelta(minutes=15)
    assert sc.SCENARIOS["bca-outage"].incidents(DEFAULT_START) == [bca]
    with pytest.raises(sc.UnknownScenarioError, match="known: bca-outage"):
        list(generate(scenarios=["bca-outge"]))
    # Looping repeats every incident each cycle.
    looped = incidents(["bca-outage"], duration=timedelta(hours=1), cycles=3)
    assert [i.start - DEFAULT_START for i in looped] == [
        timedelta(minutes=15), timedelta(minutes=75), timedelta(minutes=135)
    ]  # fmt: skip


def test_bca_outage_shows_in_the_data(everything: list[SimEvent]) -> None:
    incident = only(sc.PROVIDER_OUTAGE, channel="BCA")
    bca = [t for t in transactions(everything) if t.value["channel"] == "BCA"]
    inside, outside = window(bca, incident)

    def provider_rate(events: list[SimEvent]) -> float:
        bad = [e for e in events if ERROR_CLASS.get(e.value["error_code"] or "") == "provider"]
        return len(bad) / len(events)

    assert len(inside) > 300
    assert provider_rate(inside) > 0.93
    assert provider_rate(outside) < 0.02
    assert {e.value["error_code"] for e in inside if e.value["error_code"]} >= {
        "503",
        "504",
        "TIMEOUT",
    }
    # Other channels stay healthy during the outage.
    others, _ = window(
        [t for t in transactions(everything) if t.value["channel"] != "BCA"], incident
    )
    assert provider_rate(others) < 0.02


def test_ovo_latency_shows_in_the_data(everything: list[SimEvent]) -> None:
    incident = only(sc.LATENCY_DEGRADATION, channel="OVO")
    ovo = [
        t
        for t in transactions(everything)
        if t.value["channel"] == "OVO" and t.value["error_code"] not in PROVIDER_CODES
    ]
    inside, outside = window(ovo, incident)
    assert len(inside) > 200
    assert all(1500 <= e.value["latency_ms"] <= 3000 for e in inside)
    assert statistics.quantiles([e.value["latency_ms"] for e in outside], n=20)[-1] < 700
    after = [e for e in outside if at_of(e) >= incident.end]
    assert after and at_of(after[-1]) - incident.end > timedelta(minutes=30)  # time to restore


def test_card_testing_shows_in_the_data(everything: list[SimEvent]) -> None:
    incident = only(sc.CARD_TESTING)
    attempts = [t for t in transactions(everything) if t.value["device_id"] == incident.device]
    assert all(incident.contains(at_of(t)) and t.fraud for t in attempts)
    cards = {(t.value["card_bin"], t.value["card_last4"]) for t in attempts}
    assert len(cards) >= 50
    small = [t for t in attempts if Decimal(t.value["amount"]) <= 15_000]
    declined = [t for t in small if t.value["status"] == "failed"]
    assert len(small) >= 80 and len(declined) / len(small) > 0.7
    assert any(t.value["status"] == "success" for t in small)
    assert any(t.value["merchant_id"] == incident.merchant for t in attempts)


def test_account_takeover_shows_in_the_data(everything: list[SimEvent]) -> None:
    for incident in [i for i in incidents(list(sc.SCENARIOS), customers=2000)
                     if i.kind == sc.ACCOUNT_TAKEOVER]:  # fmt: skip
        mine = [t for t in transactions(everything) if t.value["customer_id"] == incident.customer]
        before = [t for t in mine if at_of(t) < incident.start]
        attack = [t for t in mine if t.value["device_id"] == incident.device]
        assert len(before) >= 3 and len(attack) >= 6
        assert all(t.fraud and incident.contains(at_of(t)) for t in attack)
        assert {t.value["device_id"] for t in before}.isdisjoint({incident.device})
        assert all(t.value["ip_country"] != "ID" for t in attack)
        usual = statistics.median(Decimal(t.value["amount"]) for t in before)
        assert statistics.median(Decimal(t.value["amount"]) for t in attack) > 4 * usual
        hour_wib = (incident.start.astimezone(UTC).hour + 7) % 24
        assert hour_wib < 6  # night in WIB with the default start


def test_settlement_delay_shows_in_the_data(everything: list[SimEvent]) -> None:
    incident = only(sc.SETTLEMENT_DELAY, channel="MANDIRI")
    created = {
        t.value["transaction_id"]: at_of(t)
        for t in transactions(everything)
        if t.value["channel"] == "MANDIRI" and t.value["status"] == "pending"
    }
    first_callback: dict[str, datetime] = {}
    for e in everything:
        if e.topic == "payments.callbacks" and e.key in created:
            first_callback.setdefault(str(e.key), at_of(e))
    in_window = [k for k, at in created.items() if incident.contains(at)]
    outside = [k for k, at in created.items() if not incident.contains(at)]
    delays_in = [first_callback[k] - created[k] for k in in_window if k in first_callback]
    delays_out = [first_callback[k] - created[k] for k in outside if k in first_callback]
    assert len(in_window) > 30
    assert sorted(delays_in)[len(delays_in) // 2] > timedelta(hours=4)
    assert max(delays_out) <= timedelta(hours=2, seconds=1)
    missing = sum(1 for k in in_window if k not in first_callback) / len(in_window)
    assert 0.02 < missing < 0.3
    assert all(k in first_callback for k in outside)


def test_callback_storm_shows_in_the_data(everything: list[SimEvent]) -> None:
    incident = only(sc.CALLBACK_STORM)
    callbacks = [e for e in everything if e.topic == "payments.callbacks"]
    inside, outside = window(callbacks, incident)
    forged_in = [e for e in inside if e.tag and e.tag.startswith("forged:")]
    assert not any(e.tag and e.tag.startswith("forged:") for e in outside)
    assert len(forged_in) / incident.duration.total_seconds() > 2  # about 3 a second
    assert {e.tag for e in forged_in} >= {"forged:bad_signature", "forged:foreign_address",
                                          "forged:stale", "forged:leaked_secret"}  # fmt: skip
    dup_in = sum(1 for e in inside if e.tag == "duplicate")
    dup_out = sum(1 for e in outside if e.tag == "duplicate")
    assert dup_in > 5 * dup_out
    genuine = {(e.value["provider"], e.value["body"]) for e in inside if e.tag is None}
    assert all((e.value["provider"], e.value["body"]) in genuine or e.tag == "duplicate"
               for e in inside if e.tag is None)  # fmt: skip


def test_low_balance_shows_in_the_data(everything: list[SimEvent]) -> None:
    incident = only(sc.LOW_BALANCE)
    snapshots = [e for e in everything if e.topic == "payments.balances"]
    mine = [e for e in snapshots if e.key == incident.merchant]
    inside, outside = window(mine, incident)
    assert at_of(inside[0]) == incident.start  # the first low snapshot opens the incident
    assert all(Decimal(e.value["balance"]) < 10_000_000 for e in inside)
    assert all(Decimal(e.value["balance"]) >= 10_000_000 for e in outside)
    assert any(at_of(e) == incident.end for e in outside)  # topped up at the end
    others = [e for e in snapshots if e.key != incident.merchant]
    assert all(Decimal(e.value["balance"]) >= 10_000_000 for e in others)


# ---- fraud truth and labels -------------------------------------------------------------------


def test_fraud_truth_and_late_labels(everything: list[SimEvent]) -> None:
    txs = transactions(everything)
    fraud = [t for t in txs if t.fraud]
    tags = Counter(t.tag for t in fraud)
    assert {"fraud:card_testing", "fraud:account_takeover", "fraud:stolen_card"} <= set(tags)
    assert 0.001 < len(fraud) / len(txs) < 0.05
    created = {t.value["transaction_id"]: at_of(t) for t in txs}
    truth: dict[str, bool] = defaultdict(bool)
    for t in txs:
        truth[t.value["transaction_id"]] |= bool(t.fraud)
    labels = [e for e in everything if e.topic == "fraud.labels"]
    assert len(labels) > 20
    assert len({e.key for e in labels}) == len(labels)  # one report per transaction
    for e in labels:
        tid = e.value["transaction_id"]
        assert e.value["fraud"] == truth[tid]
        assert at_of(e) - created[tid] >= timedelta(days=1)  # labels arrive days late
    assert sum(e.value["fraud"] for e in labels) / len(labels) > 0.5


def test_loop_continues_event_time_with_incidents_again() -> None:
    events = generate(
        scenarios=["bca-outage"], seed=2, duration=timedelta(minutes=40), tx_per_second=2,
        loop=True,
    )  # fmt: skip
    head = list(itertools.islice(events, 40_000))
    last = at_of(head[-1])
    assert last > DEFAULT_START + timedelta(hours=2)  # past several cycles
    second = DEFAULT_START + timedelta(minutes=40 + 15)
    bca = [t for t in transactions(head) if t.value["channel"] == "BCA"]
    in_second = [t for t in bca if second <= at_of(t) < second + timedelta(minutes=20)]
    assert (
        in_second and sum(t.value["status"] == "failed" for t in in_second) / len(in_second) > 0.9
    )


# ---- files and CLI ----------------------------------------------------------------------------


def test_write_file_and_ground_truth_labels(tmp_path: Path) -> None:
    out, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    events = list(generate(scenarios=["card-testing"], seed=4, duration=timedelta(minutes=50),
                           tx_per_second=2))  # fmt: skip
    summary = write_file(iter(events), out, labels=labels)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(x["topic"], x["key"], x["value"]) for x in lines] == [
        (e.topic, e.key, e.value) for e in events
    ]
    assert summary.events == len(events)
    truth: dict[str, bool] = defaultdict(bool)
    for e in transactions(events):
        truth[e.value["transaction_id"]] |= bool(e.fraud)
    label_lines = [orjson.loads(line) for line in labels.read_bytes().splitlines()]
    assert summary.labels == len(label_lines) == len(truth)
    assert {x["value"]["transaction_id"]: x["value"]["fraud"] for x in label_lines} == truth
    assert all(x["topic"] == "fraud.labels" for x in label_lines)
    first: dict[str, float] = {}
    for e in transactions(events):
        first.setdefault(e.value["transaction_id"], e.at)
    for x in label_lines:
        label = FraudLabel.model_validate(x["value"])
        delay = label.reported_at.timestamp() - first[label.transaction_id]
        assert abs(delay - 7 * 86400) < 0.002  # a week later by default
    # A shorter delay (for training on a short file) moves every report.
    write_file(iter(events), out, labels=labels, label_delay=timedelta(hours=1))
    for line in labels.read_bytes().splitlines():
        label = FraudLabel.model_validate(orjson.loads(line)["value"])
        assert abs(label.reported_at.timestamp() - first[label.transaction_id] - 3600) < 0.002


def test_cli_simulate_is_deterministic_and_refuses_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["simulate", "--duration", "10m", "--rate", "2", "--seed", "9", "-q",
            "--scenario", "bca-outage,low-balance"]  # fmt: skip
    for name in ("a.jsonl", "b.jsonl"):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    bad = runner.invoke(app, ["simulate", "--out", str(tmp_path / "c"), "--scenario", "ddos"])
    assert bad.exit_code == 2
    assert "ddos" in bad.output and "bca-outage" in bad.output and "low-balance" in bad.output
    labelled = runner.invoke(
        app, [*args, "--out", str(tmp_path / "e"), "--labels", str(tmp_path / "l"),
              "--label-delay", "0"],
    )  # fmt: skip
    assert labelled.exit_code == 0, labelled.output
    assert (tmp_path / "l").read_bytes()
    for extra in (
        ["--duration", "soon"],
        ["--start", "2026-11-21T10:00:00"],
        [],
        ["--label-delay", "1d"],  # without --labels
    ):
        target = [] if not extra else ["--out", str(tmp_path / "d")]
        assert runner.invoke(app, ["simulate", *target, *extra]).exit_code == 2


def test_secrets_file_configures_settings_for_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secrets.yaml"
    write_secrets_file(path)
    monkeypatch.setenv("PANTAU_SECRETS_FILE", str(path))
    settings = Settings()
    for provider, secret in SIM_SECRETS.items():
        assert [s.get_secret_value() for s in settings.secrets_for(provider)] == [secret]
        assert settings.callback_allowlists[provider] == SIM_SOURCE_NETWORKS[provider]
        for ip in SIM_SOURCE_IPS[provider]:
            assert any(ip_address(ip) in ip_network(n) for n in SIM_SOURCE_NETWORKS[provider])
    assert not any(
        ip_address(ip) in ip_network(n)
        for ip in FORGED_SOURCE_IPS
        for nets in SIM_SOURCE_NETWORKS.values()
        for n in nets
    )


def test_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://a:9092;kafka://b:9093") == "a:9092,b:9093"
    assert bootstrap_servers("localhost:9092") == "localhost:9092"


def test_parse_duration() -> None:
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("600") == timedelta(minutes=10)
    for bad in ("", "0", "-5m", "2x", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
