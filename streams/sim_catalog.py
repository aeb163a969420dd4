"""The simulator's picture of a gateway: channels, shares, latencies, error codes, goods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, timezone

from models.common import KNOWN_CHANNELS, Method

WIB = timezone(timedelta(hours=7), "WIB")


@dataclass(frozen=True, slots=True)
class Channel:
    """One payment channel as the simulator drives it."""

    name: str
    method: Method
    share: float  # of all payment attempts
    latency_median_ms: float  # healthy latency is log-normal around this
    latency_sigma: float
    provider: str  # who sends its callbacks (selects the signature scheme)
    decline_rate: float  # customer-side refusals (insufficient funds, blocked, KYC)
    max_amount: int  # the channel's per-transaction ceiling in IDR


# Shares from public Indonesian e-commerce payment mixes (e-wallets and VAs lead, QRIS grows,
# cards are a minority); latencies keep a healthy p95 well under the 800 ms latency rule.
CHANNELS: tuple[Channel, ...] = (
    Channel("BCA", Method.VIRTUAL_ACCOUNT, 0.11, 220, 0.25, "snap", 0.002, 500_000_000),
    Channel("MANDIRI", Method.VIRTUAL_ACCOUNT, 0.06, 300, 0.25, "xendit", 0.002, 500_000_000),
    Channel("BNI", Method.VIRTUAL_ACCOUNT, 0.04, 320, 0.25, "doku", 0.002, 500_000_000),
    Channel("BRI", Method.VIRTUAL_ACCOUNT, 0.05, 340, 0.25, "snap", 0.002, 500_000_000),
    Channel("PERMATA", Method.VIRTUAL_ACCOUNT, 0.02, 300, 0.25, "xendit", 0.002, 500_000_000),
    Channel("OVO", Method.EWALLET, 0.07, 280, 0.25, "xendit", 0.025, 20_000_000),
    Channel("DANA", Method.EWALLET, 0.08, 240, 0.25, "snap", 0.025, 20_000_000),
    Channel("GOPAY", Method.EWALLET, 0.08, 200, 0.25, "midtrans", 0.025, 20_000_000),
    Channel("SHOPEEPAY", Method.EWALLET, 0.07, 230, 0.25, "midtrans", 0.025, 20_000_000),
    Channel("LINKAJA", Method.EWALLET, 0.02, 330, 0.25, "doku", 0.025, 20_000_000),
    Channel("QRIS", Method.QRIS, 0.16, 260, 0.25, "midtrans", 0.015, 10_000_000),
    Channel("INDOMARET", Method.CONVENIENCE_STORE, 0.045, 200, 0.25, "xendit", 0.002, 5_000_000),
    Channel("ALFAMART", Method.CONVENIENCE_STORE, 0.035, 210, 0.25, "xendit", 0.002, 5_000_000),
    Channel("VISA", Method.CARD, 0.055, 350, 0.25, "midtrans", 0.07, 1_000_000_000),
    Channel("MASTERCARD", Method.CARD, 0.035, 360, 0.25, "midtrans", 0.07, 1_000_000_000),
    Channel("JCB", Method.CARD, 0.01, 340, 0.25, "doku", 0.07, 1_000_000_000),
    Channel("AKULAKU", Method.PAYLATER, 0.025, 330, 0.25, "generic", 0.06, 30_000_000),
    Channel("KREDIVO", Method.PAYLATER, 0.035, 320, 0.25, "generic", 0.06, 30_000_000),
)
BY_NAME: dict[str, Channel] = {c.name: c for c in CHANNELS}
assert all(KNOWN_CHANNELS[c.name] == c.method for c in CHANNELS)
assert abs(sum(c.share for c in CHANNELS) - 1.0) < 1e-9

# Methods whose payment completes later (the customer pays at an ATM or a shop): the attempt is
# `pending` and the provider's callback settles or expires it.
DEFERRED = frozenset({Method.VIRTUAL_ACCOUNT, Method.CONVENIENCE_STORE})
EXPIRY_SECONDS = 2 * 3600.0  # the simulated VA / payment-code validity

# Healthy base rates across every channel.
PROVIDER_ERROR_RATE = 0.005
MERCHANT_ERROR_RATE = 0.003

# Error codes by class (DESIGN.md §4), with weights.
PROVIDER_ERRORS: tuple[tuple[str, float], ...] = (
    ("500", 0.15),
    ("502", 0.15),
    ("503", 0.25),
    ("504", 0.20),
    ("TIMEOUT", 0.20),
    ("CONNECTION_RESET", 0.05),
)
OUTAGE_ERRORS: tuple[tuple[str, float], ...] = (("503", 0.5), ("504", 0.25), ("TIMEOUT", 0.25))
MERCHANT_ERRORS: tuple[tuple[str, float], ...] = (("409", 0.6), ("400", 0.4))
DECLINES: dict[Method, tuple[tuple[str, float], ...]] = {
    Method.CARD: (("05", 0.40), ("51", 0.35), ("402", 0.10), ("USER_BLOCKED", 0.05), ("451", 0.10)),
    Method.EWALLET: (
        ("INSUFFICIENT_FUNDS", 0.60),
        ("USER_BLOCKED", 0.15),
        ("451", 0.15),
        ("402", 0.10),
    ),
    Method.PAYLATER: (("402", 0.40), ("USER_BLOCKED", 0.30), ("451", 0.30)),
    Method.QRIS: (("INSUFFICIENT_FUNDS", 0.70), ("402", 0.30)),
    Method.VIRTUAL_ACCOUNT: (("USER_BLOCKED", 0.5), ("402", 0.5)),
    Method.CONVENIENCE_STORE: (("402", 1.0),),
}
# Which class each code belongs to, for tests and docs (the health rules own the real taxonomy).
ERROR_CLASS: dict[str, str] = {
    **{code: "provider" for code, _ in PROVIDER_ERRORS},
    **{code: "merchant" for code, _ in MERCHANT_ERRORS},
    **{code: "declined" for table in DECLINES.values() for code, _ in table},
}

# Probability that a failed attempt is retried (same transaction_id, later created_at), by class.
RETRY_PROBABILITY = {"provider": 0.55, "declined": 0.20, "merchant": 0.05}
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Goods:
    """A goods category with its typical basket (log-normal IDR amount)."""

    name: str
    median_amount: float
    sigma: float


GOODS: dict[str, Goods] = {
    "basic_needs": Goods("basic_needs", 60_000, 0.8),
    "standard": Goods("standard", 150_000, 0.9),
    "premium_goods": Goods("premium_goods", 650_000, 0.8),
    "luxury_goods": Goods("luxury_goods", 9_000_000, 0.9),
    "digital_services": Goods("digital_services", 55_000, 0.9),
}
# Merchant categories follow this 20-slot pattern by merchant index (so scenarios can name
# merchants by index independently of the seed).
MERCHANT_PATTERN: tuple[str, ...] = (
    "basic_needs", "standard", "standard", "premium_goods", "basic_needs",
    "standard", "digital_services", "standard", "basic_needs", "premium_goods",
    "standard", "digital_services", "basic_needs", "standard", "luxury_goods",
    "standard", "digital_services", "basic_needs", "premium_goods", "standard",
)  # fmt: skip
LUXURY_TAX_RATES = ("0.10", "0.20", "0.25", "0.30", "0.35", "0.40")

MERCHANT_NAMES = (
    "tokobaju", "warungsembako", "gadgetku", "kopikenangan", "bukuria", "sepatulokal",
    "rumahmebel", "apotekplus", "tiketpesawat", "gamevoucher", "skincareid", "pulsamurah",
    "elektronikjaya", "busanamuslim", "martabakmanis", "kursusonline", "mainananak",
    "jamtanganmewah", "streamingku", "sayurSegar", "perhiasanemas", "otomotifparts",
    "hotelmurah", "kosmetikcantik", "bengkelmotor", "tasbranded", "laundrykilat",
    "petshop", "olahragasport", "cloudhosting",
)  # fmt: skip


def merchant_id(index: int) -> str:
    """The simulator's id of merchant number `index` (stable across seeds)."""
    return f"m-{MERCHANT_NAMES[index % len(MERCHANT_NAMES)].lower()}-{index:03d}"


