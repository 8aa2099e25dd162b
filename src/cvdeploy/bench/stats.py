"""Latency statistics and the tests that say whether two sets of samples really differ.

Everything here is plain numpy (scipy is not a core dependency): a percentile summary, the
Mann-Whitney U test by its normal approximation with tie and continuity correction, and a
bootstrap confidence interval of the ratio of medians.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of ``n`` latency samples, all in milliseconds; ``cv`` is std / mean (unitless)."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyStats:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def get(self, stat: str) -> float:
        """A figure by short name: ``p50``, ``p95``, ``mean`` … (``_ms`` suffix optional)."""
        key = stat if stat.endswith("_ms") or stat in ("n", "cv") else f"{stat}_ms"
        return float(getattr(self, key))


def summarize(samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
    """Percentiles (linear interpolation), mean, extremes, sample std (ddof=1) and CV of ``(n,)`` ms."""
    x = np.asarray(samples_ms, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no samples to summarise")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, PERCENTILES))
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return LatencyStats(
        n=int(x.size),
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        min_ms=float(x.min()),
        max_ms=float(x.max()),
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
    )


@dataclass(frozen=True)
class UTest:
    """Result of a two-sided Mann-Whitney U test of ``a`` against ``b``.

    ``u`` is the statistic of ``a``; ``p_superiority`` = P(a > b) + ½ P(a = b), the common-language
    effect size (0.5 = no tendency, 1.0 = every ``a`` above every ``b``).
    """

    u: float
    z: float
    p_value: float
    p_superiority: float


def mann_whitney_u(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> UTest:
    """Two-sided Mann-Whitney U test, normal approximation with tie and continuity correction.

    Matches ``scipy.stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True)``.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, tie_counts = _rank(np.concatenate([x, y]))
    n = n1 + n2
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    mu = n1 * n2 / 2.0
    tie_term = float((tie_counts**3 - tie_counts).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value equal: no evidence of any difference
        return UTest(u=u1, z=0.0, p_value=1.0, p_superiority=0.5)
    z = max(abs(u1 - mu) - 0.5, 0.0) / math.sqrt(var)
    z = math.copysign(z, u1 - mu)
    p = min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))
    return UTest(u=u1, z=z, p_value=p, p_superiority=u1 / (n1 * n2))


def _rank(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of ``(n,)`` values, and the size of every group of tied values."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    counts = np.diff(np.r_[starts, sorted_v.size])
    avg = starts + (counts + 1) / 2.0  # 1-based average rank of each run
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts.astype(np.float64)


def bootstrap_median_ratio(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``median(b) / median(a)`` and its percentile-bootstrap confidence interval ``(ratio, low, high)``."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, (resamples, y.size))], axis=1)
    ratios = my / np.maximum(mx, 1e-12)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(np.median(y) / max(float(np.median(x)), 1e-12)), float(low), float(high)
