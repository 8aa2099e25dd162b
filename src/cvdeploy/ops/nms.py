"""Greedy non-maximum suppression, class-aware or class-agnostic.

Written by hand (about twenty lines of numpy) rather than taken from OpenCV's ``dnn.NMSBoxes``
because the IoU here must be exactly the one torchvision/Ultralytics use (no +1 pixel
convention, float boxes), and the serving path must not need torch.
"""

from __future__ import annotations

import numpy as np

from cvdeploy.ops.boxes import box_area

# Boxes of different classes are moved apart by this many pixels so one NMS pass suffices.
_CLASS_OFFSET = 7680.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, highest score first.

    boxes: ``(n, 4)`` xyxy; scores: ``(n,)``. A box is suppressed when its IoU with a kept,
    higher-scoring box is strictly greater than ``iou_threshold``.
    """
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    boxes = boxes.astype(np.float64, copy=False)
    areas = box_area(boxes)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    agnostic: bool = False,
) -> np.ndarray:
    """NMS within each class (or across classes when ``agnostic``); returns kept indices by score."""
    if agnostic or boxes.shape[0] == 0:
        return nms(boxes, scores, iou_threshold)
    offsets = class_ids.astype(np.float64)[:, None] * _CLASS_OFFSET
    return nms(boxes.astype(np.float64) + offsets, scores, iou_threshold)
