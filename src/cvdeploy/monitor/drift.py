"""Drift of a window of traffic against the reference profile: a two-sample test and an effect size per feature.

For each feature the window's values are binned on the profile's edges, giving a 2×k table of
counts (reference, window), and:

- **test**: Pearson's chi-square test of homogeneity (``scipy.stats.chi2_contingency``) — a proper
  two-sample test for binned data, the form the profile keeps. Adjacent bins are merged until every
  expected count is at least 5 (Cochran's rule), so sparse tails do not make the asymptotic p-value
  lie. The p-values of one window are Holm-adjusted over all its features (family-wise error α).
- **effect**: Cramér's V of that table (0.1 small, 0.3 medium, 0.5 large; Cohen's conventions for
  ``w``). It does not grow with the number of requests, so busy servers do not flag trivial shifts.

A feature is flagged when its adjusted p < α *and* V ≥ the minimum effect (default 0.01 and 0.3).
Class shares are tested the same way on the 2×classes table. Windows with fewer than
``min_requests`` images are not tested (no flag, ``p_value`` None).

Why not a drift library: Evidently, alibi-detect and NannyML compare a *sample* of reference rows with
a sample of current rows (pandas frames, or arrays for alibi-detect's KS/MMD detectors with a TensorFlow
or PyTorch backend), in batch; the bundle's profile keeps histograms, the server needs a few statistics
every few seconds without pandas, plotly or a deep-learning backend in its process, and NannyML's
label-free performance estimation targets tabular classifiers, not detectors. The test itself is
scipy's; written here are only the binning on the profile's edges, Cochran's merge and Holm's step-down
(a few lines; scipy offers Benjamini-Hochberg but not Holm, and statsmodels is not worth a dependency).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.monitor.reference import Histogram, Reference

MIN_EXPECTED = 5.0


@dataclass
class Drift:
    """One feature's comparison; ``p_value`` is Holm-adjusted, ``p_raw`` the test's own."""

    feature: str
    group: str  # input | output
    statistic: float | None
    p_raw: float | None
    effect: float | None
    n: int
    reference_n: int
    mean: float | None = None
    reference_mean: float | None = None
    p_value: float | None = None
    flagged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "statistic": _r(self.statistic), "p_value": _r(self.p_value),
                "effect": _r(self.effect), "flagged": self.flagged, "group": self.group, "n": self.n,
                "reference_n": self.reference_n, "mean": _r(self.mean),
                "reference_mean": _r(self.reference_mean)}  # fmt: skip


def _r(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(f"{v:.4g}")


def merge_sparse(table: np.ndarray, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """Merge adjacent columns of a 2×k table until every expected count is ≥ ``min_expected``."""
    table = table[:, table.sum(0) > 0]
    rows = table.sum(1)
    if table.shape[1] < 2 or rows.min() == 0:
        return table
    need = min_expected * table.sum() / rows.min()  # a column total giving the smaller row that expectation
    cols: list[np.ndarray] = []
    acc = np.zeros(2)
    for j in range(table.shape[1]):
        acc = acc + table[:, j]
        if acc.sum() >= need:
            cols.append(acc)
            acc = np.zeros(2)
    if acc.sum() > 0:
        if cols:
            cols[-1] = cols[-1] + acc
        else:
            cols.append(acc)
    return np.stack(cols, axis=1)


def chi2_test(
    reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray
) -> tuple[float, float, float]:
    """(chi-square statistic, p-value, Cramér's V) of two count vectors on the same bins."""
    table = merge_sparse(np.asarray([reference, current], np.float64))
    if table.shape[1] < 2 or table.sum(1).min() == 0:
        return 0.0, 1.0, 0.0  # everything in one (merged) bin: no difference a test can see
    stats = require("scipy.stats", "drift tests")
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p), float(math.sqrt(chi2 / table.sum()))


def _feature(name: str, group: str, ref: Histogram, values: np.ndarray, min_n: int) -> Drift:
    mean = float(values.mean()) if values.size else None
    row = Drift(name, group, None, None, None, int(values.size), ref.n, mean, ref.mean)
    if values.size >= min_n:
        row.statistic, row.p_raw, row.effect = chi2_test(ref.counts, ref.bin(values))
    return row


def holm(rows: Sequence[Drift]) -> None:
    """Set each tested row's ``p_value`` to its Holm-adjusted p-value (step-down, monotone)."""
    tested = [r for r in rows if r.p_raw is not None]
    order = sorted(tested, key=lambda r: r.p_raw or 0.0)
    running = 0.0
    for rank, r in enumerate(order):
        running = max(running, min(1.0, (r.p_raw or 0.0) * (len(order) - rank)))
        r.p_value = running


def compare(
    reference: Reference,
    inputs: Mapping[str, Sequence[float]],
    outputs: Mapping[str, Sequence[float]],
    classes: Mapping[str, int],
    images_with_outputs: int,
    alpha: float = 0.01,
    min_effect: float = 0.3,
    min_requests: int = 20,
) -> list[Drift]:
    """Every feature the profile and the window both have, tested; flags set (see the module docstring).

    ``inputs``: feature → one value per image; ``outputs``: feature → values (per image for
    ``detections_per_image``, per detection for the others); ``classes``: class → detections.
    """
    rows: list[Drift] = []
    n_images = max((len(v) for v in inputs.values()), default=0)
    for name, ref in reference.inputs.items():
        if name in inputs:
            values = np.asarray(inputs[name], np.float64)
            rows.append(
                _feature(name, "input", ref, values, min_requests if n_images >= min_requests else 10**9)
            )
    enough = images_with_outputs >= min_requests
    for name, ref in reference.outputs.items():
        if name in outputs:
            values = np.asarray(outputs[name], np.float64)
            rows.append(_feature(name, "output", ref, values, 1 if enough else 10**9))
    if reference.classes and sum(reference.classes.values()) > 0:
        names = sorted(set(reference.classes) | set(classes))
        r = [reference.classes.get(n, 0) for n in names]
        c = [int(classes.get(n, 0)) for n in names]
        row = Drift("class_share", "output", None, None, None, sum(c), sum(r))
        if enough and sum(c) > 0:
            row.statistic, row.p_raw, row.effect = chi2_test(r, c)
        rows.append(row)
    holm(rows)
    for row in rows:
        row.flagged = bool(
            row.p_value is not None
            and row.effect is not None
            and row.p_value < alpha
            and row.effect >= min_effect
        )
    return rows
