"""Check 2 — data consistency: do these images (and the model's outputs on them) look like the reference?

The bundle's reference profile (``profile.json``) keeps histograms of known-good images' statistics
and of the model's outputs on them. The same statistics of ``--images`` (and of the contract
pipeline's outputs on them, so a faulty deployment cannot pollute them) are binned on the same
edges, and each feature gets:

- a chi-square test of homogeneity of the two histograms (``scipy.stats.chi2_contingency``), its
  p-value Holm-corrected over all features;
- Cramér's V of that table as the effect size (0.1 small, 0.3 medium, 0.5 large), and the
  standardised mean difference (Cohen's d) to say which way and how far it moved.

A feature has drifted when its corrected p < 0.01 and V ≥ 0.3. Drift is critical when the
images' appearance moved *and* the model's outputs moved with it; appearance or outputs alone is a
warning; image size/aspect alone is only noted, since the letterbox absorbs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.doctor import figures
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.findings import CheckResult, FigureFn, Finding, Severity, skipped
from cvdeploy.profile import output_values
from cvdeploy.reports.document import Figure
from cvdeploy.results import Detections

CHECK, TITLE = "drift", "Data consistency / drift"
APPEARANCE = ("brightness", "contrast", "saturation", "sharpness", "grayscale", "jpeg_quality")
GEOMETRY = ("width", "height", "aspect")
OUTPUTS = ("detections_per_image", "confidence", "box_area_fraction", "class_frequency")
LABELS = {"detections_per_image": "detections per image", "confidence": "confidence",
          "box_area_fraction": "box area (share of image)", "class_frequency": "class frequency",
          "jpeg_quality": "JPEG quality", "grayscale": "grayscale share"}  # fmt: skip
ALPHA = 0.01
MEDIUM_V = 0.3
LARGE_V = 0.5


@dataclass
class FeatureDrift:
    name: str
    group: str  # appearance | geometry | output
    p_value: float
    cramers_v: float
    d: float  # standardised mean difference (current − reference)
    ref_mean: float | None
    cur_mean: float | None
    n_ref: int
    n_cur: int
    edges: list[float]
    ref_counts: list[int]
    cur_counts: list[int]
    p_holm: float = 1.0

    @property
    def drifted(self) -> bool:
        return self.p_holm < ALPHA and self.cramers_v >= MEDIUM_V

    def describe(self) -> str:
        label = LABELS.get(self.name, self.name)
        if self.ref_mean is None or self.cur_mean is None:
            return f"{label} (V {self.cramers_v:.2f})"
        return (f"{label} mean {self.cur_mean:.3g} vs {self.ref_mean:.3g} in the reference (d {self.d:+.1f}, "
                f"Cramér's V {self.cramers_v:.2f}, p {self.p_holm:.1g})")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.name, "group": self.group, "drifted": self.drifted, "p_holm": _r(self.p_holm),
                "cramers_v": _r(self.cramers_v), "d": _r(self.d), "reference_mean": _r(self.ref_mean),
                "mean": _r(self.cur_mean), "n_reference": self.n_ref, "n": self.n_cur}  # fmt: skip


def _r(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def _table_test(ref: Sequence[float], cur: Sequence[float]) -> tuple[float, float]:
    """Chi-square p-value and Cramér's V of a 2×k table of counts (columns empty on both sides dropped)."""
    table = np.asarray([ref, cur], dtype=np.float64)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or table.sum(1).min() == 0:
        return 1.0, 0.0
    stats = require("scipy.stats", "doctor's drift statistics")
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(p), float(math.sqrt(chi2 / table.sum()))


def _cohen_d(ref_mean: float, ref_std: float, cur: np.ndarray) -> float:
    cur_mean, cur_std = float(cur.mean()), float(cur.std())
    pooled = math.sqrt((ref_std**2 + cur_std**2) / 2)
    if pooled == 0:
        return 0.0 if abs(cur_mean - ref_mean) < 1e-9 else math.copysign(10.0, cur_mean - ref_mean)
    return max(-10.0, min(10.0, (cur_mean - ref_mean) / pooled))


