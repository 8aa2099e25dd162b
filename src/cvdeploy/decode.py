"""Model output tensors → results, by two small registries instead of if-chains.

A box decoder is a *layout* (how rows are stored: :data:`LAYOUTS`, keyed by the contract's output
format) combined with a *head* (what each row carries besides its box: :data:`HEADS`, keyed by the
task). Classifiers and raw models have their own decoders (:data:`DECODERS`).

    layout                  rows per image                                         NMS
    yolov8                  (4 + nc + extra, N)   cx, cy, w, h, class scores, extra  here
    yolov5                  (N, 5 + nc + extra)   cx, cy, w, h, objectness, scores   here
    end2end                 (max_det, 6 + extra)  x1, y1, x2, y2, score, class, extra  in the graph
    boxes_scores            (N, 4) xyxy and (nc, N) or (N, nc) scores, two outputs    here

    head      extra per row              from                      result field
    detect    —                          —                         xyxy
    segment   nm mask coefficients       prototypes (B, nm, h, w)  masks (n, H, W)
    pose      K · D keypoint values      —                         keypoints (n, K, D)
    obb       1 angle (boxes cx,cy,w,h)  —                         rboxes (n, 5)

Every decoder checks its input against the contract (shape, number of classes) and its own output
(confidences in [0, 1], class ids < nc), and raises :class:`~cvdeploy.errors.ModelError` when they
do not fit: a decoder that does not match the model (a pose head read as a 52-class detector, an
end-to-end output read as YOLOv5) can never produce results, nor pass an export's parity check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cvdeploy.contract import Contract, OutputSpec
from cvdeploy.errors import ModelError
from cvdeploy.ops.boxes import xywh_to_xyxy
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.ops.masks import masks_from_protos
from cvdeploy.ops.nms import batched_nms
from cvdeploy.ops.rotated import rotated_nms
from cvdeploy.results import Classification, Detections, RawOutput, Result, rbox_corners

#: How far a confidence may stray outside [0, 1] (FP16/INT8 rounding) before the decoder refuses.
SCORE_SLACK = 1e-2


@dataclass
class Rows:
    """One image's candidate rows after the confidence threshold (before or after NMS).

    box: ``(k, 4)`` float32 in model-input pixels (xywh centre for ``box_format == "xywh"``, else xyxy);
    score: ``(k,)``; class_id: ``(k,)`` int64; extra: ``(k, e)`` the head's values.
    """

    box: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    extra: np.ndarray
    box_format: str  # "xywh" | "xyxy"
    nms_done: bool


def _unfit(what: str, contract: Contract, hint: str = "") -> ModelError:
    spec = contract.output
    return ModelError(
        f"the model's output does not fit its {spec.format!r} {contract.task!r} decoder: {what}"
        f"{hint or ''}; check --task/--output-format or give the contract with --contract"
    )


def _check_scores(scores: np.ndarray, contract: Contract, what: str = "confidences") -> None:
    """Refuse a head whose (finite) scores are not probabilities. Non-finite values are a numeric failure of
    the model, not a wrong decoder: they never pass a threshold (``_confident``) and are reported by the
    server and by ``doctor`` (``numerics.nonfinite``)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    if hi > 1.0 + SCORE_SLACK or lo < -SCORE_SLACK:
        raise _unfit(
            f"{what} range {lo:.3g}…{hi:.3g}, not 0–1",
            contract,
            f" — this is not a {contract.task} head with {contract.num_classes} classes",
        )


def _confident(score: np.ndarray, contract: Contract) -> np.ndarray:
    """Candidates above the threshold; NaN and ±inf never are."""
    return np.isfinite(score) & (score > contract.output.conf)


# ---- layouts: rows of one image → candidates ---------------------------------------------------

LayoutFn = Callable[[Sequence[np.ndarray], int, Contract, int, int], Rows]


