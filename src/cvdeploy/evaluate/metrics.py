"""Detection mAP by the COCO definition (via ``faster_coco_eval``) and top-k classification accuracy.

Inputs are plain per-image arrays, not files: ground truth ``(boxes (n, 4) xyxy, class_ids (n,))``
and predictions ``(boxes (m, 4) xyxy, scores (m,), class_ids (m,))`` (or
:class:`~cvdeploy.results.Detections`), in the same pixel units. Boxes are converted to a COCO
json in memory and scored by ``COCOeval_faster``: IoU thresholds 0.50:0.05:0.95, 101-point
interpolated precision, area range "all", at most ``max_dets`` detections per image (COCO's 100
by default). Crowd regions are not modelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.results import Detections

__all__ = ["coco_map", "to_coco_json", "topk_accuracy"]

GroundTruth = tuple[np.ndarray, np.ndarray]
Prediction = tuple[np.ndarray, np.ndarray, np.ndarray] | Detections


def _pred_arrays(p: Prediction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(p, Detections):
        return p.xyxy, p.confidence, p.class_id
    boxes, scores, classes = p
    return (
        np.asarray(boxes, np.float64).reshape(-1, 4),
        np.asarray(scores).reshape(-1),
        np.asarray(classes).reshape(-1),
    )


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def to_coco_json(
    gt: Sequence[GroundTruth], preds: Sequence[Prediction], num_classes: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """COCO ground-truth json (dict) and result list for per-image arrays.

    Image ids are ``1..n`` in order, category id = class id + 1 (COCO reserves 0). Ground-truth
    boxes without area are left out: no detection could ever match them (IoU 0), e.g. a
    detection clipped to nothing in the letterbox padding used as a pseudo-label. Images get a
    nominal size that covers every box; the size does not enter the bbox metrics.
    """
    if len(gt) != len(preds):
        raise ValueError(f"{len(gt)} ground-truth images but {len(preds)} prediction lists")
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for image_id, (g, p) in enumerate(zip(gt, preds, strict=True), start=1):
        boxes = np.asarray(g[0], np.float64).reshape(-1, 4)
        classes = np.asarray(g[1]).reshape(-1)
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, classes = boxes[real], classes[real]
        pb, ps, pc = _pred_arrays(p)
        extent = max(1.0, float(boxes.max(initial=0)), float(np.asarray(pb).max(initial=0)))
        images.append({"id": image_id, "width": int(np.ceil(extent)), "height": int(np.ceil(extent))})
        for box, c in zip(boxes.tolist(), classes.tolist(), strict=True):
            xywh = _xywh(box)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(c) + 1, "bbox": xywh,
                         "area": xywh[2] * xywh[3], "iscrowd": 0})  # fmt: skip
        for box, s, c in zip(
            np.asarray(pb).tolist(), np.asarray(ps).tolist(), np.asarray(pc).tolist(), strict=True
        ):
            dets.append(
                {"image_id": image_id, "category_id": int(c) + 1, "bbox": _xywh(box), "score": float(s)}
            )
    categories = [{"id": k + 1, "name": str(k)} for k in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def coco_map(
    gt: Sequence[GroundTruth],
    preds: Sequence[Prediction],
    num_classes: int | None = None,
    max_dets: int = 100,
) -> dict[str, Any]:
    """COCO box mAP of ``preds`` against ``gt`` (one entry per image, same order).

    Returns ``{"mAP50-95", "mAP50", "per_class": {class_id: {"mAP50-95", "mAP50", "instances"}},
    "images", "instances", "detections"}``. Classes without ground truth are left out of the mean
    and of ``per_class`` (as in COCO); with no ground truth at all both mAPs are 0.0 and
    ``instances`` is 0, so a caller can tell.
    """
    ids = [int(c) for g in gt for c in np.asarray(g[1]).reshape(-1)]
    ids += [int(c) for p in preds for c in _pred_arrays(p)[2]]
    nc = max(num_classes or 0, max(ids, default=-1) + 1)
    if min(ids, default=0) < 0:
        raise ValueError("class ids must be non-negative")
    gt_json, dets = to_coco_json(gt, preds, nc)
    instances = np.bincount([a["category_id"] - 1 for a in gt_json["annotations"]], minlength=nc)
    out: dict[str, Any] = {"mAP50-95": 0.0, "mAP50": 0.0, "per_class": {}, "images": len(gt),
                           "instances": int(instances.sum()), "detections": len(dets)}  # fmt: skip
    if not instances.any() or nc == 0:
        return out
    precision = _coco_precision(gt_json, dets, max_dets) if dets else None
    aps50_95, aps50 = [], []
    for k in range(nc):
        if not instances[k]:
            continue
        if precision is None:
            ap, ap50 = 0.0, 0.0
        else:
            p = precision[:, :, k, 0, -1]  # (iou thresholds, recall points) at area "all", max_dets
            ap, ap50 = float(np.mean(np.clip(p, 0, None))), float(np.mean(np.clip(p[0], 0, None)))
        aps50_95.append(ap)
        aps50.append(ap50)
        out["per_class"][k] = {"mAP50-95": ap, "mAP50": ap50, "instances": int(instances[k])}
    out["mAP50-95"] = float(np.mean(aps50_95))
    out["mAP50"] = float(np.mean(aps50))
    return out


def _coco_precision(gt_json: dict[str, Any], dets: list[dict[str, Any]], max_dets: int) -> np.ndarray:
    """``COCOeval_faster``'s precision array ``(T=10, R=101, K, A=4, M=3)``; -1 where a class has no GT."""
    fce = require("faster_coco_eval", "COCO mAP")
    coco_gt = fce.COCO(gt_json)
    coco_dt = coco_gt.loadRes(dets)
    ev = fce.COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.params.maxDets = [1, 10, int(max_dets)]
    ev.evaluate()
    ev.accumulate()
    return np.asarray(ev.eval["precision"])


def topk_accuracy(
    labels: Sequence[int] | np.ndarray, probs: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Share of images whose true class is among the ``k`` most probable, for each ``k``.

    labels: ``(n,)`` class ids; probs: ``(n, nc)`` scores. Returns ``{"top1": .., "top5": ..}``
    (``k`` ≥ ``nc`` counts every image whose label is a class of the model). Ties rank the lower
    class id first.
    """
    y = np.asarray(labels, np.int64).reshape(-1)
    scores = np.asarray(probs, np.float64).reshape(len(y), -1)
    if len(y) == 0:
        return {f"top{k}": 0.0 for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")
    hit = order == y[:, None]
    rank = np.where(hit.any(axis=1), np.argmax(hit, axis=1), np.iinfo(np.int64).max)  # rank of the true class
    return {f"top{k}": float(np.mean(rank < k)) for k in ks}
