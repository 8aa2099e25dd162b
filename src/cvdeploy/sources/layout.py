"""What a model's output shapes say: recognise a layout, and verify a claimed one against the graph.

Shared by every source (ONNX graphs, PyTorch modules probed with a dummy batch), so that a model's
metadata, the user's flags and the graph are held to the same rules:

- :func:`expected_outputs` — the output shapes a (task, format, classes, keypoints) combination needs;
- :func:`verify` — ``None`` when the outputs fit, else one line saying what disagrees;
- :func:`recognise` — the most likely layout of unlabelled outputs, and why.

Dimensions are ints, or strings/None for dynamic axes (which fit anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Dim = int | str | None
Shape = Sequence[Dim]

#: Rows of an end-to-end output are at most this many (Ultralytics' max_det is 300); more rows with
#: 6 values each are read as a YOLOv5 one-class output instead.
END2END_MAX_ROWS = 1000


@dataclass
class Layout:
    """A decodable reading of a model's outputs."""

    task: str
    format: str
    num_classes: int | None
    reason: str
    kpt_shape: list[int] | None = None


def _known(d: Dim) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(d if d not in (None, "") else "?") for d in shape) + ")"


def extra_values(task: str, kpt_shape: Sequence[int] | None, outputs: Sequence[Shape]) -> int | None:
    """Values per detection beyond box, score and classes: mask coefficients, keypoints, or the angle."""
    if task == "segment":
        return _known(outputs[1][1]) if len(outputs) > 1 and len(outputs[1]) == 4 else None
    if task == "pose":
        return int(kpt_shape[0] * kpt_shape[1]) if kpt_shape else None
    return 1 if task == "obb" else 0


def expected_outputs(task: str, fmt: str, nc: int, extra: int) -> str:
    """Human-readable shapes the decoder needs, e.g. ``(batch, 56, N)`` or ``(batch, 300, 6) + protos``."""
    protos = " and mask prototypes (batch, nm, h, w)" if task == "segment" else ""
    if fmt == "yolov8":
        return f"(batch, {4 + nc + extra}, N){protos}"
    if fmt == "yolov5":
        return f"(batch, N, {5 + nc + extra}){protos}"
    if fmt == "end2end":
        return f"(batch, max_det, {6 + extra}){protos}"
    if fmt == "boxes_scores":
        return f"boxes (batch, N, 4) and scores (batch, {nc}, N)"
    if fmt == "classify":
        return f"(batch, {nc})"
    return "any"


def verify(
    outputs: Sequence[Shape], task: str, fmt: str, nc: int | None, kpt_shape: Sequence[int] | None = None
) -> str | None:
    """``None`` when ``outputs`` can be decoded as ``task``/``fmt`` with ``nc`` classes, else why not.

    ``nc=None`` checks everything but the class count.
    """
    if fmt == "raw":
        return None
    got = ", ".join(_fmt(s) for s in outputs)
    if not outputs:
        return "the model has no outputs"
    extra = extra_values(task, kpt_shape, outputs)
    if task == "pose" and not kpt_shape:
        return "a pose model needs its keypoint shape (kpt_shape, e.g. [17, 3])"
    if extra is None:
        return f"a segmentation model has a second output of mask prototypes (batch, nm, h, w); the graph has {got}"
    want_outputs = 2 if task == "segment" or fmt == "boxes_scores" else 1
    if len(outputs) != want_outputs:
        return f"{task}/{fmt} has {want_outputs} output(s); the graph has {len(outputs)}: {got}"
    first = outputs[0]
    n = nc if nc is not None else 0
    want = expected_outputs(task, fmt, n, extra) if nc is not None else f"the {fmt} layout"
    if fmt == "classify":
        if len(first) != 2 or (nc is not None and _known(first[1]) not in (None, nc)):
            return f"a classifier of {nc} classes outputs (batch, {nc}); the graph has {got}"
        return None
    if fmt == "boxes_scores":
        a, b = outputs
        boxes, scores = (a, b) if len(a) == 3 and _known(a[2]) == 4 else (b, a)
        if len(boxes) != 3 or _known(boxes[2]) != 4 or len(scores) != 3:
            return f"boxes_scores needs boxes (batch, N, 4) and scores (batch, nc, N); the graph has {got}"
        if nc is not None and nc not in (_known(scores[1]), _known(scores[2])) and None not in scores[1:]:
            return f"{nc} classes need scores (batch, {nc}, N); the graph has {got}"
        return None
    if len(first) != 3:
        return f"{task}/{fmt} needs {want}; the graph has {got}"
    if fmt in ("yolov8", "yolov5"):
        # a YOLO head has more anchors than values per anchor: (B, C, N) with C < N, (B, N, C) likewise
        channels, anchors = (_known(first[1]), _known(first[2]))[:: 1 if fmt == "yolov8" else -1]
        if channels is not None and anchors is not None and anchors < channels:
            return f"{fmt} reads {_fmt(first)} as {anchors} candidates of {channels} values, fewer candidates than values"
    if fmt == "yolov8":
        rows = _known(first[1])
        if rows is not None and nc is not None and rows != 4 + nc + extra:
            return f"{task} with {nc} classes needs {want}; the graph has {got}"
        if rows is not None and nc is None and rows < 5 + extra:
            return f"{task}/{fmt} needs {want}; the graph has {got}"
    elif fmt in ("yolov5", "end2end"):
        cols = _known(first[2])
        base = 5 + n if fmt == "yolov5" else 6
        if cols is not None and (nc is not None or fmt == "end2end") and cols != base + extra:
            return f"{task} with {nc} classes needs {want}; the graph has {got}"
    return None


