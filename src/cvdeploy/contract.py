"""The contract: exactly how images become model input and how outputs become results.

Every artifact of a bundle shares one contract, and every command (predict, val, bench, serve,
doctor) builds its pipeline from it, so preprocessing can never silently differ between
evaluation and production.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Resize = Literal["letterbox", "stretch", "center_crop"]
Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR"]
#: How the first output tensor is laid out (see :mod:`cvdeploy.decode`):
#: ``yolov8`` ``(B, 4 + nc + extra, N)`` before NMS (YOLOv5u/v8/11 and later);
#: ``yolov5`` ``(B, N, 5 + nc + extra)`` with objectness; ``end2end`` ``(B, max_det, 6 + extra)`` rows
#: already through NMS (``nms=True`` exports, YOLOv10/26): x1, y1, x2, y2 (obb: cx, cy, w, h), score, class;
#: ``boxes_scores`` two outputs ``(B, N, 4)`` xyxy and ``(B, nc, N)`` scores before NMS (PicoDet-style);
#: ``classify`` ``(B, nc)``; ``raw`` no decoding.
OutputFormat = Literal["yolov8", "yolov5", "end2end", "boxes_scores", "classify", "raw"]
#: What each detection carries besides its box: nothing, a mask, keypoints, or an angle.
Task = Literal["detect", "segment", "pose", "obb", "classify", "raw"]
TASKS: tuple[str, ...] = get_args(Task)
FORMATS: tuple[str, ...] = get_args(OutputFormat)
#: Which output formats each task can be decoded from.
TASK_FORMATS: dict[str, tuple[str, ...]] = {
    "detect": ("yolov8", "yolov5", "end2end", "boxes_scores"),
    "segment": ("yolov8", "yolov5", "end2end"),
    "pose": ("yolov8", "end2end"),
    "obb": ("yolov8", "end2end"),
    "classify": ("classify",),
    "raw": ("raw",),
}
#: The tasks whose results are :class:`~cvdeploy.results.Detections` (boxes, optionally with more).
BOX_TASKS = ("detect", "segment", "pose", "obb")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputSpec(_Spec):
    """Preprocessing: image (BGR uint8) → resized, colour-converted, scaled, normalised tensor."""

    name: str = "images"
    layout: Layout = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    height: int = Field(640, ge=1, le=8192)
    width: int = Field(640, ge=1, le=8192)
    dynamic_batch: bool = False
    dynamic_shape: bool = False
    color: Color = "RGB"
    resize: Resize = "letterbox"
    pad_value: int = Field(114, ge=0, le=255)
    stride: int = Field(32, ge=1)
    scale: float = 1 / 255
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    # center_crop: the crop covers this share of the resized short side (torchvision's 224/256 = 0.875)
    crop_fraction: float = Field(1.0, gt=0.0, le=1.0)
    # decode large JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that is still at least the size the image
    # is resized to: a fraction of the decoding work, slightly different pixels than a full decode resized
    # down. Off by default; turn it on where its fidelity was measured (benchmarks/non_model.py does)
    jpeg_dct_scaling: bool = False

    @field_validator("mean", "std")
    @classmethod
    def _three(cls, v: list[float]) -> list[float]:
        if len(v) != 3:
            raise ValueError("needs exactly 3 values, one per colour channel")
        return v

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: list[float]) -> list[float]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


class OutputSpec(_Spec):
    """Decoding: raw output tensors → detections, class probabilities, or tensors as they are."""

    format: OutputFormat = "yolov8"
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.7, ge=0.0, le=1.0)
    max_det: int = Field(300, ge=1)
    max_nms: int = Field(30000, ge=1)
    agnostic_nms: bool = False
    probabilities: bool | None = None  # classify: outputs already softmaxed? None = detect at run time
    top_k: int = Field(5, ge=1)
    # pose: keypoints per detection and values per keypoint (2: x, y; 3: x, y, visibility)
    kpt_shape: list[int] | None = None

    @field_validator("kpt_shape")
    @classmethod
    def _kpt_shape(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 2 or v[0] < 1 or v[1] not in (2, 3)):
            raise ValueError("kpt_shape is [keypoints, 2 or 3] (x, y[, visibility])")
        return v


class Contract(_Spec):
    """Task, class names and the input/output specs shared by every artifact of a bundle."""

    task: Task = "detect"
    classes: list[str] = Field(default_factory=list)
    input: InputSpec = Field(default_factory=InputSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        fmt, allowed = self.output.format, TASK_FORMATS[self.task]
        if fmt not in allowed:
            raise ValueError(f"task {self.task!r} needs output format {' or '.join(allowed)}, not {fmt!r}")
        if self.task == "pose" and self.output.kpt_shape is None:
            raise ValueError("task 'pose' needs output.kpt_shape, e.g. [17, 3]")
        return self

    def digest(self) -> str:
        """sha256 of the contract's canonical JSON: the bundle's integrity check covers it like a file.

        Fields at their default are left out, so a later cvdeploy that adds a field (with a default that
        keeps the old behaviour) still verifies bundles written before it.
        """
        text = json.dumps(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_name(self, class_id: int) -> str:
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)
