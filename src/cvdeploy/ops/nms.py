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


# Up to this many candidates the pairwise IoU matrix (float32, n² · 4 bytes: 16 MB at 2048) is
# computed at once and the greedy pass only flips flags; beyond it, one row at a time.
_MATRIX_LIMIT = 2048


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, highest score first.

    boxes: ``(n, 4)`` xyxy; scores: ``(n,)``. A box is suppressed when its IoU with a kept,
    higher-scoring box is strictly greater than ``iou_threshold``.
    """
    n = boxes.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    if n <= _MATRIX_LIMIT:
        return order[_greedy_matrix(boxes[order].astype(np.float32), iou_threshold)]
    return _greedy_rows(boxes.astype(np.float64), order, iou_threshold)


def _greedy_matrix(b: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over boxes already sorted by score, with the whole IoU matrix at once."""
    areas = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    w = (np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])).clip(0)
    inter = w * h
    union = areas[:, None] + areas[None, :] - inter
    over = inter > iou_threshold * union  # IoU > t without dividing; union > 0 whenever inter > 0
    suppressed = np.zeros(len(b), bool)
    keep: list[int] = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return np.asarray(keep, dtype=np.int64)


def _greedy_rows(boxes: np.ndarray, order: np.ndarray, iou_threshold: float) -> np.ndarray:
    areas = box_area(boxes)
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
