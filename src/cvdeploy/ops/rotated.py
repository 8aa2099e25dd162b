"""Oriented boxes: probabilistic IoU and the NMS that oriented-box YOLO models are decoded with.

Written by hand (vectorised numpy) because no numpy/OpenCV library offers it: OpenCV's
``NMSBoxesRotated`` uses polygon IoU and greedy suppression, while YOLO-OBB models are trained
and decoded with ProbIoU (Llerena et al., 2021, "Gaussian Bounding Boxes and Probabilistic
Intersection-over-Union") and Fast NMS (Bolya et al., 2019, YOLACT §3.3). Using the same two
keeps the detections a model was tuned for.

ProbIoU models a box ``(cx, cy, w, h, θ)`` as a Gaussian with mean ``(cx, cy)`` and covariance
``R(θ) diag(w²/12, h²/12) R(θ)ᵀ``; the Bhattacharyya distance ``B`` of two such Gaussians gives the
Hellinger distance ``√(1 − e^{−B})`` and ProbIoU ``= 1 − √(1 − e^{−B})``.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7
_BLOCK = 1024  # rows of the pairwise matrix computed at once: memory stays O(BLOCK · n)


def _covariance(rb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, 5)`` boxes → the covariance entries ``a = Σxx``, ``b = Σyy``, ``c = Σxy``, each ``(n,)``."""
    w2, h2 = rb[:, 2] ** 2 / 12.0, rb[:, 3] ** 2 / 12.0
    cos, sin = np.cos(rb[:, 4]), np.sin(rb[:, 4])
    a = w2 * cos**2 + h2 * sin**2
    b = w2 * sin**2 + h2 * cos**2
    c = (w2 - h2) * cos * sin
    return a, b, c


def probiou(rb1: np.ndarray, rb2: np.ndarray) -> np.ndarray:
    """Pairwise ProbIoU of ``(n, 5)`` and ``(m, 5)`` boxes (cx, cy, w, h, angle radians) → ``(n, m)`` in [0, 1]."""
    p = np.asarray(rb1, np.float64).reshape(-1, 5)
    q = np.asarray(rb2, np.float64).reshape(-1, 5)
    a1, b1, c1 = (v[:, None] for v in _covariance(p))
    a2, b2, c2 = (v[None, :] for v in _covariance(q))
    dx = p[:, None, 0] - q[None, :, 0]
    dy = p[:, None, 1] - q[None, :, 1]
    a, b, c = a1 + a2, b1 + b2, c1 + c2  # Σ1 + Σ2
    det = a * b - c**2
    # (1/8) Δᵀ ((Σ1+Σ2)/2)⁻¹ Δ = (1/4) Δᵀ (Σ1+Σ2)⁻¹ Δ
    mahalanobis = 0.25 * (b * dx**2 - 2 * c * dx * dy + a * dy**2) / (det + _EPS)
    det1 = np.clip(a1 * b1 - c1**2, 0, None)
    det2 = np.clip(a2 * b2 - c2**2, 0, None)
    # (1/2) ln(det((Σ1+Σ2)/2) / √(det Σ1 · det Σ2)) = (1/2) ln(det(Σ1+Σ2) / (4 √(det Σ1 det Σ2)))
    log_term = 0.5 * np.log(det / (4 * np.sqrt(det1 * det2) + _EPS) + _EPS)
    bhattacharyya = np.clip(mahalanobis + log_term, _EPS, 100.0)
    return np.clip(1.0 - np.sqrt(1.0 - np.exp(-bhattacharyya) + _EPS), 0.0, 1.0)


def rotated_nms(
    rboxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    agnostic: bool = False,
) -> np.ndarray:
    """Fast NMS by ProbIoU: indices of the boxes kept, highest score first.

    A box is dropped when its ProbIoU with *any* higher-scoring box of the same class (any class when
    ``agnostic``) exceeds ``iou_threshold`` — whether or not that box was itself dropped (Fast NMS).
    """
    n = len(scores)
    if n == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    rb = np.asarray(rboxes, np.float64)[order]
    cls = np.asarray(class_ids)[order]
    worst = np.zeros(n, np.float64)  # highest IoU with any earlier (higher-scoring) box
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        iou = probiou(rb[start:stop], rb[start:])  # rows i in [start, stop), columns j ≥ start
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        iou[cols <= rows] = 0.0  # only earlier boxes suppress later ones
        if not agnostic:
            iou[cls[start:stop, None] != cls[None, start:]] = 0.0
        worst[start:] = np.maximum(worst[start:], iou.max(0))
    return order[worst <= iou_threshold].astype(np.int64)
