"""Drawing results onto images for ``--save`` and reports."""

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


def color(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


def annotate(image: np.ndarray, result: Result) -> np.ndarray:
    """A copy of the BGR ``image`` with boxes and labels (detections) or the top classes drawn."""
    img = image.copy()
    h, w = img.shape[:2]
    thick = max(1, round((h + w) / 600))
    font = max(0.4, (h + w) / 2400)
    if isinstance(result, Detections):
        for i in range(len(result)):
            x1, y1, x2, y2 = (int(round(v)) for v in result.xyxy[i])
            c = color(int(result.class_id[i]))
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
    elif isinstance(result, Classification):
        for row, k in enumerate(result.top):
            label = f"{result.name(k)} {result.probs[k]:.2f}"
            y = int((row + 1) * 30 * font * 1.6)
            cv2.putText(img, label, (10, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, (255, 255, 255), thick + 2)
            cv2.putText(img, label, (10, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, color(k), thick)
    return img
