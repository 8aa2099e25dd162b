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

__all__ = ["COCO_KPT_SIGMAS", "coco_map", "task_map", "to_coco_json", "topk_accuracy"]

#: COCO's per-keypoint OKS sigmas for its 17 person keypoints (Ronchi & Perona 2017; the COCO keypoint task).
COCO_KPT_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                   0.087, 0.087, 0.089, 0.089]  # fmt: skip
#: A keypoint label has no segmentation: its object area (OKS scale) is taken as 0.53 of the box area,
#: the convention of Ultralytics' pose validation, so pose mAPs compare with theirs.
KPT_AREA_FROM_BOX = 0.53

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


def _coco_precision(
    gt_json: dict[str, Any], dets: list[dict[str, Any]], max_dets: int, iou_type: str = "bbox",
    sigmas: Sequence[float] | None = None,
) -> np.ndarray:  # fmt: skip
    """``COCOeval_faster``'s precision array ``(T=10, R=101, K, A, M)``; -1 where a class has no GT.

    The last max-dets entry is ``max_dets`` and area index 0 is "all", for every ``iou_type``.
    """
    fce = require("faster_coco_eval", "COCO mAP")
    coco_gt = fce.COCO(gt_json)
    coco_dt = coco_gt.loadRes(dets)
    kwargs: dict[str, Any] = {"kpt_oks_sigmas": list(sigmas)} if sigmas is not None else {}
    ev = fce.COCOeval_faster(
        coco_gt, coco_dt, iouType=iou_type, print_function=lambda *a, **k: None, **kwargs
    )
    ev.params.maxDets = [int(max_dets)] if iou_type == "keypoints" else [1, 10, int(max_dets)]
    ev.evaluate()
    ev.accumulate()
    precision = np.asarray(ev.eval["precision"])
    # the class axis follows the evaluated category ids (keypoint evaluation keeps only those it scores):
    # re-index it by category id - 1 so callers can use class ids, -1 (no ground truth) where absent
    cat_ids = [int(c) for c in ev.params.catIds]
    n_classes = max(len(gt_json["categories"]), max(cat_ids, default=0))
    full = -np.ones((*precision.shape[:2], n_classes, *precision.shape[3:]), precision.dtype)
    for pos, cid in enumerate(cat_ids):
        full[:, :, cid - 1] = precision[:, :, pos]
    return full


def _rle(mask: np.ndarray) -> dict[str, Any]:
    fce_mask = require("faster_coco_eval", "mask mAP").core.mask
    rle = fce_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(rle)


def _polygon(points: np.ndarray) -> list[list[float]]:
    return [np.asarray(points, np.float64).reshape(-1).tolist()]


