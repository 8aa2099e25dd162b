"""A bundle's reference profile (``profile.json``, schema ``cvdeploy-profile/1``) as monitoring reads it.

The profile keeps, for known-good images, a histogram (``edges``, ``counts``, ``mean``, ``std``) of
each input feature and of the model's outputs on them. Monitoring bins live traffic on the same
edges, so any bundle with a profile — the shipped zoo bundles, every export — can be compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "cvdeploy-profile/1"
OUTPUT_FEATURES = ("detections_per_image", "confidence", "box_area_fraction")


@dataclass(frozen=True)
class Histogram:
    """Counts ``(k,)`` on ``edges`` ``(k+1,)``; ``mean``/``std`` of the values binned (None if unknown)."""

    edges: np.ndarray
    counts: np.ndarray
    mean: float | None = None
    std: float | None = None

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def bin(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` on these edges (values outside are clipped into the end bins, as the profile)."""
        if values.size == 0:
            return np.zeros(len(self.counts), np.int64)
        counts, _ = np.histogram(np.clip(values, self.edges[0], self.edges[-1]), bins=self.edges)
        return counts.astype(np.int64)


@dataclass
class Reference:
    """What the monitor compares with: input and output histograms and class counts of the profile."""

    images: int
    inputs: dict[str, Histogram] = field(default_factory=dict)
    outputs: dict[str, Histogram] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    artifact: str | None = None
    conf_threshold: float | None = None


def _histogram(doc: Any) -> Histogram | None:
    if not isinstance(doc, dict) or "edges" not in doc or "counts" not in doc:
        return None
    try:
        edges = np.asarray(doc["edges"], np.float64)
        counts = np.asarray(doc["counts"], np.int64)
    except (TypeError, ValueError):
        return None
    if edges.ndim != 1 or counts.ndim != 1 or len(edges) != len(counts) + 1 or len(counts) < 1:
        return None
    if not np.all(np.diff(edges) > 0) or counts.min() < 0:
        return None
    mean, std = doc.get("mean"), doc.get("std")
    return Histogram(edges, counts, float(mean) if mean is not None else None,
                     float(std) if std is not None else None)  # fmt: skip


def reference_from_profile(doc: Any) -> Reference | None:
    """The :class:`Reference` of a profile document, or None when it is not a usable profile."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not doc.get("images"):
        return None
    ref = Reference(int(doc["images"]), artifact=doc.get("artifact"))
    for name, value in (doc.get("input") or {}).items():
        h = _histogram(value)
        if h is not None and h.n > 0:
            ref.inputs[name] = h
    out = doc.get("output") or {}
    for name in OUTPUT_FEATURES:
        h = _histogram(out.get(name))
        if h is not None and h.n > 0:
            ref.outputs[name] = h
    classes = out.get("class_frequency")
    if isinstance(classes, dict):
        ref.classes = {str(k): int(v) for k, v in classes.items() if isinstance(v, int | float) and v >= 0}
    conf = out.get("conf_threshold")
    ref.conf_threshold = float(conf) if isinstance(conf, int | float) else None
    return ref


def read_profile(bundle_path: str | Path, rel: str | None) -> dict[str, Any] | None:
    """The profile document a bundle's manifest names, or None when it has no readable one."""
    if not rel:
        return None
    try:
        doc = json.loads((Path(bundle_path) / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None