def recognise(outputs: Sequence[Shape], nc: int | None) -> Layout | None:
    """The most likely layout of outputs that carry no metadata (``None``: nothing cvdeploy decodes).

    One output ``(B, C)`` is a classifier; ``(B, C, N)`` with ``C < N`` YOLOv8-style; ``(B, R, 6)`` with
    ``R ≤ 1000`` end-to-end, otherwise ``(B, N, C)`` YOLOv5-style; two outputs of which the second is
    ``(B, nm, h, w)`` a YOLOv8 segmentation model; ``(B, N, 4)`` with ``(B, nc, N)`` boxes and scores.
    """
    if len(outputs) == 2 and len(outputs[1]) == 4 and len(outputs[0]) == 3:
        nm, rows = _known(outputs[1][1]), _known(outputs[0][1])
        if nm is not None and rows is not None and rows > 4 + nm:
            k = rows - 4 - nm
            if nc is None or nc == k:
                return Layout("segment", "yolov8", k, f"outputs {_fmt(outputs[0])} and prototypes {_fmt(outputs[1])} "
                              f"read as a YOLOv8 segmentation head ({k} classes, {nm} mask coefficients)")  # fmt: skip
    if len(outputs) == 2 and all(len(o) == 3 for o in outputs):
        boxes, scores = (outputs[0], outputs[1]) if _known(outputs[0][2]) == 4 else (outputs[1], outputs[0])
        if _known(boxes[2]) == 4:
            n_cls = _known(scores[1]) if _known(scores[2]) in (None, _known(boxes[1])) else _known(scores[2])
            if n_cls is not None and (nc is None or nc == n_cls):
                return Layout("detect", "boxes_scores", n_cls, f"outputs {_fmt(boxes)} and {_fmt(scores)} read as boxes "
                              f"(xyxy) and {n_cls} class scores before NMS")  # fmt: skip
    if len(outputs) != 1:
        return None
    d = outputs[0]
    if len(d) == 2 and _known(d[1]):
        return Layout("classify", "classify", _known(d[1]), f"output {_fmt(d)} looks like class scores")
    if len(d) != 3:
        return None
    rows, cols = _known(d[1]), _known(d[2])
    return _recognise_three(d, rows, cols, nc)


def _recognise_three(d: Shape, a: int | None, b: int | None, nc: int | None) -> Layout | None:
    """One ``(B, a, b)`` output: YOLOv8 (channels first), YOLOv5 (anchors first) or end-to-end rows."""
    if nc is not None:
        if a == 4 + nc:
            return Layout("detect", "yolov8", nc, f"output {_fmt(d)} = (batch, 4+{nc}, N)")
        if b == 5 + nc:
            return Layout("detect", "yolov5", nc, f"output {_fmt(d)} = (batch, N, 5+{nc})")
    if b == 6 and a is not None and a <= END2END_MAX_ROWS:
        return Layout("detect", "end2end", nc, f"output {_fmt(d)} read as end-to-end rows (x1, y1, x2, y2, score, "
                      f"class) already through NMS")  # fmt: skip
    if a is not None and (b is None or a < b) and a >= 5:
        return Layout(
            "detect", "yolov8", a - 4, f"output {_fmt(d)} read as yolov8 (4 box + {a - 4} class rows)"
        )
    if b is not None and (a is None or b < a) and b >= 6:
        return Layout("detect", "yolov5", b - 5, f"output {_fmt(d)} read as yolov5 (4 box + objectness + {b - 5} "
                      "classes)")  # fmt: skip
    return None


def describe(outputs: Sequence[Shape]) -> str:
    return ", ".join(_fmt(s) for s in outputs)
