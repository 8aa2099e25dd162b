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
from cvdeploy.results import Classification, Detections, Result

SCHEMA = "cvdeploy-profile/1"


def _hist(values: Sequence[float], lo: float, hi: float, bins: int = 20) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    summary = (
        {
            "mean": float(v.mean()),
            "std": float(v.std()),
            "min": float(v.min()),
            "max": float(v.max()),
            "p5": float(np.percentile(v, 5)),
            "p95": float(np.percentile(v, 95)),
        }
        if v.size
        else {}
    )
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(), **summary}


#: The IJG standard luminance quantisation table at quality 50 (JPEG Annex K), to estimate a file's quality.
_IJG_LUMA_SUM = 3688  # sum of the 64 entries; the estimate compares sums, so the scan order does not matter


def jpeg_quality(path: str | Path) -> float | None:
    """The IJG quality (1-100) a JPEG file was most likely saved at, from its luminance table; None if not a JPEG.

    Estimated by scaling the standard table as libjpeg does and taking the quality whose table sum is
    closest to the file's (order-free, so it does not depend on how a reader returns the table).
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            tables = getattr(im, "quantization", None)
            if im.format != "JPEG" or not tables:
                return None
            luma = sum(int(v) for v in tables[min(tables)])
    except Exception:  # a file Pillow cannot open is reported by the reader that decodes it
        return None
    best, best_err = 50, float("inf")
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        # libjpeg: each entry (t * scale + 50) // 100 clipped to 1-255; applied to the sum it is close enough
        est = min(255 * 64, max(64, (_IJG_LUMA_SUM * scale + 50 * 64) // 100))
        if abs(est - luma) < best_err:
            best, best_err = q, abs(est - luma)
    return float(best)


def is_grayscale(img: np.ndarray, tolerance: float = 2.0) -> bool:
    """Whether a BGR image carries no colour (its channels differ by under ``tolerance`` levels on average)."""
    small = img[:: max(1, img.shape[0] // 128), :: max(1, img.shape[1] // 128)].astype(np.int16)
    spread = np.abs(small[..., 0] - small[..., 1]).mean() + np.abs(small[..., 1] - small[..., 2]).mean()
    return bool(spread < tolerance)


def image_features(img: np.ndarray) -> dict[str, float]:
    """Per-image statistics of a BGR uint8 image: size, brightness, contrast, saturation, sharpness, gray."""
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
        "grayscale": float(is_grayscale(img)),
    }


def image_stats(img: np.ndarray, path: str | Path | None = None) -> dict[str, float]:
    """:func:`image_features` plus the mean of each channel (RGB) and, for a JPEG file, its quality."""
    feats = image_features(img)
    r, g, b = (float(v) for v in img.reshape(-1, 3).mean(0)[::-1])
    feats.update({"mean_r": r, "mean_g": g, "mean_b": b})
    q = jpeg_quality(path) if path is not None else None
    if q is not None:
        feats["jpeg_quality"] = q
    return feats


def output_values(res: Result, width: int, height: int) -> dict[str, Any]:
    """What the profile keeps of one image's result: detection count, confidences, box areas, classes."""
    if isinstance(res, Detections):
        wh = (res.xyxy[:, 2:] - res.xyxy[:, :2]).clip(0)
        return {"count": len(res), "confidences": res.confidence.tolist(),
                "areas": (wh[:, 0] * wh[:, 1] / (width * height)).tolist(),
                "classes": [res.name(i) for i in range(len(res))]}  # fmt: skip
    if isinstance(res, Classification):
        return {"count": None, "confidences": [float(res.probs.max())], "areas": [],
                "classes": [res.name(res.class_id)]}  # fmt: skip
    return {"count": None, "confidences": [], "areas": [], "classes": []}


def build_profile(pipeline: Pipeline, images: Sequence[str | Path | np.ndarray]) -> dict[str, Any]:
    """Run ``images`` through ``pipeline`` and summarise inputs and outputs as histograms."""
    feats: list[dict[str, float]] = []
    outputs: list[dict[str, Any]] = []
    for item in images:
        img = read_image(item) if isinstance(item, str | Path) else item
        feats.append(image_stats(img, item if isinstance(item, str | Path) else None))
        (res,) = pipeline.predict([img])
        outputs.append(output_values(res, img.shape[1], img.shape[0]))
    return summarize(feats, outputs, pipeline.artifact.name if pipeline.artifact else None,
                     pipeline.contract.output.conf)  # fmt: skip


def summarize(
    feats: Sequence[dict[str, float]], outputs: Sequence[dict[str, Any]], artifact: str | None, conf: float
) -> dict[str, Any]:
    """The profile document of per-image :func:`image_stats` and :func:`output_values`."""
    if not feats:
        return {"schema": SCHEMA, "images": 0}
    col = {k: [f[k] for f in feats] for k in feats[0]}
    qualities = [f["jpeg_quality"] for f in feats if "jpeg_quality" in f]
    means = np.asarray([[f["mean_r"], f["mean_g"], f["mean_b"]] for f in feats])
    per_image = [o["count"] for o in outputs if o["count"] is not None]
    confidences = [c for o in outputs for c in o["confidences"]]
    areas = [a for o in outputs for a in o["areas"]]
    classes: dict[str, int] = {}
    for o in outputs:
        for name in o["classes"]:
            classes[name] = classes.get(name, 0) + 1
    return {
        "schema": SCHEMA,
        "images": len(feats),
        "artifact": artifact,
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
            "grayscale": _hist(col["grayscale"], 0, 1, 2),
            **({"jpeg_quality": _hist(qualities, 0, 100)} if qualities else {}),
        },
        "output": {
            "detections_per_image": _hist(per_image, 0, 50, 25) if per_image else None,
            "confidence": _hist(confidences, 0, 1) if confidences else None,
            "box_area_fraction": _hist(areas, 0, 1) if areas else None,
            "class_frequency": dict(sorted(classes.items())),
            "conf_threshold": conf,
        },
    }


def load_profile(bundle_path: Path, rel: str | None) -> dict[str, Any] | None:
    """A bundle's reference profile (``reference_profile`` in its manifest), or None when it has no readable one."""
    import json

    if not rel:
        return None
    try:
        doc = json.loads((bundle_path / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None
