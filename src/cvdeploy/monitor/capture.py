"""What one request leaves behind: cheap statistics for every request, the stage I/O for a sample.

The server's hook (:meth:`cvdeploy.monitor.monitor.Monitor.image`) only queues an
:class:`Observation` — references to arrays the request no longer uses, no copy and no arithmetic —
and the background writer turns it into rows here, off the request path:

    every request    image features (the same :func:`cvdeploy.profile.image_features` the reference
                     profile was built with), detections per image, confidences, classes, box sizes,
                     stage latencies
    sampled          + a downscaled JPEG of the input (never with ``redact``), a summary of the input
                     tensor (shape, dtype, range, mean/std per channel, NaN/Inf count), a summary of
                     each raw output, and the decoded result
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cvdeploy.monitor.store import RequestRow, SampleRow
from cvdeploy.profile import image_features, is_grayscale
from cvdeploy.results import Classification, Detections, RawOutput, Result

MAX_LIST = 300  # detections kept per request in the statistics (max_det is 300 by default)
CORE = ("width", "height", "aspect", "brightness", "contrast", "saturation", "sharpness", "grayscale")
MAX_RESULT = 100  # detections kept in a sample's decoded result


@dataclass(eq=False)
class Observation:
    """A finished request as the service saw it (arrays are referenced, not copied).

    image: ``(h, w, 3)`` BGR uint8 as decoded (None for tensor requests); tensor: the model input
    ``(1, ...)``; outputs: the raw outputs ``(1, ...)`` each; timings: stage → seconds.
    """

    time: float
    model: str
    version: int | None
    kind: str  # image | tensor | error
    status: int = 200
    request_id: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None
    tensor: np.ndarray | None = None
    outputs: Sequence[np.ndarray] | None = None
    output_names: Sequence[str] = ()
    result: Result | None = None
    outputs_comparable: bool = True  # False when the request overrode thresholds (conf, iou, max_det)
    sampled: bool = False
    channel_axis: int | None = 1  # of ``tensor`` (1 for NCHW, 3 for NHWC)

    @property
    def nbytes(self) -> int:
        """Memory the queued observation holds on to."""
        n = 0
        for a in (self.image, self.tensor, *(self.outputs or ())):
            if isinstance(a, np.ndarray):
                n += a.nbytes
        return n


def fast_features(img: np.ndarray) -> dict[str, float]:
    """:func:`cvdeploy.profile.image_features`'s core features, the same numbers (a test pins them to
    1e-12) at about a third of the cost: OpenCV's double-precision ``meanStdDev`` instead of numpy's
    ``mean``/``std`` on copies, and the Laplacian into exact int16 instead of float64."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = img.shape[:2]
    mean, std = cv2.meanStdDev(gray)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    sat = cv2.mean(cv2.extractChannel(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), 1))[0]
    return {"width": float(w), "height": float(h), "aspect": w / h, "brightness": float(mean[0, 0]),
            "contrast": float(std[0, 0]), "saturation": float(sat),
            "sharpness": float(np.log1p(float(lap_std[0, 0]) ** 2)),
            "grayscale": float(is_grayscale(img))}  # fmt: skip


_EXTRA: frozenset[str] | None = None


def features(img: np.ndarray) -> dict[str, float]:
    """Every feature the profile computes: the core ones fast, any further ones the profile's own way."""
    global _EXTRA
    if _EXTRA is None:
        _EXTRA = frozenset(image_features(np.zeros((8, 8, 3), np.uint8))) - frozenset(CORE)
    out = fast_features(img)
    if _EXTRA:
        out.update({k: v for k, v in image_features(img).items() if k in _EXTRA})
    return out


def output_stats(result: Result | None, width: int, height: int) -> dict[str, Any] | None:
    """``{"count", "confidences", "areas", "classes"}`` of a decoded result (areas: share of the image)."""
    if isinstance(result, Detections):
        k = min(len(result), MAX_LIST)
        wh = (result.xyxy[:k, 2:] - result.xyxy[:k, :2]).clip(0)
        area = float(max(1, width * height))
        return {
            "count": len(result),
            "confidences": [round(float(c), 4) for c in result.confidence[:k]],
            "areas": [round(float(a), 5) for a in (wh[:, 0] * wh[:, 1] / area)],
            "classes": [result.name(i) for i in range(k)],
        }
    if isinstance(result, Classification):
        return {"count": None, "confidences": [round(float(result.probs.max()), 4)], "areas": [],
                "classes": [result.name(result.class_id)]}  # fmt: skip
    return None


