"""How well one set of detections reproduces another, image by image.

Used to rank preprocessing variants (which one reproduces what the deployment returned?) and to
find permuted class ids (boxes that match well but carry other classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cvdeploy.ops.boxes import box_iou
from cvdeploy.results import Detections, Result

#: A confidence difference of this much scales a matched pair's credit by 1/e.
CONF_SCALE = 0.05
MATCH_IOU = 0.5


def _greedy(weights: np.ndarray, order: np.ndarray, floor: float) -> list[tuple[int, int]]:
    """One-to-one pairs (row, col), rows taken in ``order``, each picking its best free column above ``floor``."""
    used = np.zeros(weights.shape[1], bool)
    pairs = []
    for i in order:
        w = np.where(used, -1.0, weights[i])
        j = int(np.argmax(w))
        if w[j] > floor:
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def image_similarity(observed: Detections, simulated: Detections, use_conf: bool = True) -> float:
    """0–1: how exactly ``simulated`` reproduces ``observed`` on one image.

    Detections pair one-to-one when they have the same class and IoU ≥ 0.5; each pair earns
    ``IoU · exp(-|Δconf| / 0.05)`` (IoU alone without confidences), and the image scores
    ``2 · Σ credit / (n_observed + n_simulated)``, an F1 in which near-misses earn partial credit.
    Two empty sets agree perfectly.
    """
    n_o, n_s = len(observed), len(simulated)
    if n_o == 0 and n_s == 0:
        return 1.0
    if n_o == 0 or n_s == 0:
        return 0.0
    iou = box_iou(observed.xyxy, simulated.xyxy)
    iou[observed.class_id[:, None] != simulated.class_id[None, :]] = 0.0
    iou[iou < MATCH_IOU] = 0.0
    credit = iou
    if use_conf:
        credit = iou * np.exp(
            -np.abs(observed.confidence[:, None] - simulated.confidence[None, :]) / CONF_SCALE
        )
    pairs = _greedy(credit, np.argsort(-observed.confidence, kind="stable"), 0.0)
    return float(2.0 * sum(credit[i, j] for i, j in pairs) / (n_o + n_s))


def similarities(
    observed: Sequence[Detections], simulated: Sequence[Result], use_conf: bool = True
) -> np.ndarray:
    """``(n,)`` per-image similarity of paired lists (a result that is not detections reproduces nothing)."""
    return np.asarray(
        [
            image_similarity(o, s, use_conf) if isinstance(s, Detections) else 0.0
            for o, s in zip(observed, simulated, strict=True)
        ]
    )


def class_pairs(reference: Sequence[Detections | tuple[np.ndarray, np.ndarray]], other: Sequence[Detections], iou: float = 0.7) -> list[tuple[int, int]]:  # fmt: skip
    """``(reference class, other class)`` of boxes that match at ``iou`` whatever their classes.

    ``reference`` items are detections or ground truth ``(boxes, class ids)``.
    """
    out: list[tuple[int, int]] = []
    for ref, oth in zip(reference, other, strict=True):
        if isinstance(ref, Detections):
            rb, rc, order = ref.xyxy, ref.class_id, np.argsort(-ref.confidence, kind="stable")
        else:
            rb, rc = np.asarray(ref[0], np.float32).reshape(-1, 4), np.asarray(ref[1], np.int64)
            order = np.arange(len(rc))
        if len(rc) == 0 or len(oth) == 0:
            continue
        ious = box_iou(rb.astype(np.float32), oth.xyxy)
        for i, j in _greedy(np.where(ious >= iou, ious, 0.0), order, 0.0):
            out.append((int(rc[i]), int(oth.class_id[j])))
    return out
