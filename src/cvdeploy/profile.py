"""Reference profile: statistics of known-good input images and the model's outputs on them.

Stored with a bundle (``profile.json``) so that ``doctor`` and ``monitor`` can later tell whether
production images or outputs have drifted from what the model was validated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cvdeploy.images import read_image
from cvdeploy.pipeline import Pipeline
from cvdeploy.results import Classification, Detections

SCHEMA = "cvdeploy-profile/1"


def _hist(values: Sequence[float], lo: float, hi: float, bins: int = 20) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    summary = (
        {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}
        if v.size
        else {}
    )
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(), **summary}


def image_features(img: np.ndarray) -> dict[str, float]:
    """Per-image statistics of a BGR uint8 image: size, brightness, contrast, saturation, sharpness."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    h, w = img.shape[:2]
    return {
        "width": float(w),
        "height": float(h),
        "aspect": w / h,
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
        "saturation": float(hsv[..., 1].mean()),
        "sharpness": float(np.log1p(cv2.Laplacian(gray, cv2.CV_64F).var())),
    }


def build_profile(pipeline: Pipeline, images: Sequence[str | Path | np.ndarray]) -> dict[str, Any]:
    """Run ``images`` through ``pipeline`` and summarise inputs and outputs as histograms."""
    feats: list[dict[str, float]] = []
    channel_means: list[np.ndarray] = []
    per_image: list[int] = []
    confidences: list[float] = []
    areas: list[float] = []
    classes: dict[str, int] = {}
    for item in images:
        img = read_image(item) if isinstance(item, str | Path) else item
        feats.append(image_features(img))
        channel_means.append(img.reshape(-1, 3).mean(0)[::-1])  # RGB order
        (res,) = pipeline.predict([img])
        if isinstance(res, Detections):
            per_image.append(len(res))
            confidences.extend(res.confidence.tolist())
            wh = (res.xyxy[:, 2:] - res.xyxy[:, :2]).clip(0)
            areas.extend((wh[:, 0] * wh[:, 1] / (img.shape[0] * img.shape[1])).tolist())
            for i in range(len(res)):
                classes[res.name(i)] = classes.get(res.name(i), 0) + 1
        elif isinstance(res, Classification):
            confidences.append(float(res.probs.max()))
            classes[res.name(res.class_id)] = classes.get(res.name(res.class_id), 0) + 1
    if not feats:
        return {"schema": SCHEMA, "images": 0}
    col = {k: [f[k] for f in feats] for k in feats[0]}
    means = np.asarray(channel_means)
    return {
        "schema": SCHEMA,
        "images": len(feats),
        "artifact": pipeline.artifact.name if pipeline.artifact else None,
        "input": {
            "channel_mean_rgb": means.mean(0).round(3).tolist(),
            "channel_std_rgb": means.std(0).round(3).tolist(),
            "width": _hist(col["width"], 0, 4096),
            "height": _hist(col["height"], 0, 4096),
            "aspect": _hist(col["aspect"], 0.25, 4.0),
            "brightness": _hist(col["brightness"], 0, 255),
            "contrast": _hist(col["contrast"], 0, 128),
            "saturation": _hist(col["saturation"], 0, 255),
            "sharpness": _hist(col["sharpness"], 0, 12),
        },
        "output": {
            "detections_per_image": _hist(per_image, 0, 50, 25) if per_image else None,
            "confidence": _hist(confidences, 0, 1) if confidences else None,
            "box_area_fraction": _hist(areas, 0, 1) if areas else None,
            "class_frequency": dict(sorted(classes.items())),
            "conf_threshold": pipeline.contract.output.conf,
        },
    }
