"""The simulator's named incident and fraud scenarios, with their incident windows as data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.sim_catalog import customer_id, merchant_category, merchant_id

# Incident kinds (what a detector should see).
PROVIDER_OUTAGE = "provider_outage"
LATENCY_DEGRADATION = "latency_degradation"
CARD_TESTING = "card_testing"
ACCOUNT_TAKEOVER = "account_takeover"
CALLBACK_STORM = "callback_storm"
SETTLEMENT_DELAY = "settlement_delay"
LOW_BALANCE = "low_balance"

# A realistic population for the default rate: at 20 payments/s a customer pays a few times a
# day, not every few minutes (5,000 customers made everyone a velocity outlier).
DEFAULT_CUSTOMERS = 200_000


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident in event time: what happens, to what, from `start` (inclusive) to `end`."""

    scenario: str
    kind: str
    start: datetime
    end: datetime
    channel: str | None = None
    merchant: str | None = None
    customer: str | None = None
    device: str | None = None
    provider: str | None = None

    def contains(self, at: datetime) -> bool:
        """True when `at` falls inside the incident window."""
        return self.start <= at < self.end

    @property
    def duration(self) -> timedelta:
        """How long the incident lasts."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Window:
    """An incident relative to the start of the simulation (targets named by index)."""

    kind: str
    offset: timedelta
    length: timedelta
    channel: str | None = None
    merchant_index: int | None = None
    customer_index: int | None = None
    device: str | None = None
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named scenario: its incident windows and what the simulator does inside them."""

    name: str
    description: str
    windows: tuple[Window, ...]

    def incidents(
        self, start: datetime, *, customers: int = DEFAULT_CUSTOMERS, merchants: int = 200
    ) -> list[Incident]:
        """This scenario's incidents for a simulation starting at `start`."""
        out = []
        for w in self.windows:
            out.append(
                Incident(
                    scenario=self.name,
                    kind=w.kind,
                    start=start + w.offset,
                    end=start + w.offset + w.length,
                    channel=w.channel,
                    merchant=(
                        merchant_id(w.merchant_index % merchants)
                        if w.merchant_index is not None
                        else None
                    ),
                    customer=(
                        customer_id(w.customer_index % customers)
                        if w.customer_index is not None
                        else None
                    ),
                    device=w.device,
                    provider=w.provider,
                )
            )
        return out

    @property
    def span(self) -> timedelta:
        """From the simulation's start to the end of the last window."""
        return max(w.offset + w.length for w in self.windows)


def _m(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


CARD_TESTING_MERCHANT = 11  # a digital-services merchant (vouchers: easy to resell)
assert merchant_category(CARD_TESTING_MERCHANT) == "digital_services"
LUXURY_MERCHANT = 14
assert merchant_category(LUXURY_MERCHANT) == "luxury_goods"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "bca-outage",
            "BCA virtual accounts answer 503/504/TIMEOUT to almost every attempt for 20 minutes "
            "from minute 15, then recover.",
            (Window(PROVIDER_OUTAGE, _m(15), _m(20), channel="BCA", provider="snap"),),
        ),
        Scenario(
            "ovo-latency",
            "OVO answers in 1.5-3 s (p95 far above 800 ms) for 25 minutes from minute 20, with "
            "errors at the healthy rate, then recovers.",
            (Window(LATENCY_DEGRADATION, _m(20), _m(25), channel="OVO", provider="xendit"),),
        ),
        Scenario(
            "card-testing",
            "From minute 40, for 8 minutes, one device tries about 90 small card payments with "
            "about 70 distinct cards at a voucher merchant, mostly declined; in the next 2 "
            "minutes the same device buys expensive goods with three of the cards.",
            (
                Window(
                    CARD_TESTING,
                    _m(40),
                    _m(10),
                    merchant_index=CARD_TESTING_MERCHANT,
                    device="d-ct-7f3a9c",
                ),
            ),
        ),
        Scenario(
            "account-takeover",
            "Three customers with a history lose their accounts around midnight WIB (with the "
            "default start): a new device from a foreign IP buys high-value goods in bursts.",
            (
                Window(ACCOUNT_TAKEOVER, _m(75), _m(12), customer_index=137, device="d-ato-51c2e0"),
                Window(ACCOUNT_TAKEOVER, _m(80), _m(12), customer_index=412, device="d-ato-9b7d14"),
                Window(
                    ACCOUNT_TAKEOVER, _m(88), _m(12), customer_index=1024, device="d-ato-e4a871"
                ),
            ),
        ),
        Scenario(
            "callback-storm",
            "For 12 minutes from minute 50 providers deliver each callback 2-4 times and "
            "forged callbacks (wrong signatures, foreign addresses, stale timestamps) arrive "
            "at about 3 per second.",
            (Window(CALLBACK_STORM, _m(50), _m(12)),),
        ),
        Scenario(
            "settlement-delay",
            "MANDIRI virtual-account payments made in a 30-minute window from minute 20 settle "
            "4.5-6.5 hours late, and 10% of them never get a callback.",
            (Window(SETTLEMENT_DELAY, _m(20), _m(30), channel="MANDIRI", provider="xendit"),),
        ),
        Scenario(
            "low-balance",
            "One merchant's deposit balance drops below IDR 10,000,000 at minute 30 and is "
            "topped up at minute 70.",
            (Window(LOW_BALANCE, _m(30), _m(40), merchant_index=3),),
        ),
    )
}

# Settlement-delay figures (the detector's threshold is 4 h by default).
SETTLEMENT_DELAY_RANGE_S = (4.5 * 3600, 6.5 * 3600)
SETTLEMENT_MISSING_SHARE = 0.10
LOW_BALANCE_THRESHOLD = 10_000_000


class UnknownScenarioError(ValueError):
    """A scenario name the simulator does not know."""


def resolve(names: Iterable[str]) -> list[Scenario]:
    """Scenarios by name, in the order given, without repeats; unknown names raise."""
    out: list[Scenario] = []
    for name in names:
        scenario = SCENARIOS.get(name)
        if scenario is None:
            raise UnknownScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        if scenario not in out:
            out.append(scenario)
    return out


def incidents(
    names: Sequence[str],
    start: datetime,
    *,
    duration: timedelta | None = None,
    customers: int = DEFAULT_CUSTOMERS,
    merchants: int = 200,
    cycles: int = 1,
) -> list[Incident]:
    """Every incident of the named scenarios, in start order; with `duration`, only those that
    start inside the simulation, repeated per cycle when the simulation loops."""
    out: list[Incident] = []
    for cycle in range(cycles):
        if cycle and duration is None:
            raise ValueError("cycles > 1 needs the duration of one cycle")
        cycle_start = start + (duration or timedelta(0)) * cycle
        for scenario in resolve(names):
            for incident in scenario.incidents(
                cycle_start, customers=customers, merchants=merchants
            ):
                if duration is None or incident.start < cycle_start + duration:
                    out.append(incident)
    out.sort(key=lambda i: (i.start, i.scenario))
    return out
