"""The health ring's window sums and the histogram quantiles against plain reference versions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.health import BUCKET_MS, EDGES_MS, NBINS, NCOUNTS, RING, _Ring, quantiles

HOUR = RING * BUCKET_MS
BASE = 1_795_000_000_000 - 1_795_000_000_000 % BUCKET_MS


def reference_total(ring: _Ring, lo: int, hi: int) -> np.ndarray:
    """What the ring held before: every row whose bucket starts in [lo, hi), summed."""
    mask = (ring.starts >= lo) & (ring.starts < hi)
    return np.asarray(ring.rows[mask].sum(axis=0, dtype=np.int64))


def reference_quantiles(hist: Sequence[int], qs: Sequence[float]) -> list[float | None]:
    """The numpy implementation the plain-Python one replaced (kept to compare bit for bit)."""
    edges = np.asarray(EDGES_MS)
    counts = np.asarray(hist, dtype=np.int64)
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    if total == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    for q in qs:
        rank = q * total
        i = int(np.searchsorted(cum, rank, side="left"))
        i = min(i, len(counts) - 1)
        while counts[i] == 0:
            i += 1
        seen = int(cum[i]) - int(counts[i])
        frac = (rank - seen) / int(counts[i])
        if i == 0:
            out.append(float(edges[0] * frac))
        elif i >= len(edges):
            out.append(float(edges[-1]))
        else:
            lo, hi = float(edges[i - 1]), float(edges[i])
            out.append(lo * (hi / lo) ** frac)
    return out


# A delta: its bucket (in 10 s steps from BASE, out of order, some more than an hour behind),
# a few counts and latency bins.
DELTAS = st.lists(
    st.tuples(
        st.integers(0, 3 * RING),
        st.lists(st.integers(0, 50), min_size=0, max_size=NCOUNTS),
        st.lists(st.tuples(st.integers(0, NBINS - 1), st.integers(1, 9)), max_size=4),
    ),
    max_size=120,
)
# Window edges: bucket-aligned mostly, sometimes not (a restore's evidence_from can be anything).
EDGE = st.one_of(
    st.integers(-2, 3 * RING + 2).map(lambda k: BASE + k * BUCKET_MS),
    st.integers(-2 * BUCKET_MS, (3 * RING + 2) * BUCKET_MS).map(lambda ms: BASE + ms),
)


@settings(max_examples=400, deadline=None)
@given(DELTAS, st.lists(st.tuples(EDGE, st.sampled_from([0, 60_000, 300_000, HOUR, 2 * HOUR]))))
def test_window_sums_equal_summing_the_rows(
    deltas: list[tuple[int, list[int], list[tuple[int, int]]]],
    windows: list[tuple[int, int]],
) -> None:
    ring = _Ring()
    for step, counts, latency in deltas:
        ring.add(BASE + step * BUCKET_MS, counts, latency)
        held = ring.rows[ring.starts >= 0].sum(axis=0, dtype=np.int64)
        assert (ring.held == held).all()  # the running sum follows every add and every reuse
    latest = BASE + max((d[0] for d in deltas), default=0) * BUCKET_MS
    boundaries = [(latest + BUCKET_MS - HOUR, HOUR), (latest + BUCKET_MS, HOUR), *windows]
    for hi, length in boundaries:
        for lo in (hi - length, hi - length + 3_000):
            got = ring.total(lo, hi)
            assert got.dtype == np.int64
            assert got.tolist() == reference_total(ring, lo, hi).tolist(), (lo - BASE, hi - BASE)


HISTS = st.lists(
    st.one_of(st.just(0), st.just(0), st.integers(0, 5), st.integers(0, 100_000)),
    min_size=NBINS,
    max_size=NBINS,
)


@settings(max_examples=500, deadline=None)
@given(HISTS, st.lists(st.sampled_from([0.0, 0.5, 0.95, 0.99, 1.0, 0.001]), min_size=1))
def test_quantiles_are_bit_for_bit_the_numpy_ones(hist: list[int], qs: list[float]) -> None:
    expected = reference_quantiles(hist, qs)
    assert quantiles(hist, qs) == expected
    assert quantiles(np.asarray(hist, dtype=np.int32), qs) == expected  # a ring row's bins
    assert all(v is None or type(v) is float for v in quantiles(hist, qs))


def test_every_window_of_a_full_ring_wherever_it_wraps() -> None:
    """Every bucket of 70 minutes filled (the first ten reused by the last ten): windows ending
    at every boundary, so some wrap around the ring's end and some hold stale rows."""
    ring = _Ring()
    for k in range(RING + 60):
        ring.add(BASE + k * BUCKET_MS, [k + 1, 2 * k + 1], [(k % NBINS, 1 + k % 3)])
    for k in range(RING + 61):
        hi = BASE + k * BUCKET_MS
        for length in (60_000, 300_000, HOUR):
            for lo in (hi - length, hi - length - 4_000, hi - length + 4_000):
                got = ring.total(lo, hi).tolist()
                assert got == reference_total(ring, lo, hi).tolist(), (k, length, lo - hi)
