"""COCO mAP of a zoo detector on a split of a YOLO-format dataset, in plain PyTorch.

Used by :mod:`cvdeploy.zoo.train` to pick the best checkpoint. Images are fed at their own size
(the generated ones are square, 640x640, so no letterbox is needed), RGB scaled to 0-1; the model's
decoded ``(B, 4 + nc, N)`` output goes through a per-class NMS and is scored with ``faster_coco_eval``.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from cvdeploy._deps import require

require("torch", "the zoo models and their training")  # one-line install hint instead of an ImportError

import torch
from torch import nn

from cvdeploy.zoo.dataset import list_split, to_coco

__all__ = ["coco_map", "load_images", "postprocess", "predict"]


def load_images(data_yaml: str | os.PathLike[str], split: str, limit: int | None = None) -> list[np.ndarray]:
    """The split's images as ``(H, W, 3)`` uint8 RGB arrays (the first ``limit`` in file-name order)."""
    pairs = list_split(data_yaml, split)[:limit]
    out = []
    for img_path, _ in pairs:
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {img_path}")
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


def postprocess(
    out: torch.Tensor, conf: float = 0.001, iou: float = 0.7, max_det: int = 300
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Decoded ``(B, 4 + nc, N)`` output → per image ``(boxes (n, 4) xyxy px, scores (n,), classes (n,))``.

    Each anchor keeps its best class; boxes of the same class are suppressed above ``iou``.
    """
    from torchvision.ops import batched_nms

    results = []
    for pred in out.float():
        scores, classes = pred[4:].max(0)
        keep = scores > conf
        cxcywh, scores, classes = pred[:4, keep].t(), scores[keep], classes[keep]
        xyxy = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
        if scores.numel() > 30000:
            top = scores.topk(30000).indices
            xyxy, scores, classes = xyxy[top], scores[top], classes[top]
        idx = batched_nms(xyxy, scores, classes, iou)[:max_det]
        results.append((xyxy[idx].numpy(), scores[idx].numpy(), classes[idx].numpy()))
    return results


@torch.no_grad()
def predict(
    model: nn.Module, images: list[np.ndarray], batch: int = 8, channels_last: bool = False
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run ``model`` (eval mode) on same-sized RGB uint8 images; returns :func:`postprocess` results."""
    model.eval()
    results = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[i : i + batch])).permute(0, 3, 1, 2).float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        results.extend(postprocess(model(x)))
    return results


def coco_map(
    model: nn.Module,
    data_yaml: str | os.PathLike[str],
    split: str = "val",
    limit: int | None = None,
    images: list[np.ndarray] | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """``{"mAP50-95": .., "mAP50": ..}`` of ``model`` on ``split`` (its first ``limit`` images)."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt = to_coco(data_yaml, split)
    if limit is not None:
        gt["images"] = gt["images"][:limit]
        ids = {im["id"] for im in gt["images"]}
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in ids]
    if images is None:
        images = load_images(data_yaml, split, limit)
    preds = predict(model, images, channels_last=channels_last)
    dets: list[dict[str, Any]] = []
    for im, (boxes, scores, classes) in zip(gt["images"], preds, strict=True):
        for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            dets.append({"image_id": im["id"], "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": float(s)})  # fmt: skip
    if not dets:
        return {"mAP50-95": 0.0, "mAP50": 0.0}
    coco_gt = COCO(gt)
    coco_dt = coco_gt.loadRes(dets)
    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {"mAP50-95": float(ev.stats[0]), "mAP50": float(ev.stats[1])}