def _histogram_drift(
    name: str, group: str, ref: dict[str, Any], values: Sequence[float]
) -> FeatureDrift | None:
    edges = ref.get("edges")
    if not edges or not values:
        return None
    lo, hi = float(edges[0]), float(edges[-1])
    v = np.asarray(values, np.float64)
    cur_counts, _ = np.histogram(np.clip(v, lo, hi), bins=np.asarray(edges, np.float64))
    ref_counts = [int(c) for c in ref.get("counts", [])]
    if len(ref_counts) != len(cur_counts):
        return None
    p, cv = _table_test(ref_counts, cur_counts.tolist())
    ref_mean = ref.get("mean")
    d = _cohen_d(float(ref_mean), float(ref.get("std", 0.0)), v) if ref_mean is not None else 0.0
    return FeatureDrift(name, group, p, cv, d, ref_mean, float(v.mean()), int(sum(ref_counts)), int(v.size),
                        [float(e) for e in edges], ref_counts, cur_counts.tolist())  # fmt: skip


def _class_drift(ref: dict[str, int], cur: dict[str, int]) -> FeatureDrift | None:
    names = sorted(set(ref) | set(cur))
    if not names or not sum(cur.values()) or not sum(ref.values()):
        return None
    r = [ref.get(n, 0) for n in names]
    c = [cur.get(n, 0) for n in names]
    p, cv = _table_test(r, c)
    return FeatureDrift("class_frequency", "output", p, cv, 0.0, None, None, sum(r), sum(c),
                        list(range(len(names) + 1)), r, c)  # fmt: skip


def _holm(rows: list[FeatureDrift]) -> None:
    order = sorted(range(len(rows)), key=lambda i: rows[i].p_value)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, rows[i].p_value * (len(rows) - rank)))
        rows[i].p_holm = running


def same_model(profile: dict[str, Any], ctx: Context) -> bool:
    """Whether the deployed model is the one the profile's outputs came from (else they cannot be compared:
    a different model's outputs differ for reasons that are not the data's — see the conversion review)."""
    dep = ctx.deployment
    made_with = profile.get("artifact")
    return not dep.from_file and (made_with is None or made_with == dep.artifact.name)


def compare(profile: dict[str, Any], ctx: Context) -> list[FeatureDrift]:
    """Every feature the profile and these images both have, tested (see the module docstring)."""
    records = list(ctx.passed.records.values())
    ref_in = profile.get("input") or {}
    rows: list[FeatureDrift] = []
    for name in (*APPEARANCE, *GEOMETRY):
        values = [r.features[name] for r in records if name in r.features]
        ref = ref_in.get(name)
        if isinstance(ref, dict) and (row := _histogram_drift(name, "geometry" if name in GEOMETRY else "appearance", ref, values)):  # fmt: skip
            rows.append(row)
    ref_out = profile.get("output") or {}
    if not same_model(profile, ctx):
        _holm(rows)
        return rows
    conf = float(ref_out.get("conf_threshold", ctx.deployment.pipeline.contract.output.conf))
    outs = []
    for r in records:
        res = r.result
        if isinstance(res, Detections) and conf > ctx.deployment.pipeline.contract.output.conf:
            res = res.filter(res.confidence >= conf)
        outs.append(output_values(res, *r.size))
    series = {
        "detections_per_image": [o["count"] for o in outs if o["count"] is not None],
        "confidence": [c for o in outs for c in o["confidences"]],
        "box_area_fraction": [a for o in outs for a in o["areas"]],
    }
    for name, values in series.items():
        ref = ref_out.get(name)
        if isinstance(ref, dict) and (row := _histogram_drift(name, "output", ref, values)):
            rows.append(row)
    ref_classes = ref_out.get("class_frequency")
    if isinstance(ref_classes, dict):
        cur: dict[str, int] = {}
        for o in outs:
            for n in o["classes"]:
                cur[n] = cur.get(n, 0) + 1
        if row := _class_drift({str(k): int(v) for k, v in ref_classes.items()}, cur):
            rows.append(row)
    _holm(rows)
    return rows


