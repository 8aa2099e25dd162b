"""Training loss of the zoo detector: task-aligned assignment, BCE classification, CIoU and DFL.

Assignment (after Feng et al., "TOOD", 2021): for every ground-truth box the anchor points whose
centre lies inside it are ranked by ``score ** alpha * iou ** beta`` (``score`` = predicted
probability of the box's class, ``iou`` = overlap of the predicted box); the ``topk`` best become
positives, an anchor claimed by several boxes goes to the one it overlaps most, and its soft class
target is the alignment metric normalised per box to that box's best IoU. The loss is then
``7.5 * (1 - CIoU) + 0.5 * BCE + 1.5 * DFL``, each part normalised by the sum of the soft targets.
"""

from __future__ import annotations

import math

from cvdeploy._deps import require

require("torch", "the zoo models and their training")  # one-line install hint instead of an ImportError

import torch
import torch.nn.functional as F
from torch import nn

from cvdeploy.zoo.model import Detector, make_anchors

__all__ = ["DetectionLoss", "bbox_iou", "task_aligned_assign"]


def bbox_iou(a: torch.Tensor, b: torch.Tensor, ciou: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or complete IoU) of broadcastable ``(..., 4)`` xyxy boxes; returns ``(...)``."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    aw, ah = ax2 - ax1, (ay2 - ay1).clamp(min=eps)
    bw, bh = bx2 - bx1, (by2 - by1).clamp(min=eps)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(min=0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4
    v = (4 / math.pi**2) * (torch.atan(bw / bh) - torch.atan(aw / ah)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@torch.no_grad()
def task_aligned_assign(
    scores: torch.Tensor,
    pred_boxes: torch.Tensor,
    points: torch.Tensor,
    gt_cls: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_valid: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned label assignment.

    Args:
        scores: ``(B, N, nc)`` predicted class probabilities.
        pred_boxes: ``(B, N, 4)`` predicted xyxy pixel boxes.
        points: ``(N, 2)`` anchor points, xy pixels.
        gt_cls: ``(B, M)`` int64 class ids (padded).
        gt_boxes: ``(B, M, 4)`` xyxy pixel boxes (padded).
        gt_valid: ``(B, M)`` bool, False for padding.

    Returns:
        ``(target_boxes (B, N, 4) xyxy pixels, target_scores (B, N, nc), fg_mask (B, N) bool)``.
    """
    b, n, nc = scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return (
            pred_boxes.new_zeros(b, n, 4),
            scores.new_zeros(b, n, nc),
            scores.new_zeros(b, n, dtype=torch.bool),
        )
    px, py = points[:, 0].view(1, 1, n), points[:, 1].view(1, 1, n)
    gx1, gy1, gx2, gy2 = (gt_boxes[..., i : i + 1] for i in range(4))  # (B, M, 1)
    inside = torch.stack([px - gx1, py - gy1, gx2 - px, gy2 - py], -1).amin(-1) > eps  # (B, M, N)
    inside &= gt_valid[..., None]

    iou = bbox_iou(gt_boxes[:, :, None], pred_boxes[:, None]).clamp(min=0) * inside  # (B, M, N)
    cls_idx = gt_cls.clamp(min=0)[:, :, None].expand(b, m, n)
    score = scores.permute(0, 2, 1).gather(1, cls_idx) * inside  # (B, M, N) p(gt class) per anchor
    metric = score.pow(alpha) * iou.pow(beta)

    k = min(topk, n)
    top_idx = metric.topk(k, dim=-1).indices  # (B, M, k)
    pos = torch.zeros_like(metric).scatter_(-1, top_idx, 1.0) * inside  # (B, M, N)

    # an anchor claimed by several boxes goes to the box it overlaps most
    multi = pos.sum(1, keepdim=True) > 1  # (B, 1, N)
    best = F.one_hot(iou.argmax(1), m).permute(0, 2, 1).to(pos.dtype)  # (B, M, N)
    pos = torch.where(multi, best, pos)
    fg = pos.sum(1) > 0  # (B, N)
    gt_idx = pos.argmax(1)  # (B, N)

    target_boxes = gt_boxes.gather(1, gt_idx[..., None].expand(b, n, 4))
    target_cls = gt_cls.clamp(min=0).gather(1, gt_idx)
    metric = metric * pos
    iou_pos = iou * pos
    norm = metric * iou_pos.amax(-1, keepdim=True) / (metric.amax(-1, keepdim=True) + eps)
    weight = norm.amax(1)  # (B, N)
    target_scores = F.one_hot(target_cls, nc).to(scores.dtype) * (weight * fg)[..., None]
    return target_boxes, target_scores, fg


class DetectionLoss(nn.Module):
    """Loss of :class:`~cvdeploy.zoo.model.Detector` on its training-mode (raw) outputs.

    ``forward(raw, targets)`` takes the per-level raw outputs and ``targets`` as ``(T, 6)`` rows
    ``(image index in batch, class, x1, y1, x2, y2)`` in input pixels, and returns
    ``(total loss, (3,) detached [box, cls, dfl])``.
    """

    def __init__(
        self,
        model: Detector,
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        topk: int = 10,
    ) -> None:
        super().__init__()
        self.nc, self.reg_max, self.strides = model.nc, model.reg_max, model.strides
        self.gains = (box_gain, cls_gain, dfl_gain)
        self.topk = topk
        self.register_buffer("proj", torch.arange(model.reg_max, dtype=torch.float32), False)

    def forward(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = raw[0].shape[0]
        grid, stride = make_anchors(raw, self.strides)  # (N, 2) in strides, (N, 1)
        points = grid * stride  # (N, 2) pixels
        flat = torch.cat([r.flatten(2) for r in raw], 2).permute(0, 2, 1).float()  # (B, N, 4R + nc)
        dist_logits, logits = flat.split([4 * self.reg_max, self.nc], -1)
        n = flat.shape[1]
        dist_logits = dist_logits.reshape(b, n, 4, self.reg_max)
        ltrb = dist_logits.softmax(-1) @ self.proj  # (B, N, 4) in strides
        pred_boxes = torch.cat([grid - ltrb[..., :2], grid + ltrb[..., 2:]], -1) * stride  # xyxy pixels

        gt_cls, gt_boxes, gt_valid = _pad_targets(targets, b)
        target_boxes, target_scores, fg = task_aligned_assign(
            logits.detach().sigmoid(), pred_boxes.detach(), points, gt_cls, gt_boxes, gt_valid, topk=self.topk
        )
        norm = target_scores.sum().clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum") / norm
        if fg.any():
            weight = target_scores.sum(-1)[fg]  # (P,)
            iou = bbox_iou(pred_boxes[fg], target_boxes[fg], ciou=True)
            loss_box = ((1.0 - iou) * weight).sum() / norm
            st = stride.expand(b, n, 1)[fg]  # (P, 1)
            pts = grid.expand(b, n, 2)[fg]
            tb = target_boxes[fg] / st
            target_ltrb = torch.cat([pts - tb[:, :2], tb[:, 2:] - pts], -1).clamp(0, self.reg_max - 1 - 0.01)
            loss_dfl = (_dfl(dist_logits[fg], target_ltrb) * weight).sum() / norm
        else:
            loss_box = loss_dfl = flat.sum() * 0.0
        g_box, g_cls, g_dfl = self.gains
        total = g_box * loss_box + g_cls * loss_cls + g_dfl * loss_dfl
        return total, torch.stack([loss_box, loss_cls, loss_dfl]).detach()


def _dfl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: ``(P, 4, R)`` logits vs ``(P, 4)`` continuous targets → ``(P,)``."""
    left = target.long()
    w_right = target - left
    r = logits.shape[-1]
    flat = logits.reshape(-1, r)
    ce_l = F.cross_entropy(flat, left.reshape(-1), reduction="none").view_as(target)
    ce_r = F.cross_entropy(flat, (left + 1).reshape(-1), reduction="none").view_as(target)
    return (ce_l * (1 - w_right) + ce_r * w_right).mean(-1)


def _pad_targets(targets: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(T, 6)`` target rows → padded ``(B, M)`` classes, ``(B, M, 4)`` boxes, ``(B, M)`` valid mask."""
    idx = targets[:, 0].long()
    counts = torch.bincount(idx, minlength=batch) if targets.numel() else torch.zeros(batch, dtype=torch.long)
    m = int(counts.max()) if batch else 0
    gt_cls = torch.full((batch, m), -1, dtype=torch.long)
    gt_boxes = torch.zeros(batch, m, 4)
    valid = torch.zeros(batch, m, dtype=torch.bool)
    if m:
        order = torch.argsort(idx, stable=True)
        idx = idx[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(idx)) - starts[idx]
        gt_cls[idx, slot] = targets[order, 1].long()
        gt_boxes[idx, slot] = targets[order, 2:6].float()
        valid[idx, slot] = True
    return gt_cls, gt_boxes, valid
