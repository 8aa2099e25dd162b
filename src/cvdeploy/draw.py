"""Drawing results onto images for ``--save`` and reports: boxes, masks, keypoints, rotated boxes, classes."""

from __future__ import annotations

import cv2
import numpy as np

from cvdeploy.results import Classification, Detections, Result

_PALETTE = [
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (211, 188, 0),
    (209, 99, 0),
    (203, 42, 0),
    (255, 144, 0),
    (255, 98, 171),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
]


#: COCO's 17-keypoint skeleton (pairs of keypoint indices), drawn for pose models with 17 keypoints.
COCO_SKELETON = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
                 (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]  # fmt: skip
KEYPOINT_MIN_VISIBILITY = 0.5


def color(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


def _masks(img: np.ndarray, result: Detections, alpha: float = 0.45) -> None:
    """Blend each detection's mask into ``img`` in its class colour, in place."""
    if result.masks is None:
        return
    for i in range(len(result)):
        m = result.masks[i]
        if m.shape != img.shape[:2] or not m.any():
            continue
        c = np.asarray(color(int(result.class_id[i])), np.float32)
        img[m] = (img[m] * (1 - alpha) + c * alpha).astype(np.uint8)


def _keypoints(img: np.ndarray, result: Detections, thick: int) -> None:
    if result.keypoints is None:
        return
    r = max(2, thick + 1)
    for kpts in result.keypoints:
        seen = kpts[:, 2] >= KEYPOINT_MIN_VISIBILITY if kpts.shape[1] > 2 else np.ones(len(kpts), bool)
        if len(kpts) == 17:
            for a, b in COCO_SKELETON:
                if seen[a] and seen[b]:
                    pa = (int(round(kpts[a, 0])), int(round(kpts[a, 1])))
                    pb = (int(round(kpts[b, 0])), int(round(kpts[b, 1])))
                    cv2.line(img, pa, pb, (255, 180, 60), thick, cv2.LINE_AA)
        for k, (x, y) in enumerate(kpts[:, :2]):
            if seen[k]:
                cv2.circle(img, (int(round(x)), int(round(y))), r, color(k), -1, cv2.LINE_AA)


def annotate(image: np.ndarray, result: Result) -> np.ndarray:
    """A copy of the BGR ``image`` with boxes and labels (detections; masks, keypoints and rotated boxes when
    the detections carry them) or the top classes drawn."""
    img = image.copy()
    h, w = img.shape[:2]
    thick = max(1, round((h + w) / 600))
    font = max(0.4, (h + w) / 2400)
    if isinstance(result, Detections):
        _masks(img, result)
        for i in range(len(result)):
            x1, y1, x2, y2 = (int(round(v)) for v in result.xyxy[i])
            c = color(int(result.class_id[i]))
            if result.rboxes is not None:
                corners = np.round(result.polygon(i)).astype(np.int32)
                cv2.polylines(img, [corners], True, c, thick, cv2.LINE_AA)
                x1, y1 = int(corners[:, 0].min()), int(corners[:, 1].min())
            else:
                cv2.rectangle(img, (x1, y1), (x2, y2), c, thick, cv2.LINE_AA)
            label = f"{result.name(i)} {result.confidence[i]:.2f}"
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, thick - 1))
            y_text = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + 2
            cv2.rectangle(img, (x1, y_text - th - base), (x1 + tw + 2, y_text + base - 1), c, -1)
            cv2.putText(
                img,
                label,
                (x1 + 1, y_text - 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                font,
                (255, 255, 255),
                max(1, thick - 1),
                cv2.LINE_AA,
            )
        _keypoints(img, result, thick)
    elif isinstance(result, Classification):
        for row, k in enumerate(result.top):
            label = f"{result.name(k)} {result.probs[k]:.2f}"
            y = int((row + 1) * 30 * font * 1.6)
            cv2.putText(img, label, (10, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, (255, 255, 255), thick + 2)
            cv2.putText(img, label, (10, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, color(k), thick)
    return img