def _yolov8(outputs: Sequence[np.ndarray], i: int, contract: Contract, nc: int, extra: int) -> Rows:
    pred = outputs[0][i]
    if pred.ndim != 2 or pred.shape[0] != 4 + nc + extra:
        raise _unfit(f"expected ({4 + nc + extra}, N) rows per image (4 box + {nc} classes + {extra}), got "
                     f"{tuple(pred.shape)}", contract)  # fmt: skip
    cls = pred[4 : 4 + nc]
    class_id = cls.argmax(0)
    score = cls[class_id, np.arange(cls.shape[1])]
    _check_scores(score, contract)
    keep = _confident(score, contract)
    return Rows(pred[:4, keep].T, score[keep], class_id[keep], pred[4 + nc :, keep].T, "xywh", False)


def _yolov5(outputs: Sequence[np.ndarray], i: int, contract: Contract, nc: int, extra: int) -> Rows:
    pred = outputs[0][i]
    if pred.ndim != 2 or pred.shape[1] != 5 + nc + extra:
        raise _unfit(f"expected (N, {5 + nc + extra}) rows per image (4 box + objectness + {nc} classes + {extra}), "
                     f"got {tuple(pred.shape)}", contract)  # fmt: skip
    _check_scores(pred[:, 4], contract, "objectness")
    p = pred[pred[:, 4] > contract.output.conf]
    cls = p[:, 5 : 5 + nc] * p[:, 4:5]
    _check_scores(cls, contract, "class scores")
    class_id = cls.argmax(1)
    score = cls[np.arange(cls.shape[0]), class_id]
    keep = _confident(score, contract)
    return Rows(p[keep, :4], score[keep], class_id[keep], p[keep, 5 + nc :], "xywh", False)


def _end2end(outputs: Sequence[np.ndarray], i: int, contract: Contract, nc: int, extra: int) -> Rows:
    pred = outputs[0][i]
    if pred.ndim != 2 or pred.shape[1] != 6 + extra:
        raise _unfit(f"expected (max_det, {6 + extra}) rows per image (box, score, class + {extra}), got "
                     f"{tuple(pred.shape)}", contract)  # fmt: skip
    _check_scores(pred[:, 4], contract)
    p = pred[pred[:, 4] > contract.output.conf]
    cls = p[:, 5]
    if cls.size and (np.abs(cls - np.round(cls)).max() > 1e-3 or cls.min() < 0 or cls.max() > nc - 1):
        raise _unfit(
            f"class ids {cls.min():.3g}…{cls.max():.3g} are not whole numbers below {nc}", contract,
            f" — this is not an end-to-end {contract.task} output with {nc} classes",
        )  # fmt: skip
    box_format = "xywh" if contract.task == "obb" else "xyxy"
    return Rows(p[:, :4], p[:, 4], np.round(cls).astype(np.int64), p[:, 6:], box_format, True)


def _boxes_scores(outputs: Sequence[np.ndarray], i: int, contract: Contract, nc: int, extra: int) -> Rows:
    if len(outputs) < 2:
        raise _unfit(f"expected two outputs (boxes, scores), got {len(outputs)}", contract)
    a, b = outputs[0][i], outputs[1][i]
    boxes, scores = (a, b) if a.ndim == 2 and a.shape[-1] == 4 else (b, a)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 2 or nc not in scores.shape:
        raise _unfit(f"expected boxes (N, 4) and scores ({nc}, N), got {tuple(a.shape)} and {tuple(b.shape)}",
                     contract)  # fmt: skip
    if scores.shape[0] != nc or scores.shape[1] != boxes.shape[0]:
        scores = scores.T
    class_id = scores.argmax(0)
    score = scores[class_id, np.arange(scores.shape[1])]
    _check_scores(score, contract)
    keep = _confident(score, contract)
    return Rows(
        boxes[keep], score[keep], class_id[keep], np.zeros((int(keep.sum()), 0), np.float32), "xyxy", False
    )


LAYOUTS: dict[str, LayoutFn] = {
    "yolov8": _yolov8,
    "yolov5": _yolov5,
    "end2end": _end2end,
    "boxes_scores": _boxes_scores,
}


# ---- heads: what each row carries besides its box ------------------------------------------------