def _moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row of a 2-D float array, from its sum (float64) and sum of
    squares (BLAS dot products): no temporary the size of the array, a few ms less per sampled request
    than ``np.std``."""
    n = rows.shape[1]
    mean = rows.sum(axis=1, dtype=np.float64) / n
    sq = np.array([float(np.dot(r, r)) for r in rows]) / n
    return mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))


def array_summary(a: np.ndarray, channel_axis: int | None = None) -> dict[str, Any]:
    """Shape, dtype, range, mean, std and NaN/Inf count of an array; per channel when ``channel_axis``."""
    doc: dict[str, Any] = {"shape": list(a.shape), "dtype": str(a.dtype)}
    if a.size == 0 or a.dtype.kind not in "fiub":
        return doc
    x = np.ascontiguousarray(a if a.dtype.kind == "f" else a.astype(np.float32))
    finite = np.isfinite(float(x.sum(dtype=np.float64)))
    bad = 0 if finite else int(x.size - np.count_nonzero(np.isfinite(x)))
    doc["non_finite"] = bad
    v = x.reshape(1, -1) if bad == 0 else x[np.isfinite(x)].reshape(1, -1)
    if v.size:
        mean, std = _moments(v)
        doc.update({"min": _r(v.min()), "max": _r(v.max()), "mean": _r(mean[0]), "std": _r(std[0])})
    if (
        channel_axis is not None
        and -x.ndim <= channel_axis < x.ndim
        and bad == 0
        and 0 < x.shape[channel_axis] <= 8
    ):
        mean, std = _moments(np.moveaxis(x, channel_axis, 0).reshape(x.shape[channel_axis], -1))
        doc["channel_mean"] = [_r(m) for m in mean]
        doc["channel_std"] = [_r(sd) for sd in std]
    return doc


def _r(v: Any) -> float:
    return float(f"{float(v):.6g}")


def result_document(result: Result | None) -> dict[str, Any] | None:
    """The decoded result as stored with a sample (detections clipped to :data:`MAX_RESULT`)."""
    if isinstance(result, Detections):
        return {"type": "detections", "count": len(result),
                "detections": result.filter(np.arange(len(result)) < MAX_RESULT).to_list()}  # fmt: skip
    if isinstance(result, Classification):
        return {"type": "classification", "top": result.to_list()}
    if isinstance(result, RawOutput):
        return {"type": "raw", "outputs": [array_summary(t) for t in result.tensors]}
    return None


def thumbnail(image: np.ndarray, max_side: int) -> str:
    """The image downscaled so its longest side is at most ``max_side``, as base64 JPEG."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = image if scale >= 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )  # fmt: skip
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
        raise ValueError("could not encode a thumbnail")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def to_rows(obs: Observation, redact: bool, thumbnail_px: int) -> tuple[RequestRow, SampleRow | None]:
    """The request row (and, when sampled, the sample row) of one observation."""
    rid = uuid.uuid4().hex
    lat = {k: v * 1000.0 for k, v in obs.timings.items()}
    if lat:
        lat["total"] = sum(lat.values())
    feats = outputs = None
    width = height = None
    if obs.image is not None:
        height, width = (int(v) for v in obs.image.shape[:2])
        feats = {k: _r(v) for k, v in features(obs.image).items()}
        if obs.outputs_comparable:
            outputs = output_stats(obs.result, width, height)
    row = RequestRow(rid, obs.time, obs.model, obs.version, obs.kind, obs.status, obs.request_id, lat, feats,
                     outputs, obs.sampled)  # fmt: skip
    if not obs.sampled:
        return row, None
    names = list(obs.output_names) or [f"output{i}" for i in range(len(obs.outputs or ()))]
    sample = SampleRow(
        rid, obs.time, obs.model, obs.version, obs.request_id, width, height, redact,
        tensor=array_summary(obs.tensor, obs.channel_axis) if obs.tensor is not None else None,
        raw_output=[{"name": n, **array_summary(o)} for n, o in zip(names, obs.outputs or (), strict=False)],
        result=result_document(obs.result),
        thumbnail=None if redact or obs.image is None else thumbnail(obs.image, thumbnail_px),
    )  # fmt: skip
    return row, sample
