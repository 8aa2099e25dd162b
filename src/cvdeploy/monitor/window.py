"""One window of monitored requests, summarised: traffic, errors, latency by stage, input and output
statistics, and drift against the reference profile. The JSON of ``GET /v1/models/{name}/monitor``,
the console, the gauges and the report are all made from :func:`summarize`.
"""

from __future__ import annotations

import collections
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvdeploy.monitor.drift import Drift, compare
from cvdeploy.monitor.reference import Reference
from cvdeploy.monitor.settings import MonitorConfig, format_duration
from cvdeploy.monitor.store import STAGES, RequestRow

PERCENTILES = (50, 95, 99)
OUTPUT_LISTS = {"confidence": "confidences", "box_area_fraction": "areas"}


def iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def _r(v: float) -> float:
    return float(f"{v:.4g}")


@dataclass
class WindowSummary:
    """Everything known of one model in one window; :meth:`to_dict` is the JSON document."""

    model: str
    version: int | None
    start: float
    end: float
    requests: int
    images: int
    errors: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, Any]
    drift: list[Drift]
    has_reference: bool
    sampled: int = 0
    span_s: float = 0.0
    class_share: dict[str, float] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return [d.feature for d in self.drift if d.flagged]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.span_s if self.span_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        total = self.requests
        return {
            "model": self.model,
            "version": None if self.version is None else str(self.version),
            "window": format_duration(self.end - self.start),
            "from": iso(self.start),
            "to": iso(self.end),
            "requests": total,
            "images": self.images,
            "sampled": self.sampled,
            "throughput_rps": _r(self.throughput_rps),
            "errors": {
                "total": self.error_count,
                "rate": _r(self.error_count / total) if total else 0.0,
                "by_status": dict(sorted(self.errors.items())),
            },
            "latency_ms": self.latency_ms,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "reference": self.has_reference,
            "drift": [d.to_dict() for d in self.drift],
            "flagged": self.flagged,
            "timeline": self.timeline,
        }


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    out = {f"p{p}": _r(float(v)) for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True)}
    out["mean"] = _r(float(a.mean()))
    return out


def _describe(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(a, (5, 50, 95))
    return {"n": int(a.size), "mean": _r(a.mean()), "std": _r(a.std()), "p5": _r(p5), "p50": _r(p50),
            "p95": _r(p95)}  # fmt: skip


def summarize(
    model: str, version: int | None, rows: Sequence[RequestRow], reference: Reference | None,
    config: MonitorConfig, start: float, end: float, span_s: float | None = None,
) -> WindowSummary:  # fmt: skip
    """Summarise ``rows`` (one model, ``start <= time < end``) against ``reference`` (None: no drift)."""
    errors: collections.Counter[str] = collections.Counter()
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    feats: dict[str, list[float]] = collections.defaultdict(list)
    outs: dict[str, list[float]] = collections.defaultdict(list)
    classes: collections.Counter[str] = collections.Counter()
    images = with_outputs = sampled = 0
    for r in rows:
        sampled += r.sampled
        if r.status >= 400:
            errors[str(r.status)] += 1
            continue
        for s, v in r.latency_ms.items():
            if s in stages:
                stages[s].append(v)
        if r.features:
            images += 1
            for k, v in r.features.items():
                feats[k].append(v)
        if r.outputs:
            with_outputs += 1
            if r.outputs.get("count") is not None:
                outs["detections_per_image"].append(float(r.outputs["count"]))
            for feature, key in OUTPUT_LISTS.items():
                outs[feature].extend(r.outputs.get(key) or ())
            classes.update(r.outputs.get("classes") or ())
    latency = {s: _percentiles(v) for s, v in stages.items() if v}
    inputs: dict[str, dict[str, Any]] = {}
    for k, values in feats.items():
        inputs[k] = _describe(values)
        h = reference.inputs.get(k) if reference else None
        if h is not None:
            inputs[k]["histogram"] = {"edges": [float(e) for e in h.edges], "counts": h.bin(np.asarray(values)).tolist(),
                                      "reference": h.counts.tolist()}  # fmt: skip
            inputs[k]["reference_mean"] = None if h.mean is None else _r(h.mean)
    n_cls = sum(classes.values())
    share = {c: _r(n / n_cls) for c, n in classes.most_common()} if n_cls else {}
    outputs: dict[str, Any] = {}
    for k, values in outs.items():
        outputs[k] = _describe(values)
        h = reference.outputs.get(k) if reference else None
        if h is not None:
            outputs[k]["histogram"] = {"edges": [float(e) for e in h.edges], "counts": h.bin(np.asarray(values)).tolist(),
                                       "reference": h.counts.tolist()}  # fmt: skip
            outputs[k]["reference_mean"] = None if h.mean is None else _r(h.mean)
    ref_total = sum(reference.classes.values()) if reference else 0
    outputs["class_share"] = share
    if reference and ref_total:
        outputs["reference_class_share"] = {
            c: _r(n / ref_total) for c, n in sorted(reference.classes.items())
        }
    drift = (
        compare(
            reference,
            feats,
            outs,
            classes,
            with_outputs,
            config.alpha,
            config.min_effect,
            config.min_requests,
        )
        if reference is not None
        else []
    )
    return WindowSummary(model, version, start, end, len(rows), images, dict(errors), latency, inputs, outputs,
                         drift, reference is not None, sampled, end - start if span_s is None else span_s,
                         share, timeline(rows, start, end))  # fmt: skip


def timeline(rows: Sequence[RequestRow], start: float, end: float, buckets: int = 30) -> list[dict[str, Any]]:
    """Requests, errors and p95 of the total latency (ms) in ``buckets`` equal slices of the window."""
    width = (end - start) / buckets
    counts = [0] * buckets
    errs = [0] * buckets
    lat: list[list[float]] = [[] for _ in range(buckets)]
    for r in rows:
        i = min(buckets - 1, max(0, int((r.time - start) / width)))
        counts[i] += 1
        if r.status >= 400:
            errs[i] += 1
        elif "total" in r.latency_ms:
            lat[i].append(r.latency_ms["total"])
    return [{"start": iso(start + i * width), "requests": counts[i], "errors": errs[i],
             "p95_ms": _r(float(np.percentile(lat[i], 95))) if lat[i] else None} for i in range(buckets)]  # fmt: skip