def task_map(
    task: str,
    gt: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    preds: Sequence[Detections],
    num_classes: int,
    kpt_sigmas: Sequence[float] | None = None,
    max_dets: int = 100,
) -> dict[str, Any]:
    """COCO mAP of what a segment/pose/obb model predicts besides boxes.

    ``gt``: items with ``boxes``, ``class_ids`` and ``polygons`` (segment: outlines; obb: 4 corners) or
    ``keypoints`` (pose, ``(n, K, 3)``); ``sizes``: ``(width, height)`` per image; ``preds``: the
    pipeline's :class:`Detections` (``masks``, ``rboxes`` or ``keypoints``). Scored by ``COCOeval_faster``:
    ``segm`` IoU of masks (segment) and of rotated boxes rasterised as polygons (obb: pixel-exact
    rotated IoU), ``keypoints`` OKS (pose; COCO's sigmas for 17 keypoints, else ``kpt_sigmas`` or
    COCO's mean sigma for each). Returns ``{"mAP50-95", "mAP50", "per_class", "instances"}`` as
    :func:`coco_map`, as fractions 0–1.
    """
    if len(gt) != len(preds) or len(gt) != len(sizes):
        raise ValueError(f"{len(gt)} ground-truth images, {len(sizes)} sizes and {len(preds)} predictions")
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    k_pts = 0
    for image_id, (g, (w, h), p) in enumerate(zip(gt, sizes, preds, strict=True), start=1):
        images.append({"id": image_id, "width": int(w), "height": int(h)})
        for i, (box, c) in enumerate(
            zip(np.asarray(g.boxes).tolist(), np.asarray(g.class_ids).tolist(), strict=True)
        ):
            x1, y1, x2, y2 = box
            ann: dict[str, Any] = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(c) + 1,
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}  # fmt: skip
            if task == "pose":
                kp = np.asarray(g.keypoints[i], np.float64)
                k_pts = len(kp)
                ann["keypoints"] = kp.reshape(-1).tolist()
                ann["num_keypoints"] = int((kp[:, 2] > 0).sum())
                ann["area"] = (x2 - x1) * (y2 - y1) * KPT_AREA_FROM_BOX
            else:
                ann["segmentation"] = _polygon(g.polygons[i])
                ann["area"] = float(abs(_shoelace(g.polygons[i])))
            anns.append(ann)
        for i in range(len(p)):
            det: dict[str, Any] = {"image_id": image_id, "category_id": int(p.class_id[i]) + 1,
                                   "score": float(p.confidence[i])}  # fmt: skip
            x1, y1, x2, y2 = (float(v) for v in p.xyxy[i])
            det["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            if task == "pose":
                assert p.keypoints is not None
                kp = p.keypoints[i]
                vis = kp[:, 2] if kp.shape[1] > 2 else np.ones(len(kp))
                det["keypoints"] = np.stack([kp[:, 0], kp[:, 1], vis], 1).reshape(-1).astype(float).tolist()
                k_pts = len(kp)
            elif task == "segment":
                assert p.masks is not None
                det["segmentation"] = _rle(p.masks[i])
            else:
                det["segmentation"] = _polygon(p.polygon(i))
            dets.append(det)
    ids = [a["category_id"] - 1 for a in anns] + [d["category_id"] - 1 for d in dets]
    nc = max(num_classes, max(ids, default=-1) + 1)
    categories = [{"id": k + 1, "name": str(k)} for k in range(nc)]
    if task == "pose":
        for cat in categories:
            cat["keypoints"] = [str(j) for j in range(k_pts)]
    gt_json = {"images": images, "annotations": anns, "categories": categories}
    instances = np.bincount([a["category_id"] - 1 for a in anns], minlength=nc)
    out: dict[str, Any] = {"mAP50-95": 0.0, "mAP50": 0.0, "per_class": {}, "images": len(gt),
                           "instances": int(instances.sum()), "detections": len(dets)}  # fmt: skip
    if not instances.any():
        return out
    sigmas = None
    if task == "pose":
        sigmas = kpt_sigmas or (COCO_KPT_SIGMAS if k_pts == 17 else [float(np.mean(COCO_KPT_SIGMAS))] * k_pts)
    iou_type = "keypoints" if task == "pose" else "segm"
    precision = _coco_precision(gt_json, dets, max_dets, iou_type, sigmas) if dets else None
    aps, aps50 = [], []
    for k in range(nc):
        if not instances[k]:
            continue
        if precision is None:
            ap = ap50 = 0.0
        else:
            pr = precision[:, :, k, 0, -1]
            ap, ap50 = float(np.mean(np.clip(pr, 0, None))), float(np.mean(np.clip(pr[0], 0, None)))
        aps.append(ap)
        aps50.append(ap50)
        out["per_class"][k] = {"mAP50-95": ap, "mAP50": ap50, "instances": int(instances[k])}
    out["mAP50-95"], out["mAP50"] = float(np.mean(aps)), float(np.mean(aps50))
    return out


def _shoelace(points: np.ndarray) -> float:
    x, y = np.asarray(points, np.float64).T
    return 0.5 * float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


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
