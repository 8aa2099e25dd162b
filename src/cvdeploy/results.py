"""The result types every decoder produces and every consumer takes.

One interchange type for everything with boxes (the shape of supervision's ``Detections``):
detection, instance segmentation (``masks``), pose (``keypoints``) and oriented boxes (``rboxes``)
are all :class:`Detections` whose optional fields are set. Classifiers give a :class:`Classification`,
undecoded models a :class:`RawOutput`. Adapters from other libraries are small ``from_*`` constructors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvdeploy.ops.letterbox import Geometry


@dataclass
class Detections:
    """Detections for one image, in original-image pixels.

    xyxy: ``(n, 4)`` float32 x1, y1, x2, y2 (for oriented boxes: the axis-aligned box around them);
    confidence: ``(n,)`` float32; class_id: ``(n,)`` int64; class_names: the bundle's class list.
    Optional, set by the task's decoder:

    - masks: ``(n, H, W)`` bool, one full-image mask per detection (segment);
    - keypoints: ``(n, K, D)`` float32, x, y in pixels (and visibility 0–1 when ``D == 3``) (pose);
    - rboxes: ``(n, 5)`` float32 centre x, centre y, width, height, angle in radians (obb).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_names: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    rboxes: np.ndarray | None = None

    @classmethod
    def empty(cls, class_names: list[str] | None = None) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0,), np.int64),
            class_names or [],
        )

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """Adapter for one ``ultralytics.engine.results.Results`` (boxes, masks, keypoints or obb)."""

        def arr(t: Any) -> np.ndarray:
            return np.asarray(t.cpu().numpy() if hasattr(t, "cpu") else t)

        names_raw = getattr(result, "names", None) or {}
        names = (
            [str(names_raw[k]) for k in sorted(names_raw)] if isinstance(names_raw, dict) else list(names_raw)
        )
        if getattr(result, "obb", None) is not None:
            obb = result.obb
            rboxes = arr(obb.xywhr).astype(np.float32).reshape(-1, 5)
            corners = rbox_corners(rboxes)
            xyxy = np.concatenate([corners.min(1), corners.max(1)], 1) if len(rboxes) else np.zeros((0, 4))
            return cls(xyxy.astype(np.float32), arr(obb.conf).astype(np.float32), arr(obb.cls).astype(np.int64),
                       names, rboxes=rboxes)  # fmt: skip
        boxes = result.boxes
        det = cls(arr(boxes.xyxy).astype(np.float32).reshape(-1, 4), arr(boxes.conf).astype(np.float32),
                  arr(boxes.cls).astype(np.int64), names)  # fmt: skip
        if getattr(result, "masks", None) is not None:
            det.masks = arr(result.masks.data) > 0.5
        if getattr(result, "keypoints", None) is not None:
            det.keypoints = arr(result.keypoints.data).astype(np.float32)
        return det

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @property
    def task(self) -> str:
        """``detect``, ``segment``, ``pose`` or ``obb``: what the detections carry."""
        if self.masks is not None:
            return "segment"
        if self.keypoints is not None:
            return "pose"
        if self.rboxes is not None:
            return "obb"
        return "detect"

    def name(self, i: int) -> str:
        k = int(self.class_id[i])
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    def polygon(self, i: int) -> np.ndarray:
        """``(p, 2)`` float32 outline of detection ``i``: its mask's largest contour, or its rotated box."""
        if self.rboxes is not None:
            return rbox_corners(self.rboxes[i : i + 1])[0]
        if self.masks is not None:
            return mask_polygon(self.masks[i])
        x1, y1, x2, y2 = (float(v) for v in self.xyxy[i])
        return np.asarray([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)

    def to_list(self, decimals: int = 2) -> list[dict[str, Any]]:
        """JSON-ready ``[{"box": [x1, y1, x2, y2], "confidence", "class_id", "class_name", ...}, ...]``.

        Segmentation adds ``"polygon": [[x, y], ...]``; pose ``"keypoints": [[x, y, visibility], ...]``;
        oriented boxes ``"rbox": [cx, cy, w, h, angle_radians]`` and ``"polygon"`` (its 4 corners). All in
        original-image pixels.
        """

        def r(v: Any) -> float:
            return round(float(v), decimals)

        out = []
        for i in range(len(self)):
            doc: dict[str, Any] = {
                "box": [r(v) for v in self.xyxy[i]],
                "confidence": round(float(self.confidence[i]), 5),
                "class_id": int(self.class_id[i]),
                "class_name": self.name(i),
            }
            if self.rboxes is not None:
                doc["rbox"] = [r(v) for v in self.rboxes[i, :4]] + [round(float(self.rboxes[i, 4]), 5)]
            if self.rboxes is not None or self.masks is not None:
                doc["polygon"] = [[r(x), r(y)] for x, y in self.polygon(i)]
            if self.keypoints is not None:
                doc["keypoints"] = [
                    [r(k[0]), r(k[1]), *([round(float(k[2]), 4)] if len(k) > 2 else [])]
                    for k in self.keypoints[i]
                ]
            out.append(doc)
        return out

    def filter(self, mask: np.ndarray) -> Detections:
        """The detections where ``mask`` (``(n,)`` bool or indices) selects, optional fields included."""
        return Detections(
            self.xyxy[mask],
            self.confidence[mask],
            self.class_id[mask],
            self.class_names,
            self.data,
            None if self.masks is None else self.masks[mask],
            None if self.keypoints is None else self.keypoints[mask],
            None if self.rboxes is None else self.rboxes[mask],
        )


def rbox_corners(rboxes: np.ndarray) -> np.ndarray:
    """``(n, 5)`` cx, cy, w, h, angle (radians) → ``(n, 4, 2)`` float32 corner points, in order around the box."""
    rb = np.asarray(rboxes, np.float64).reshape(-1, 5)
    cx, cy, w, h, a = (rb[:, k] for k in range(5))
    cos, sin = np.cos(a), np.sin(a)
    # the box's half-axes, rotated by the angle (counter-clockwise in image coordinates, y down)
    ux, uy = w / 2 * cos, w / 2 * sin
    vx, vy = -h / 2 * sin, h / 2 * cos
    corners = np.stack(
        [
            np.stack([cx + ux + vx, cy + uy + vy], 1),
            np.stack([cx + ux - vx, cy + uy - vy], 1),
            np.stack([cx - ux - vx, cy - uy - vy], 1),
            np.stack([cx - ux + vx, cy - uy + vy], 1),
        ],
        1,
    )
    return corners.astype(np.float32)


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool mask → ``(p, 2)`` float32 outline of its largest connected region (empty: ``(0, 2)``)."""
    import cv2

    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return np.zeros((0, 2), np.float32)
    x0, y0 = int(xs.min()), int(ys.min())  # contour only the mask's bounding region: fast on big images
    sub = np.ascontiguousarray(mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1], dtype=np.uint8)
    contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    best = max(contours, key=cv2.contourArea)
    return (best.reshape(-1, 2) + np.asarray([x0, y0])).astype(np.float32)


@dataclass
class Classification:
    """Class probabilities for one image. probs: ``(nc,)`` float32 summing to 1."""

    probs: np.ndarray
    class_names: list[str] = field(default_factory=list)
    top_k: int = 5

    @property
    def top(self) -> list[int]:
        return [int(i) for i in np.argsort(-self.probs, kind="stable")[: self.top_k]]

    @property
    def class_id(self) -> int:
        return int(np.argmax(self.probs))

    def name(self, k: int) -> str:
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    def to_list(self, decimals: int = 5) -> list[dict[str, Any]]:
        """JSON-ready top-k: ``[{"class_id", "class_name", "confidence"}, ...]``."""
        return [
            {"class_id": k, "class_name": self.name(k), "confidence": round(float(self.probs[k]), decimals)}
            for k in self.top
        ]


@dataclass
class RawOutput:
    """Output tensors as the model produced them, for ``raw`` contracts, with the image's geometry.

    ``geometry`` says how original pixels map into the model input (``model = orig · scale + pad``),
    which is what a caller needs to map coordinates in the outputs back onto the image.
    """

    tensors: list[np.ndarray]
    names: list[str] = field(default_factory=list)
    geometry: Geometry | None = None

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "shape": list(t.shape), "dtype": str(t.dtype), "data": t.tolist()}
            for n, t in zip(
                self.names or [f"output{i}" for i in range(len(self.tensors))], self.tensors, strict=False
            )
        ]

    def geometry_dict(self) -> dict[str, Any] | None:
        """``{"original": [h, w], "scale": [sx, sy], "pad": [px, py]}``: ``model = original · scale + pad``."""
        g = self.geometry
        if g is None:
            return None
        return {"original": [g.orig_height, g.orig_width], "scale": [g.scale_x, g.scale_y],
                "pad": [g.pad_x, g.pad_y]}  # fmt: skip


Result = Detections | Classification | RawOutput