def run(ctx: Context) -> list[CheckResult]:
    t0 = time.perf_counter()
    if ctx.profile is None:
        return [
            skipped(CHECK, TITLE, ctx.profile_note or "the bundle has no reference profile to compare with")
        ]
    rows = compare(ctx.profile, ctx)
    result = judge(rows, ctx)
    result.seconds = time.perf_counter() - t0
    return [result]


def judge(rows: list[FeatureDrift], ctx: Context) -> CheckResult:
    details: dict[str, Any] = {"features": [r.to_dict() for r in rows], "reference_images": ctx.profile.get("images") if ctx.profile else None}  # fmt: skip
    if ctx.profile is not None and not same_model(ctx.profile, ctx):
        details["outputs_compared"] = (f"no: {ctx.deployment.label} is not {ctx.profile.get('artifact')}, whose outputs "
                                       "the profile holds")  # fmt: skip
    figs: list[FigureFn] = [lambda: _figure(rows)]
    app = sorted((r for r in rows if r.drifted and r.group == "appearance"), key=lambda r: -r.cramers_v)
    out = sorted((r for r in rows if r.drifted and r.group == "output"), key=lambda r: -r.cramers_v)
    geo = [r for r in rows if r.drifted and r.group == "geometry"]
    n = len(ctx.images)
    if not (app or out or geo):
        return CheckResult(CHECK, TITLE, "ok", f"{n} images and the model's outputs on them match the reference "
                           f"profile ({len(rows)} features tested)", details, figures=figs)  # fmt: skip
    moved = "; ".join(r.describe() for r in app + out)
    geo_text = "; ".join(r.describe() for r in geo)
    severity: Severity
    if app and out:
        v = max(r.cramers_v for r in app)
        severity = "critical" if v >= LARGE_V else "warning"
        score = 0.5 + 0.45 * min(1.0, v / 0.9)
        evidence = f"these {n} images differ from the reference data and the model's outputs moved with them: {moved}."
    elif app:
        severity, score = "warning", 0.3 + 0.15 * min(1.0, max(r.cramers_v for r in app) / 0.9)
        evidence = f"these {n} images differ from the reference data ({moved}), but the model's outputs did not move."
    elif out:
        severity, score = "warning", 0.25 + 0.15 * min(1.0, max(r.cramers_v for r in out) / 0.9)
        evidence = (f"the model's outputs on these {n} images differ from the reference ({moved}) while the images "
                    "look alike: the content (objects, classes) differs, or see the other findings.")  # fmt: skip
    else:
        severity, score = "info", 0.1
        evidence = (
            f"image size/shape differs from the reference ({geo_text}); the contract's resize absorbs it."
        )
    if geo and (app or out):
        evidence += f" Image size/shape also differs: {geo_text}."
    fix = "fine-tune on labelled images like these (or fix the capture: exposure, focus, compression)"
    finding = Finding("data.drift", severity, evidence, score, fix=fix if (app or out) else
                      "nothing to do unless accuracy dropped; letterbox handles other sizes")  # fmt: skip
    return CheckResult(CHECK, TITLE, "finding", f"{len(app) + len(out) + len(geo)} of {len(rows)} features drifted",
                       details, [finding], figs)  # fmt: skip


def _figure(rows: list[FeatureDrift]) -> list[Figure]:
    shown = sorted(rows, key=lambda r: (not r.drifted, -r.cramers_v))[:9]
    png = figures.drift_histograms(
        [
            (
                LABELS.get(r.name, r.name),
                r.edges,
                r.ref_counts,
                r.cur_counts,
                "drifted" if r.drifted else "same",
            )
            for r in shown
        ]
    )
    if not png:
        return []
    return [Figure("Drift: these images vs the reference profile", png,
                   "bars: the reference profile's histogram; line: these images (and the model's outputs on them), "
                   "both as shares; drifted features first")]  # fmt: skip
