"""Retry delays: the same numbers the retry loops used when each wrote its own formula."""

from __future__ import annotations

import pytest

from kubenetmon.shared import backoff


@pytest.mark.parametrize("failures", range(1, 40))
def test_exponential_is_the_capped_doubling(failures: int) -> None:
    assert backoff.exponential(failures, base_s=0.2, max_s=5.0) == min(5.0, 0.2 * 2**failures)
    assert backoff.exponential(failures - 1, base_s=0.5, max_s=30.0) == min(30.0, 0.5 * 2 ** (failures - 1))
    assert backoff.exponential(failures, base_s=0.001, max_s=1000.0, max_exponent=16) == min(
        1000.0, 0.001 * 2 ** min(failures, 16)
    )


def test_exponential_first_delays_cap_and_exponent_cap() -> None:
    delays = [backoff.exponential(n, base_s=0.5, max_s=10.0) for n in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.exponential(10, base_s=0.001, max_s=1000.0, max_exponent=3) == 0.008


def test_exponential_never_overflows() -> None:
    assert backoff.exponential(5000, base_s=0.5, max_s=30.0) == 30.0
    assert backoff.exponential(5000, base_s=0.5, max_s=30.0, max_exponent=30) == 30.0


def test_from_table_counts_from_one_and_repeats_the_last() -> None:
    table = (1.0, 5.0, 15.0)
    assert [backoff.from_table(table, n) for n in range(0, 6)] == [1.0, 1.0, 5.0, 15.0, 15.0, 15.0]


def test_at_least_raises_short_entries_only() -> None:
    assert backoff.at_least((1.0, 5.0, 60.0), floor_s=30.0) == (30.0, 30.0, 60.0)
    assert backoff.at_least((), floor_s=1.0) == ()


def test_jittered_scales_within_the_spread() -> None:
    bounds: list[tuple[float, float]] = []

    def lowest(lo: float, hi: float) -> float:
        bounds.append((lo, hi))
        return lo

    assert backoff.jittered(10.0, uniform=lowest) == 8.0
    assert bounds == [(0.8, 1.2)]
    assert backoff.jittered(10.0, spread=0.5, uniform=lambda lo, hi: hi) == 15.0
    assert all(8.0 <= backoff.jittered(10.0) <= 12.0 for _ in range(100))


def test_now_and_then_logs_the_first_and_every_nth() -> None:
    logged = [n for n in range(1, 61) if backoff.now_and_then(n, every=10)]
    assert logged == [1, 10, 20, 30, 40, 50, 60]
    assert [n for n in range(1, 61) if backoff.now_and_then(n, every=30)] == [1, 30, 60]