class DetectHead:
    """Plain boxes: axis-aligned NMS, boxes mapped back to the original image."""

    def extra(self, contract: Contract, outputs: Sequence[np.ndarray]) -> int:
        return 0

    def nms(self, rows: Rows, spec: OutputSpec) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` with boxes as xyxy, and the kept indices (best first, at most ``max_det``)."""
        xyxy = xywh_to_xyxy(rows.box.astype(np.float32)) if rows.box_format == "xywh" else rows.box
        if rows.nms_done:
            return xyxy, np.arange(min(len(rows.score), spec.max_det))
        return xyxy, batched_nms(xyxy, rows.score, rows.class_id, spec.iou, agnostic=spec.agnostic_nms)[
            : spec.max_det
        ]

    def build(
        self, rows: Rows, keep: np.ndarray, xyxy: np.ndarray, geom: Geometry, outputs: Sequence[np.ndarray],
        i: int, contract: Contract,
    ) -> Detections:  # fmt: skip
        boxes = geom.to_original(xyxy[keep])
        det = Detections(boxes, rows.score[keep].astype(np.float32), rows.class_id[keep].astype(np.int64),
                         contract.classes)  # fmt: skip
        self.add(det, rows.extra[keep], geom, outputs, i, contract)
        # boxes lying wholly in the letterbox padding clip to nothing: not detections; nor are instances whose
        # mask is empty (as Ultralytics drops them)
        visible = (det.xyxy[:, 2] > det.xyxy[:, 0]) & (det.xyxy[:, 3] > det.xyxy[:, 1])
        if det.masks is not None:
            visible &= det.masks.any((1, 2))
        return det if visible.all() else det.filter(visible)

    def add(self, det: Detections, extra: np.ndarray, geom: Geometry, outputs: Sequence[np.ndarray], i: int,
            contract: Contract) -> None:  # fmt: skip
        """Fill the head's own result field from the kept rows' extra values."""


class SegmentHead(DetectHead):
    """Mask coefficients per row + a prototype output ``(B, nm, mh, mw)``: full-image boolean masks.

    ``with_masks=False`` skips the masks (boxes only): what a parity check compares, at a fraction of the cost.
    """

    def __init__(self, with_masks: bool = True) -> None:
        self.with_masks = with_masks

    def extra(self, contract: Contract, outputs: Sequence[np.ndarray]) -> int:
        if len(outputs) < 2 or outputs[1].ndim != 4:
            shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
            raise _unfit(f"a segmentation model has a second output of mask prototypes (B, nm, h, w); got {shapes}",
                         contract)  # fmt: skip
        return int(outputs[1].shape[1])

    def add(self, det: Detections, extra: np.ndarray, geom: Geometry, outputs: Sequence[np.ndarray], i: int,
            contract: Contract) -> None:  # fmt: skip
        if not self.with_masks:
            return
        spec = contract.input
        det.masks = masks_from_protos(extra, outputs[1][i], det.xyxy, geom, (spec.height, spec.width))


class PoseHead(DetectHead):
    """``K · D`` keypoint values per row (x, y in input pixels, visibility 0–1): keypoints in original pixels."""

    def extra(self, contract: Contract, outputs: Sequence[np.ndarray]) -> int:
        k, d = contract.output.kpt_shape or (0, 0)
        return int(k * d)

    def add(self, det: Detections, extra: np.ndarray, geom: Geometry, outputs: Sequence[np.ndarray], i: int,
            contract: Contract) -> None:  # fmt: skip
        k, d = contract.output.kpt_shape or (0, 0)
        kpts = extra.reshape(-1, k, d).astype(np.float32, copy=True)
        kpts[..., 0] = np.clip((kpts[..., 0] - geom.pad_x) / geom.scale_x, 0, geom.orig_width)
        kpts[..., 1] = np.clip((kpts[..., 1] - geom.pad_y) / geom.scale_y, 0, geom.orig_height)
        if d == 3:
            _check_scores(kpts[..., 2], contract, "keypoint visibilities")
        det.keypoints = kpts


class ObbHead(DetectHead):
    """One angle per row (radians) with a centre-size box: rotated NMS by ProbIoU, rotated boxes back."""

    def extra(self, contract: Contract, outputs: Sequence[np.ndarray]) -> int:
        return 1

    def nms(self, rows: Rows, spec: OutputSpec) -> tuple[np.ndarray, np.ndarray]:
        rb = np.concatenate([rows.box, rows.extra[:, -1:]], 1).astype(np.float32)
        if rows.nms_done:
            return rb, np.arange(min(len(rows.score), spec.max_det))
        return rb, rotated_nms(rb, rows.score, rows.class_id, spec.iou, agnostic=spec.agnostic_nms)[
            : spec.max_det
        ]

    def build(
        self, rows: Rows, keep: np.ndarray, rb: np.ndarray, geom: Geometry, outputs: Sequence[np.ndarray],
        i: int, contract: Contract,
    ) -> Detections:  # fmt: skip
        r = rb[keep].astype(np.float32, copy=True)
        r[:, 0] = (r[:, 0] - geom.pad_x) / geom.scale_x
        r[:, 1] = (r[:, 1] - geom.pad_y) / geom.scale_y
        r[:, 2] /= geom.scale_x
        r[:, 3] /= geom.scale_y
        corners = rbox_corners(r)
        xyxy = np.concatenate([corners.min(1), corners.max(1)], 1) if len(r) else np.zeros((0, 4), np.float32)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, geom.orig_width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, geom.orig_height)
        return Detections(xyxy.astype(np.float32), rows.score[keep].astype(np.float32),
                          rows.class_id[keep].astype(np.int64), contract.classes, rboxes=r)  # fmt: skip


HEADS: dict[str, DetectHead] = {
    "detect": DetectHead(),
    "segment": SegmentHead(True),
    "pose": PoseHead(),
    "obb": ObbHead(),
}


# ---- decoders ------------------------------------------------------------------------------------


class BoxDecoder:
    """A layout and a head: one :class:`Detections` per image."""

    def __init__(self, contract: Contract, output_names: Sequence[str] = (), with_masks: bool = True) -> None:
        self.contract = contract
        self.layout = LAYOUTS[contract.output.format]
        self.head = HEADS[contract.task] if with_masks or contract.task != "segment" else SegmentHead(False)

    def __call__(self, outputs: Sequence[np.ndarray], geometries: Sequence[Geometry]) -> list[Result]:
        c = self.contract
        outs = [o.astype(np.float32, copy=False) for o in outputs]
        nc = c.num_classes or _infer_classes(outs, c, self.head.extra(c, outs))
        extra = self.head.extra(c, outs)
        results: list[Result] = []
        for i, geom in enumerate(geometries):
            rows = self.layout(outs, i, c, nc, extra)
            if len(rows.score) > c.output.max_nms and not rows.nms_done:
                top = np.argsort(-rows.score, kind="stable")[: c.output.max_nms]
                rows = Rows(rows.box[top], rows.score[top], rows.class_id[top], rows.extra[top], rows.box_format,
                            False)  # fmt: skip
            boxes, keep = self.head.nms(rows, c.output)
            results.append(self.head.build(rows, keep, boxes, geom, outs, i, c))
        return results


def _infer_classes(outputs: Sequence[np.ndarray], contract: Contract, extra: int) -> int:
    """Number of classes from the output shape, for a contract that names none."""
    shape = outputs[0].shape
    fmt = contract.output.format
    if fmt == "yolov8":
        return int(shape[1]) - 4 - extra
    if fmt == "yolov5":
        return int(shape[2]) - 5 - extra
    if fmt == "boxes_scores" and len(outputs) > 1:
        s = outputs[1].shape if outputs[0].shape[-1] == 4 else shape
        return int(min(s[1:]))
    raise _unfit("the contract names no classes and an end-to-end output does not say how many", contract)


class ClassifyDecoder:
    """Logits or probabilities ``(B, nc)`` → :class:`Classification` (softmax when they are logits)."""

    def __init__(self, contract: Contract, output_names: Sequence[str] = (), with_masks: bool = True) -> None:
        self.contract = contract
        self.spec = contract.output

    def __call__(self, outputs: Sequence[np.ndarray], geometries: Sequence[Geometry]) -> list[Result]:
        pred = outputs[0].astype(np.float32, copy=False)
        nc = self.contract.num_classes
        if nc and pred.reshape(pred.shape[0], -1).shape[1] != nc:
            raise _unfit(
                f"{pred.reshape(pred.shape[0], -1).shape[1]} scores per image for {nc} classes", self.contract
            )
        return [self._one(pred[i]) for i in range(len(geometries))]

    def _one(self, logits: np.ndarray) -> Classification:
        v = logits.reshape(-1).astype(np.float32)
        is_prob = self.spec.probabilities
        if is_prob is None:
            is_prob = bool(v.min() >= 0 and abs(float(v.sum()) - 1.0) < 1e-3)
        probs = v if is_prob else softmax(v)
        return Classification(probs, self.contract.classes, self.spec.top_k)


class RawDecoder:
    """No decoding: each image's slice of every output, with its geometry."""

    def __init__(self, contract: Contract, output_names: Sequence[str] = (), with_masks: bool = True) -> None:
        self.output_names = list(output_names)

    def __call__(self, outputs: Sequence[np.ndarray], geometries: Sequence[Geometry]) -> list[Result]:
        return [RawOutput([o[i] for o in outputs], self.output_names, g) for i, g in enumerate(geometries)]


DECODERS: dict[str, type[BoxDecoder] | type[ClassifyDecoder] | type[RawDecoder]] = {
    **dict.fromkeys(LAYOUTS, BoxDecoder),
    "classify": ClassifyDecoder,
    "raw": RawDecoder,
}


class Decoder:
    """Decodes a batch of raw outputs into one result per image, following the contract.

    ``with_masks=False``: segmentation results without their masks (for parity checks, which compare boxes).
    """

    def __init__(self, contract: Contract, output_names: Sequence[str] = (), with_masks: bool = True) -> None:
        self.contract = contract
        self.spec = contract.output
        self.output_names = list(output_names)
        self._impl = DECODERS[contract.output.format](contract, self.output_names, with_masks)

    def __call__(self, outputs: Sequence[np.ndarray], geometries: Sequence[Geometry]) -> list[Result]:
        n = len(geometries)
        if not outputs:
            raise ModelError("the model returned no outputs")
        for o in outputs if self.spec.format != "raw" else ():
            if o.shape[0] != n:
                raise ModelError(f"model returned a batch of {o.shape[0]} for {n} images")
        return self._impl(outputs, geometries)


def decode_yolo(
    pred: np.ndarray, spec: OutputSpec, fmt: str, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw detector output → kept boxes in model-input pixels (no letterbox mapping).

    pred: ``(4+nc, N)`` (yolov8), ``(N, 5+nc)`` (yolov5) or ``(max_det, 6)`` (end2end). Returns
    ``(k, 4)`` xyxy, ``(k,)`` scores, ``(k,)`` class ids, best first.
    """
    if fmt not in LAYOUTS:
        raise ModelError(f"not a box output format: {fmt}")
    nc = num_classes or {"yolov8": pred.shape[0] - 4, "yolov5": pred.shape[-1] - 5}.get(fmt, 0)
    contract = Contract(
        task="detect",
        classes=[str(k) for k in range(max(nc, 1))],
        output=spec.model_copy(update={"format": fmt}),
    )
    if fmt == "end2end" and nc == 0:
        contract.classes = [str(k) for k in range(int(pred[:, 5].max(initial=0)) + 1)]
    rows = LAYOUTS[fmt]([pred[None]], 0, contract, contract.num_classes, 0)
    if len(rows.score) > spec.max_nms and not rows.nms_done:
        top = np.argsort(-rows.score, kind="stable")[: spec.max_nms]
        rows = Rows(
            rows.box[top], rows.score[top], rows.class_id[top], rows.extra[top], rows.box_format, False
        )
    xyxy, keep = HEADS["detect"].nms(rows, contract.output)
    return (xyxy[keep].astype(np.float32), rows.score[keep].astype(np.float32),
            rows.class_id[keep].astype(np.int64))  # fmt: skip


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
