"""Latency statistics and the Mann-Whitney U test against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvdeploy.bench.stats import LatencyStats, bootstrap_median_ratio, mann_whitney_u, summarize


def test_summarize_known_samples() -> None:
    s = summarize(np.arange(1, 101, dtype=float))
    assert s.n == 100
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)
    assert (s.min_ms, s.max_ms) == (1.0, 100.0)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(29.011491975882016)  # sample std, ddof=1
    assert s.cv == pytest.approx(29.011491975882016 / 50.5)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([4.0], {"p50_ms": 4.0, "std_ms": 0.0, "cv": 0.0, "min_ms": 4.0, "max_ms": 4.0}),
        ([1.0, 3.0], {"p50_ms": 2.0, "mean_ms": 2.0, "std_ms": math.sqrt(2.0)}),
        ([10.0, 10.0, 10.0, 10.0], {"p99_ms": 10.0, "cv": 0.0}),
    ],
)
def test_summarize_small_samples(samples: list[float], expected: dict[str, float]) -> None:
    s = summarize(samples)
    for key, value in expected.items():
        assert getattr(s, key) == pytest.approx(value)


def test_summarize_rejects_empty_and_round_trips() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
    s = summarize([1.0, 2.0, 5.0])
    assert LatencyStats.from_dict(s.to_dict()) == s
    assert s.get("p50") == s.get("p50_ms") == 2.0


def test_mann_whitney_hand_computed() -> None:
    # a entirely below b: U_a = 0, mu = 4.5, var = 9/12 * 7 = 5.25, z = (4.5 - 0.5) / sqrt(5.25)
    t = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert t.u == 0.0
    z = 4.0 / math.sqrt(5.25)
    assert t.z == pytest.approx(-z)
    assert t.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert t.p_superiority == 0.0


def test_mann_whitney_all_equal_is_no_evidence() -> None:
    t = mann_whitney_u([5.0] * 10, [5.0] * 12)
    assert t.p_value == 1.0
    assert t.p_superiority == 0.5


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
        ([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0]),  # many ties
        (
            list(np.random.default_rng(0).lognormal(3.0, 0.2, 200)),
            list(np.random.default_rng(1).lognormal(3.05, 0.2, 180)),
        ),
        (
            list(np.round(np.random.default_rng(2).normal(20, 2, 300), 1)),
            list(np.round(np.random.default_rng(3).normal(20, 2, 300), 1)),
        ),  # same distribution, ties
    ],
)
def test_mann_whitney_matches_scipy(a: list[float], b: list[float]) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    ours = mann_whitney_u(a, b)
    assert ours.u == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


def test_bootstrap_median_ratio_brackets_the_true_ratio() -> None:
    rng = np.random.default_rng(4)
    a = rng.lognormal(3.0, 0.1, 300)
    ratio, low, high = bootstrap_median_ratio(a, a * 1.5)
    assert ratio == pytest.approx(1.5)
    assert low <= 1.5 <= high
    assert high - low < 0.2