def customer_id(index: int) -> str:
    """The simulator's id of customer number `index` (stable across seeds)."""
    return f"c-{index:05d}"


def merchant_category(index: int) -> str:
    """The main goods category of merchant number `index`."""
    return MERCHANT_PATTERN[index % len(MERCHANT_PATTERN)]


# Traffic by hour of day in WIB, normalised to a daily mean of 1: quiet 01:00-05:00, a lunch
# bump, the evening peak 19:00-22:00.
_HOURLY = (
    0.55, 0.35, 0.25, 0.20, 0.20, 0.30, 0.50, 0.75, 0.95, 1.05, 1.10, 1.20,
    1.35, 1.30, 1.15, 1.10, 1.10, 1.15, 1.30, 1.50, 1.60, 1.55, 1.25, 0.85,
)  # fmt: skip
HOURLY_FACTOR: tuple[float, ...] = tuple(h * 24 / sum(_HOURLY) for h in _HOURLY)


def night(hour_wib: int) -> bool:
    """Night in WIB as fraud features count it (00:00-05:59)."""
    return hour_wib < 6


# Where customers' addresses come from: Indonesian mobile and broadband prefixes, and a few
# foreign ones (travellers, VPNs, attackers).
ID_PREFIXES = (
    "36.68", "36.72", "36.80", "110.136", "110.137", "114.120", "114.122", "114.124",
    "112.215", "182.1", "180.241", "202.67", "103.147", "139.192", "125.160", "120.188",
)  # fmt: skip
FOREIGN_PREFIXES: dict[str, tuple[str, ...]] = {
    "SG": ("128.199", "139.59"),
    "MY": ("175.143", "115.132"),
    "US": ("23.94", "104.131"),
    "JP": ("133.242", "153.120"),
    "AU": ("1.120", "203.2"),
    "RU": ("95.163", "188.120"),
    "NG": ("105.112", "197.210"),
    "VN": ("14.161", "113.161"),
    "NL": ("185.107", "37.97"),
}
TRAVEL_COUNTRIES = ("SG", "MY", "JP", "AU", "US")
ATTACKER_COUNTRIES = ("RU", "NG", "VN", "NL", "US")

# Card schemes: BIN first digits by scheme, issuer countries.
CARD_BIN_PREFIXES: dict[str, tuple[str, ...]] = {
    "VISA": ("4",),
    "MASTERCARD": ("51", "52", "53", "54", "55", "2221", "2720"),
    "JCB": ("3528", "3540", "3566", "3589"),
}
CARD_FOREIGN_COUNTRIES = ("US", "GB", "SG", "MY", "BR", "FR")
