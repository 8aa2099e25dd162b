"""Model output tensors → results: YOLO box decoding with NMS, classification, or raw."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cvdeploy.contract import Contract, OutputSpec
from cvdeploy.errors import ModelError
from cvdeploy.ops.boxes import xywh_to_xyxy
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.ops.nms import batched_nms
from cvdeploy.results import Classification, Detections, RawOutput, Result


def decode_yolo(
    pred: np.ndarray, spec: OutputSpec, fmt: str, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw YOLO output → kept boxes in model-input pixels.

    pred: ``(4+nc, N)`` for yolov8 (xywh + class scores) or ``(N, 5+nc)`` for yolov5 (xywh,
    objectness, class scores). Returns ``(k, 4)`` xyxy, ``(k,)`` scores, ``(k,)`` class ids,
    best score first, after confidence filtering and NMS.
    """
    if fmt == "yolov8":
        if pred.ndim != 2 or pred.shape[0] < 5:
            raise ModelError(f"yolov8 output must be (4+nc, N) per image, got {pred.shape}")
        cls = pred[4:]  # (nc, N)
        class_id = cls.argmax(0)
        score = cls[class_id, np.arange(cls.shape[1])]
        keep = score > spec.conf
        boxes = pred[:4, keep].T
        score, class_id = score[keep], class_id[keep]
    elif fmt == "yolov5":
        if pred.ndim != 2 or pred.shape[1] < 6:
            raise ModelError(f"yolov5 output must be (N, 5+nc) per image, got {pred.shape}")
        obj_keep = pred[:, 4] > spec.conf
        p = pred[obj_keep]
        cls = p[:, 5:] * p[:, 4:5]
        class_id = cls.argmax(1)
        score = cls[np.arange(cls.shape[0]), class_id]
        keep = score > spec.conf
        boxes, score, class_id = p[keep, :4], score[keep], class_id[keep]
    else:
        raise ModelError(f"not a YOLO output format: {fmt}")
    if score.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    if score.size > spec.max_nms:
        top = np.argsort(-score, kind="stable")[: spec.max_nms]
        boxes, score, class_id = boxes[top], score[top], class_id[top]
    xyxy = xywh_to_xyxy(boxes.astype(np.float32))
    kept = batched_nms(xyxy, score, class_id, spec.iou, agnostic=spec.agnostic_nms)[: spec.max_det]
    return xyxy[kept], score[kept].astype(np.float32), class_id[kept].astype(np.int64)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class Decoder:
    """Decodes a batch of raw outputs into one result per image, following the contract."""

    def __init__(self, contract: Contract, output_names: Sequence[str] = ()) -> None:
        self.contract = contract
        self.spec = contract.output
        self.output_names = list(output_names)

    def __call__(self, outputs: Sequence[np.ndarray], geometries: Sequence[Geometry]) -> list[Result]:
        fmt = self.spec.format
        n = len(geometries)
        if fmt == "raw":
            return [RawOutput([o[i] for o in outputs], self.output_names) for i in range(n)]
        pred = outputs[0]
        if pred.shape[0] != n:
            raise ModelError(f"model returned a batch of {pred.shape[0]} for {n} images")
        pred = pred.astype(np.float32, copy=False)
        if fmt == "classify":
            return [self._classify(pred[i]) for i in range(n)]
        results: list[Result] = []
        for i, geom in enumerate(geometries):
            xyxy, score, cls = decode_yolo(pred[i], self.spec, fmt)
            boxes = geom.to_original(xyxy)
            # boxes lying wholly in the letterbox padding clip to nothing: not detections
            visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not visible.all():
                boxes, score, cls = boxes[visible], score[visible], cls[visible]
            results.append(Detections(boxes, score, cls, self.contract.classes))
        return results

    def _classify(self, logits: np.ndarray) -> Classification:
        v = logits.reshape(-1).astype(np.float32)
        is_prob = self.spec.probabilities
        if is_prob is None:
            is_prob = bool(v.min() >= 0 and abs(float(v.sum()) - 1.0) < 1e-3)
        probs = v if is_prob else softmax(v)
        return Classification(probs, self.contract.classes, self.spec.top_k)
