"""Realistic Indonesian gateway traffic, its callbacks, balances and fraud labels, in event time."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from models.common import Method
from streams import scenarios as sc
from streams.signatures import build_callback
from streams.sim_callbacks import (
    EXPIRED,
    FAILED,
    FORGED_SECRET,
    FORGED_SOURCE_IPS,
    PAID,
    SIM_SECRETS,
    SIM_SOURCE_IPS,
    TIMESTAMPED,
    Payment,
    callback_body,
)
from streams.sim_catalog import (
    ATTACKER_COUNTRIES,
    BY_NAME,
    CARD_BIN_PREFIXES,
    CARD_FOREIGN_COUNTRIES,
    CHANNELS,
    DECLINES,
    DEFERRED,
    EXPIRY_SECONDS,
    FOREIGN_PREFIXES,
    GOODS,
    HOURLY_FACTOR,
    ID_PREFIXES,
    LUXURY_TAX_RATES,
    MAX_ATTEMPTS,
    MERCHANT_ERROR_RATE,
    MERCHANT_ERRORS,
    OUTAGE_ERRORS,
    PROVIDER_ERROR_RATE,
    PROVIDER_ERRORS,
    RETRY_PROBABILITY,
    TRAVEL_COUNTRIES,
    Channel,
    customer_id,
    merchant_category,
    merchant_id,
)
from streams.topics import Topics

if TYPE_CHECKING:
    from streams.settings import Settings

DEFAULT_START = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # 23:00 WIB
BALANCE_EVERY_S = 300.0
DAY = 86400.0


@dataclass(slots=True)
class SimEvent:
    """One simulated message: its topic, key and JSON value, and the fraud ground truth of a
    transaction (None for other topics). `tag` says why it exists when it is special
    (`retry`, `fraud:<kind>`, `forged:<kind>`, `duplicate`, `invalid:<kind>`, `label`,
    `low_balance`, `topup`)."""

    topic: str
    key: str | None
    value: dict[str, Any]
    fraud: bool | None = None
    tag: str | None = None
    at: float = 0.0  # event time, epoch seconds (for pacing; the value carries it as text)


class _Attempt:
    """A payment attempt waiting to happen (a retry or a scenario's injected attempt); the class
    attributes are the defaults, an instance holds only what differs."""

    tid = ""
    customer = ""
    merchant = 0
    amount = 0
    channel: Channel = CHANNELS[0]
    category = ""
    luxury: str | None = None
    cross_border = False
    includes_vat = True
    card: tuple[str, str, str] | None = None
    device: str | None = None
    ip: str | None = None
    ip_country: str | None = None
    attempt = 1
    fraud = False
    tag: str | None = None
    decline_p: float | None = None
    retries = True


# Heap item kinds.
_EMIT, _ATTEMPT, _CALLBACK, _BALANCE, _FORGE = range(5)


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _price(value: float) -> int:
    """Round an amount the way shops price things (Rp 1.000 steps, Rp 500 for small baskets)."""
    if value < 10_000:
        step = 500
    elif value < 1_000_000:
        step = 1_000
    elif value < 100_000_000:
        step = 10_000
    else:
        step = 100_000
    n = max(step, int(value / step + 0.5) * step)
    return n


class Simulator:
    """The traffic engine behind `generate`; one instance, one deterministic stream."""

    def __init__(
        self,
        *,
        scenarios: Sequence[str],
        seed: int,
        start: datetime,
        duration: timedelta,
        tx_per_second: float,
        customers: int,
        merchants: int,
        loop: bool,
        invalid_rate: float,
        diurnal: bool,
        topics: Topics,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if duration.total_seconds() <= 0:
            raise ValueError("duration must be positive")
        if tx_per_second <= 0:
            raise ValueError("tx_per_second must be positive")
        if customers < 1 or merchants < 1:
            raise ValueError("customers and merchants must be at least 1")
        if not 0 <= invalid_rate <= 1:
            raise ValueError("invalid_rate must be between 0 and 1")
        self.scenario_names = [s.name for s in sc.resolve(scenarios)]
        self.rng = random.Random(seed)
        self.t0 = start.timestamp()
        self.duration = duration.total_seconds()
        self.rate = tx_per_second
        self.n_customers = customers
        self.n_merchants = merchants
        self.loop = loop
        self.invalid_rate = invalid_rate
        self.diurnal = diurnal
        self.tx_topic = topics.transactions
        self.cb_topic = topics.callbacks
        self.bal_topic = topics.balances
        self.label_topic = topics.labels
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.tx_seq = itertools.count(1)
        self.cb_seq = itertools.count(1)
        self._second_cache: dict[int, tuple[str, str]] = {}
        self._recent_pending: deque[tuple[Payment, str]] = deque(maxlen=400)
        self.channel_cum = _cumulative([c.share for c in CHANNELS])
        self.channel_total = self.channel_cum[-1]
        self.va_prefix = {c.name: 88000 + i for i, c in enumerate(CHANNELS)}
        self.deferred_channels = [c for c in CHANNELS if c.method in DEFERRED]
        self.by_method: dict[Method, list[Channel]] = {}
        for c in CHANNELS:
            self.by_method.setdefault(c.method, []).append(c)
        self._build_customers()
        self._build_merchants()
        self.cycle_start = self.t0

    # ---- population ----------------------------------------------------------------------------

    def _ip(self, country: str) -> str:
        rng = self.rng
        prefix = rng.choice(ID_PREFIXES if country == "ID" else FOREIGN_PREFIXES[country])
        return f"{prefix}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    def _device(self) -> str:
        return f"d-{self.rng.getrandbits(32):08x}"

    def _card(self, scheme: str, country: str | None = None) -> tuple[str, str, str]:
        rng = self.rng
        prefix = rng.choice(CARD_BIN_PREFIXES[scheme])
        bin6 = prefix + "".join(str(rng.randrange(10)) for _ in range(6 - len(prefix)))
        if country is None:
            country = "ID" if rng.random() < 0.93 else rng.choice(CARD_FOREIGN_COUNTRIES)
        return bin6, f"{rng.randrange(10_000):04d}", country

    def _build_customers(self) -> None:
        rng = self.rng
        n = self.n_customers
        self.cust_ids = [customer_id(i) for i in range(n)]
        self.cust_cum = _cumulative([(i + 50) ** -0.5 for i in range(n)])
        self.cust_total = self.cust_cum[-1]
        self.cust_scale = [rng.lognormvariate(0.0, 0.5) for _ in range(n)]
        self.cust_devices = [
            [self._device()] + ([self._device()] if rng.random() < 0.3 else []) for _ in range(n)
        ]
        self.cust_ip = [self._ip("ID") for _ in range(n)]
        self.cust_cards: dict[tuple[int, str], tuple[str, str, str]] = {}
        # A few customers get compromised outside any scenario (base-rate fraud to learn from).
        k = max(1, n // 250)
        self.compromised = {i: self._device() for i in rng.sample(range(n), min(k, n))}
        self.compromised_window: dict[int, tuple[float, float]] = {}

    def _build_merchants(self) -> None:
        rng = self.rng
        n = self.n_merchants
        self.merch_ids = [merchant_id(i) for i in range(n)]
        self.merch_cat = [merchant_category(i) for i in range(n)]
        self.merch_cum = _cumulative([(i + 5) ** -0.7 for i in range(n)])
        self.merch_total = self.merch_cum[-1]
        self.merch_luxury = [rng.choice(LUXURY_TAX_RATES) for _ in range(n)]
        self.merch_cross_border = [
            cat == "digital_services" and rng.random() < 0.4 for cat in self.merch_cat
        ]
        self.merch_includes_vat = [rng.random() < 0.9 for _ in range(n)]
        self.merch_balance = [max(30e6, 150e6 * math.exp(rng.gauss(0.0, 0.8))) for _ in range(n)]
        self.risky_merchants = [
            i for i, c in enumerate(self.merch_cat) if c in ("premium_goods", "luxury_goods",
                                                              "digital_services")
        ] or list(range(n))  # fmt: skip

    # ---- time formatting -----------------------------------------------------------------------

    def _stamps(self, at: float) -> tuple[str, str]:
        """(WIB "YYYY-MM-DDTHH:MM:SS", WIB date YYYYMMDD) for the second of `at`."""
        sec = int(at)
        hit = self._second_cache.get(sec)
        if hit is None:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec + 25200))
            hit = (text, text[:10].replace("-", ""))
            if len(self._second_cache) > 4096:
                self._second_cache.clear()
            self._second_cache[sec] = hit
        return hit

    def _wib_iso(self, at: float) -> str:
        prefix, _ = self._stamps(at)
        return f"{prefix}.{int((at % 1) * 1000):03d}+07:00"

    @staticmethod
    def _utc_iso(at: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int((at % 1) * 1000):03d}Z"

    def _push(self, at: float, kind: int, payload: Any) -> None:
        heapq.heappush(self.heap, (at, next(self.seq), kind, payload))

    # ---- cycles and incidents ------------------------------------------------------------------

    def _start_cycle(self, cycle_start: float) -> None:
        rng = self.rng
        self.cycle_start = cycle_start
        cycle_end = cycle_start + self.duration
        start_dt = datetime.fromtimestamp(cycle_start, UTC)
        incidents = sc.incidents(
            self.scenario_names,
            start_dt,
            duration=timedelta(seconds=self.duration),
            customers=self.n_customers,
            merchants=self.n_merchants,
        )
        self.outage: dict[str, list[tuple[float, float]]] = {}
        self.slow: dict[str, list[tuple[float, float]]] = {}
        self.delayed: dict[str, list[tuple[float, float]]] = {}
        self.storms: list[tuple[float, float]] = []
        self.low_balance: dict[int, tuple[float, float]] = {}
        for inc in incidents:
            s, e = inc.start.timestamp(), inc.end.timestamp()
            if inc.kind == sc.PROVIDER_OUTAGE and inc.channel:
                self.outage.setdefault(inc.channel, []).append((s, e))
            elif inc.kind == sc.LATENCY_DEGRADATION and inc.channel:
                self.slow.setdefault(inc.channel, []).append((s, e))
            elif inc.kind == sc.SETTLEMENT_DELAY and inc.channel:
                self.delayed.setdefault(inc.channel, []).append((s, e))
            elif inc.kind == sc.CALLBACK_STORM:
                self.storms.append((s, e))
                self._push(s + rng.expovariate(3.0), _FORGE, e)
            elif inc.kind == sc.LOW_BALANCE and inc.merchant:
                self.low_balance[self.merch_ids.index(inc.merchant)] = (s, e)
            elif inc.kind == sc.CARD_TESTING:
                self._schedule_card_testing(inc, s, e)
            elif inc.kind == sc.ACCOUNT_TAKEOVER:
                self._schedule_takeover(inc, s, e)
        self.affected = set(self.outage) | set(self.slow)
        # Base-rate fraud: each compromised customer is abused for 30-90 minutes of this cycle.
        self.compromised_window = {}
        for c in self.compromised:
            s = cycle_start + rng.uniform(0, self.duration)
            self.compromised_window[c] = (s, s + rng.uniform(1800, 5400))
        # Balance snapshots: every merchant every 5 minutes, at its own phase.
        for m in range(self.n_merchants):
            window = self.low_balance.get(m)
            phase = (
                (window[0] - cycle_start) % BALANCE_EVERY_S
                if window
                else rng.uniform(0, BALANCE_EVERY_S)
            )
            if cycle_start + phase < cycle_end:
                self._push(cycle_start + phase, _BALANCE, (m, cycle_start + phase, 0, cycle_end))

    # ---- scenario injections -------------------------------------------------------------------

    def _injected(self, customer: str, merchant: int, channel: Channel, amount: int) -> _Attempt:
        att = _Attempt()
        att.customer = customer
        att.merchant = merchant
        att.channel = channel
        att.amount = min(amount, channel.max_amount)
        self._goods(att)
        att.fraud = True
        return att

    def _schedule_card_testing(self, inc: sc.Incident, s: float, e: float) -> None:
        rng = self.rng
        merchant = self.merch_ids.index(inc.merchant) if inc.merchant in self.merch_ids else 0
        ip_country = rng.choice(("VN", "ID"))
        ip = self._ip(ip_country)
        guests = [f"c-guest-{rng.randrange(100_000):05d}" for _ in range(6)]
        cards = [
            self._card(rng.choice(("VISA", "VISA", "MASTERCARD")), rng.choice(("ID", "US", "GB")))
            for _ in range(70)
        ]
        test_end = s + (e - s) * 0.8
        times = sorted(rng.uniform(s, test_end) for _ in range(90))
        for j, at in enumerate(times):
            card = cards[j] if j < len(cards) else rng.choice(cards)
            scheme = "VISA" if card[0].startswith("4") else "MASTERCARD"
            att = self._injected(
                guests[j % len(guests)], merchant, BY_NAME[scheme],
                rng.choice((1_000, 2_000, 5_000, 10_000, 15_000)),
            )  # fmt: skip
            att.card = card
            att.device = inc.device
            att.ip, att.ip_country = ip, ip_country
            att.decline_p = 0.88
            att.retries = False
            att.tag = "fraud:card_testing"
            self._push(at, _ATTEMPT, att)
        # Cash-out: the cards that worked buy resellable goods from the same device.
        for k in range(3):
            card = cards[rng.randrange(len(cards))]
            scheme = "VISA" if card[0].startswith("4") else "MASTERCARD"
            att = self._injected(
                guests[k], self.risky_merchants[k % len(self.risky_merchants)], BY_NAME[scheme],
                _price(rng.uniform(3e6, 15e6)),
            )  # fmt: skip
            att.card = card
            att.device = inc.device
            att.ip, att.ip_country = ip, ip_country
            att.decline_p = 0.2
            att.retries = False
            att.tag = "fraud:card_testing"
            self._push(rng.uniform(test_end, e), _ATTEMPT, att)

    def _schedule_takeover(self, inc: sc.Incident, s: float, e: float) -> None:
        rng = self.rng
        if inc.customer is None:
            return
        idx = int(inc.customer[2:])
        country = rng.choice(ATTACKER_COUNTRIES)
        ip = self._ip(country)
        median = GOODS["standard"].median_amount * self.cust_scale[idx]
        burst = rng.randint(6, 10)
        for at in sorted(rng.uniform(s, e) for _ in range(burst)):
            channel = BY_NAME[rng.choice(("GOPAY", "OVO", "DANA", "VISA"))]
            merchant = rng.choice(self.risky_merchants)
            att = self._injected(
                inc.customer, merchant, channel, _price(median * rng.uniform(5, 20) + 2e6)
            )
            if channel.method is Method.CARD:
                att.card = self._customer_card(idx, channel.name)
            att.device = inc.device
            att.ip, att.ip_country = ip, country
            att.decline_p = 0.15
            att.tag = "fraud:account_takeover"
            self._push(at, _ATTEMPT, att)

    # ---- transactions --------------------------------------------------------------------------

    def _customer_card(self, idx: int, scheme: str) -> tuple[str, str, str]:
        key = (idx, scheme)
        card = self.cust_cards.get(key)
        if card is None:
            card = self.cust_cards[key] = self._card(scheme)
        return card

    def _goods(self, att: _Attempt) -> None:
        m = att.merchant
        cat = self.merch_cat[m]
        if self.rng.random() < 0.1:
            cat = "standard" if cat != "standard" else "basic_needs"
        att.category = cat
        att.luxury = self.merch_luxury[m] if cat == "luxury_goods" else None
        att.cross_border = cat == "digital_services" and self.merch_cross_border[m]
        att.includes_vat = self.merch_includes_vat[m]

    def _new_attempt(self, at: float) -> _Attempt:
        rng = self.rng
        r = rng.random
        idx = _bisect(self.cust_cum, r() * self.cust_total)
        att = _Attempt()
        att.customer = self.cust_ids[idx]
        att.merchant = _bisect(self.merch_cum, r() * self.merch_total)
        channel = CHANNELS[_bisect(self.channel_cum, r() * self.channel_total)]
        self._goods(att)
        goods = GOODS[att.category]
        value = math.exp(rng.gauss(0.0, goods.sigma)) * goods.median_amount * self.cust_scale[idx]
        if channel.method is Method.QRIS:
            value *= 0.5
        att.amount = min(_price(value), channel.max_amount)
        devices = self.cust_devices[idx]
        att.device = devices[0] if len(devices) == 1 or r() < 0.7 else devices[1]
        if r() < 0.03:
            att.device = self._device()  # a new phone, a shared tablet
        if r() < 0.985:
            att.ip, att.ip_country = (self.cust_ip[idx] if r() < 0.6 else self._ip("ID")), "ID"
        else:
            country = rng.choice(TRAVEL_COUNTRIES)
            att.ip, att.ip_country = self._ip(country), country
        att.channel = channel
        if channel.method is Method.CARD:
            att.card = self._customer_card(idx, channel.name)
        # Base-rate fraud: a compromised customer's account, or a stolen foreign card.
        window = self.compromised_window.get(idx) if idx in self.compromised else None
        hour = int((at + 25200) // 3600) % 24
        if window and window[0] <= at < window[1] and r() < 0.5:
            att.fraud = True
            att.tag = "fraud:compromised"
            att.device = self.compromised[idx]
            att.merchant = rng.choice(self.risky_merchants)
            self._goods(att)
            att.amount = min(_price(value * rng.uniform(3, 8)), channel.max_amount)
            if r() < 0.4:
                country = rng.choice(ATTACKER_COUNTRIES)
                att.ip, att.ip_country = self._ip(country), country
        elif r() < (0.0036 if hour < 6 else 0.0012):
            att.fraud = True
            att.tag = "fraud:stolen_card"
            att.channel = BY_NAME[rng.choice(("VISA", "MASTERCARD"))]
            att.card = self._card(att.channel.name, rng.choice(CARD_FOREIGN_COUNTRIES))
            att.device = self._device()
            att.merchant = rng.choice(self.risky_merchants)
            self._goods(att)
            att.amount = min(
                _price(max(value, 500_000) * rng.uniform(2, 6)), att.channel.max_amount
            )
            if r() < 0.5:
                country = rng.choice(ATTACKER_COUNTRIES)
                att.ip, att.ip_country = self._ip(country), country
        return att

    def _outcome(self, att: _Attempt, at: float) -> tuple[str, str | None, int, str | None]:
        """(status, error_code, latency_ms, error class) of an attempt at `at`."""
        rng = self.rng
        ch = att.channel
        outage = slow = False
        if ch.name in self.affected:
            for s, e in self.outage.get(ch.name, ()):
                if s <= at < e:
                    outage = True
            for s, e in self.slow.get(ch.name, ()):
                if s <= at < e:
                    slow = True
        p_provider = 0.97 if outage else PROVIDER_ERROR_RATE
        p_decline = ch.decline_rate if att.decline_p is None else att.decline_p
        r = rng.random()
        if r < p_provider:
            code = _weighted(rng, OUTAGE_ERRORS if outage else PROVIDER_ERRORS)
            if code == "TIMEOUT":
                latency = 30_000 + rng.randrange(500)
            elif code == "504":
                latency = rng.randrange(15_000, 30_000)
            elif code == "CONNECTION_RESET":
                latency = rng.randrange(500, 5_000)
            else:
                latency = int(120 * math.exp(rng.gauss(0.0, 0.5)))
            return "failed", code, latency, "provider"
        if slow:
            latency = int(min(3000.0, max(1500.0, 2100 * math.exp(rng.gauss(0.0, 0.18)))))
        else:
            latency = int(ch.latency_median_ms * math.exp(rng.gauss(0.0, ch.latency_sigma)))
        r -= p_provider
        if r < MERCHANT_ERROR_RATE:
            return "failed", _weighted(rng, MERCHANT_ERRORS), latency, "merchant"
        r -= MERCHANT_ERROR_RATE
        if r < p_decline:
            return "failed", _weighted(rng, DECLINES[ch.method]), latency, "declined"
        return ("pending" if ch.method in DEFERRED else "success"), None, latency, None

    def _transaction(self, att: _Attempt, at: float) -> SimEvent:
        """Evaluate an attempt at `at`: the transaction event, and what follows it."""
        rng = self.rng
        prefix, day = self._stamps(at)
        if not att.tid:
            att.tid = f"trx-{day}-{next(self.tx_seq):06d}"
        status, code, latency, error_class = self._outcome(att, at)
        ch = att.channel
        card = att.card
        value: dict[str, Any] = {
            "transaction_id": att.tid,
            "merchant_id": self.merch_ids[att.merchant],
            "customer_id": att.customer,
            "amount": f"{att.amount}.00",
            "currency": "IDR",
            "method": ch.method.value,
            "channel": ch.name,
            "status": status,
            "error_code": code,
            "latency_ms": latency,
            "created_at": f"{prefix}.{int((at % 1) * 1000):03d}+07:00",
            "goods_category": att.category,
            "price_includes_vat": att.includes_vat,
            "luxury_tax_rate": att.luxury,
            "cross_border": att.cross_border,
            "card_bin": card[0] if card else None,
            "card_last4": card[1] if card else None,
            "card_country": card[2] if card else None,
            "device_id": att.device,
            "ip": att.ip,
            "ip_country": att.ip_country,
        }
        tag = att.tag if att.tag else ("retry" if att.attempt > 1 else None)
        if self.invalid_rate and rng.random() < self.invalid_rate:
            tag = "invalid:" + _corrupt_transaction(value, rng)
        event = SimEvent(self.tx_topic, att.customer, value, att.fraud, tag, at)
        # Retries: same transaction_id, a later created_at.
        if status == "failed":
            assert error_class is not None
            if (
                att.retries
                and att.attempt < MAX_ATTEMPTS
                and rng.random() < RETRY_PROBABILITY[error_class]
            ):
                att.attempt += 1
                if ch.method is not Method.CARD and rng.random() < 0.3:
                    att.channel = rng.choice(self.by_method[ch.method])
                self._push(at + max(2.0, 25 * math.exp(rng.gauss(0.0, 0.8))), _ATTEMPT, att)
                return event
        self._follow_up(att, at, status, error_class)
        return event

    def _follow_up(self, att: _Attempt, at: float, status: str, error_class: str | None) -> None:
        """Schedule the callback and the fraud label that follow a final attempt."""
        rng = self.rng
        ch = att.channel
        payment = Payment(att.tid, att.amount, ch.name, ch.method, at)
        if ch.method is Method.CARD and att.card:
            payment.card_bin, payment.card_last4 = att.card[0], att.card[1]
        if ch.method is Method.VIRTUAL_ACCOUNT:
            payment.va_number = f"{self.va_prefix[ch.name]}{rng.randrange(10_000_000):07d}"
        delayed = False
        for s, e in self.delayed.get(ch.name, ()):
            if s <= at < e:
                delayed = True
        outcome: str | None = None
        when = at
        if status == "success":
            outcome, when = PAID, at + max(0.5, 4 * math.exp(rng.gauss(0.0, 0.8)))
        elif status == "pending":
            if rng.random() < 0.85:
                paid = min(480 * math.exp(rng.gauss(0.0, 0.9)), EXPIRY_SECONDS - 60)
                outcome, when = PAID, at + max(20.0, paid)
            else:
                outcome, when = EXPIRED, at + EXPIRY_SECONDS
            self._recent_pending.append((payment, ch.provider))
        elif error_class == "declined" and ch.method not in DEFERRED and rng.random() < 0.3:
            outcome, when = FAILED, at + max(0.5, 3 * math.exp(rng.gauss(0.0, 0.6)))
        if outcome is not None:
            event_at = when
            if delayed and outcome == PAID:
                if rng.random() < sc.SETTLEMENT_MISSING_SHARE:
                    outcome = None  # the provider never tells
                else:
                    when = at + rng.uniform(*sc.SETTLEMENT_DELAY_RANGE_S)
            if outcome is not None:
                self._push(when, _CALLBACK, (payment, ch.provider, outcome, event_at))
        # Fraud labels arrive days later (chargebacks, confirmed fraud, cleared disputes).
        money_moved = status == "success" or (status == "pending" and outcome == PAID)
        if att.fraud:
            share = 0.8 if money_moved else 0.2
            if rng.random() < share:
                self._label(att.tid, True, at + rng.uniform(1, 14) * DAY)
        elif money_moved and rng.random() < 0.0005:
            self._label(att.tid, False, at + rng.uniform(3, 30) * DAY)

    def _label(self, tid: str, fraud: bool, at: float) -> None:
        value = {"transaction_id": tid, "fraud": fraud, "reported_at": self._utc_iso(at)}
        self._push(at, _EMIT, SimEvent(self.label_topic, tid, value, None, "label", at))

    # ---- callbacks -----------------------------------------------------------------------------

    def _in_storm(self, at: float) -> bool:
        return bool(self.storms) and any(s <= at < e for s, e in self.storms)

    def _callback(
        self, payment: Payment, provider: str, outcome: str, event_at: float, at: float
    ) -> SimEvent:
        rng = self.rng
        body, options = callback_body(provider, payment, outcome, event_at, rng)
        received = datetime.fromtimestamp(at, UTC)
        value = build_callback(
            provider,
            body,
            SIM_SECRETS[provider],
            callback_id=f"cb-{next(self.cb_seq):07d}",
            received_at=received,
            source_ip=rng.choice(SIM_SOURCE_IPS[provider]),
            signed_at=received - timedelta(milliseconds=rng.randrange(50, 900)),
            **options,
        )
        sent, tag = value, None
        if self.invalid_rate and rng.random() < self.invalid_rate:
            sent = dict(value)  # duplicates below repeat the genuine callback
            tag = "invalid:" + _corrupt_callback(sent, rng)
        event = SimEvent(self.cb_topic, payment.transaction_id, sent, None, tag, at)
        copies = 0
        if self._in_storm(at):
            copies = rng.randint(1, 3)
        elif rng.random() < 0.005:
            copies = 1  # providers retry when an acknowledgement is slow
        for _ in range(copies):
            dup = dict(value)
            dup["callback_id"] = f"cb-{next(self.cb_seq):07d}"
            dup_at = at + rng.uniform(1.0, 90.0)
            dup["received_at"] = self._utc_iso(dup_at)
            dup_event = SimEvent(
                self.cb_topic, payment.transaction_id, dup, None, "duplicate", dup_at
            )
            self._push(dup_at, _EMIT, dup_event)
        return event

    def _forge(self, at: float, storm_end: float) -> SimEvent:
        rng = self.rng
        # Forgers claim that unpaid orders were paid: they target pending VA and payment-code
        # payments (providers snap, xendit, doku), real ones or made-up ids.
        if self._recent_pending and rng.random() < 0.8:
            payment, provider = rng.choice(self._recent_pending)
        else:
            channel = rng.choice(self.deferred_channels)
            payment = Payment(
                f"trx-{self._stamps(at)[1]}-9{rng.randrange(100_000):05d}",
                _price(rng.uniform(1e6, 2e7)),
                channel.name,
                channel.method,
                at - rng.uniform(60, 3600),
            )
            provider = channel.provider
        r = rng.random()
        secret, source, signed = FORGED_SECRET, rng.choice(SIM_SOURCE_IPS[provider]), at
        kind = "bad_signature"
        if r < 0.3:
            source, kind = rng.choice(FORGED_SOURCE_IPS), "foreign_address"
        elif r < 0.4:
            secret, source, kind = (
                SIM_SECRETS[provider],
                rng.choice(FORGED_SOURCE_IPS),
                "leaked_secret",
            )
        elif r < 0.55 and provider in TIMESTAMPED:
            secret, signed, kind = SIM_SECRETS[provider], at - rng.uniform(900, 3600), "stale"
        body, options = callback_body(provider, payment, PAID, at, rng)
        if provider == "xendit" and kind == "stale":
            options["variant"] = "hmac"
        received = datetime.fromtimestamp(at, UTC)
        value = build_callback(
            provider,
            body,
            secret,
            callback_id=f"cb-{next(self.cb_seq):07d}",
            received_at=received,
            source_ip=source,
            signed_at=datetime.fromtimestamp(signed, UTC),
            **options,
        )
        event = SimEvent(self.cb_topic, payment.transaction_id, value, None, "forged:" + kind, at)
        nxt = at + rng.expovariate(3.0)
        if nxt < storm_end:
            self._push(nxt, _FORGE, storm_end)
        return event

    # ---- balances ------------------------------------------------------------------------------

    def _balance(self, m: int, first: float, k: int, cycle_end: float) -> SimEvent:
        rng = self.rng
        at = first + k * BALANCE_EVERY_S
        balance = self.merch_balance[m]
        tag = None
        window = self.low_balance.get(m)
        if window is not None and window[0] - 0.001 <= at < window[1] - 0.001:
            value = rng.uniform(2e6, 9.5e6)
            tag = "low_balance"
        elif window is not None and abs(at - window[1]) < 0.001:
            balance = self.merch_balance[m] = rng.uniform(120e6, 150e6)
            value, tag = balance, "topup"
        elif window is not None and at < window[0]:
            # Draining towards the incident: payouts outrun settlements.
            left = (window[0] - at) / 3600.0
            value = 12e6 + 30e6 * min(1.0, left)
        else:
            balance *= math.exp(rng.gauss(0.0, 0.03))
            if balance < 25e6:
                balance += 100e6  # the merchant tops up long before the alert threshold
            self.merch_balance[m] = value = balance
        item = {
            "merchant_id": self.merch_ids[m],
            "balance": f"{int(value)}.00",
            "currency": "IDR",
            "at": self._utc_iso(at),
        }
        if self.invalid_rate and rng.random() < self.invalid_rate:
            item["currency"] = "USD"
            tag = "invalid:currency"
        event = SimEvent(self.bal_topic, self.merch_ids[m], item, None, tag, at)
        nxt = first + (k + 1) * BALANCE_EVERY_S
        if nxt < cycle_end:
            self._push(nxt, _BALANCE, (m, first, k + 1, cycle_end))
        return event

    # ---- the stream ----------------------------------------------------------------------------

    def _rate_at(self, at: float) -> float:
        if not self.diurnal:
            return self.rate
        hours = (at + 25200) / 3600.0
        h = int(hours) % 24
        frac = hours - math.floor(hours)
        return self.rate * (HOURLY_FACTOR[h] * (1 - frac) + HOURLY_FACTOR[(h + 1) % 24] * frac)

    def _pop(self) -> SimEvent:
        at, _, kind, payload = heapq.heappop(self.heap)
        if kind == _EMIT:
            event: SimEvent = payload
            return event
        if kind == _ATTEMPT:
            return self._transaction(payload, at)
        if kind == _CALLBACK:
            payment, provider, outcome, event_at = payload
            return self._callback(payment, provider, outcome, event_at, at)
        if kind == _BALANCE:
            return self._balance(*payload)
        return self._forge(at, payload)

    def events(self) -> Iterator[SimEvent]:
        """Every event in event-time order (forever when looping)."""
        rng = self.rng
        heap = self.heap
        pop = self._pop
        transaction = self._transaction
        new_attempt = self._new_attempt
        rate_at = self._rate_at
        self._start_cycle(self.t0)
        at = self.t0 + rng.expovariate(self._rate_at(self.t0))
        while True:
            if at >= self.cycle_start + self.duration:
                if not self.loop:
                    break
                self._start_cycle(self.cycle_start + self.duration)
                continue
            while heap and heap[0][0] <= at:
                yield pop()
            yield transaction(new_attempt(at), at)
            at += rng.expovariate(rate_at(at))
        while heap:
            yield pop()


def _bisect(cum: list[float], x: float) -> int:
    i = bisect_right(cum, x)
    return i if i < len(cum) else len(cum) - 1


def _weighted(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    r = rng.random() * sum(w for _, w in table)
    for code, w in table:
        r -= w
        if r < 0:
            return code
    return table[-1][0]


def _test_pan(rng: random.Random) -> str:
    """A Luhn-valid 16-digit test card number (only for deliberately invalid events)."""
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    digits.append((10 - total % 10) % 10)
    return "".join(map(str, digits))


INVALID_TRANSACTION_KINDS = (
    "amount_zero", "amount_too_large", "currency", "missing_merchant", "naive_time",
    "bad_channel", "card_number", "negative_latency", "bad_ip",
)  # fmt: skip


def _corrupt_transaction(value: dict[str, Any], rng: random.Random) -> str:
    """Make a transaction invalid in one of the ways gateways get it wrong; returns the kind."""
    kind = rng.choice(INVALID_TRANSACTION_KINDS)
    if kind == "amount_zero":
        value["amount"] = "0.00"
    elif kind == "amount_too_large":
        value["amount"] = "1500000000.00"
    elif kind == "currency":
        value["currency"] = "USD"
    elif kind == "missing_merchant":
        del value["merchant_id"]
    elif kind == "naive_time":
        value["created_at"] = value["created_at"][:-6]
    elif kind == "bad_channel":
        value["channel"] = "B C A!"
    elif kind == "card_number":
        value["device_id"] = _test_pan(rng)
    elif kind == "negative_latency":
        value["latency_ms"] = -5
    else:
        value["ip"] = "999.1.1.1"
    return kind


def _corrupt_callback(value: dict[str, Any], rng: random.Random) -> str:
    kind = rng.choice(("unknown_provider", "missing_body", "bad_source_ip"))
    if kind == "unknown_provider":
        value["provider"] = "paypal"
    elif kind == "missing_body":
        del value["body"]
    else:
        value["source_ip"] = "not-an-ip"
    return kind


def generate(
    *,
    scenarios: Sequence[str] = (),
    seed: int = 0,
    start: datetime = DEFAULT_START,
    duration: timedelta = timedelta(hours=2),
    tx_per_second: float = 20.0,
    customers: int = sc.DEFAULT_CUSTOMERS,
    merchants: int = 200,
    loop: bool = False,
    invalid_rate: float = 0.0,
    diurnal: bool = True,
    topics: Topics | None = None,
    settings: Settings | None = None,
) -> Iterator[SimEvent]:
    """Simulated gateway traffic in event-time order: transactions (key customer_id), their
    callbacks (key transaction_id), balance snapshots (key merchant_id) and late fraud labels
    (key transaction_id). `tx_per_second` is the daily mean; with `diurnal` the rate follows the
    hour of day in WIB. `loop` repeats the scenarios every `duration` forever. Topic names come
    from `topics`, else from `settings`, else the defaults. Same arguments, same events."""
    if topics is None and settings is not None:
        topics = settings.topics
    sim = Simulator(
        scenarios=scenarios,
        seed=seed,
        start=start,
        duration=duration,
        tx_per_second=tx_per_second,
        customers=customers,
        merchants=merchants,
        loop=loop,
        invalid_rate=invalid_rate,
        diurnal=diurnal,
        topics=topics or Topics(),
    )
    return sim.events()


def incidents(
    scenarios: Sequence[str],
    *,
    start: datetime = DEFAULT_START,
    duration: timedelta = timedelta(hours=2),
    customers: int = sc.DEFAULT_CUSTOMERS,
    merchants: int = 200,
    cycles: int = 1,
) -> list[sc.Incident]:
    """The incidents `generate` with the same arguments puts into its events."""
    return sc.incidents(
        scenarios, start, duration=duration, customers=customers, merchants=merchants,
        cycles=cycles,
    )  # fmt: skip
