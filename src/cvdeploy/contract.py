"""The contract: exactly how images become model input and how outputs become results.

Every artifact of a bundle shares one contract, and every command (predict, val, bench, serve,
doctor) builds its pipeline from it, so preprocessing can never silently differ between
evaluation and production.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Resize = Literal["letterbox", "stretch", "center_crop"]
Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR"]
OutputFormat = Literal["yolov8", "yolov5", "classify", "raw"]
Task = Literal["detect", "classify", "raw"]


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


class Contract(_Spec):
    """Task, class names and the input/output specs shared by every artifact of a bundle."""

    task: Task = "detect"
    classes: list[str] = Field(default_factory=list)
    input: InputSpec = Field(default_factory=InputSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        fmt = self.output.format
        if self.task == "detect" and fmt not in ("yolov8", "yolov5"):
            raise ValueError(f"task 'detect' needs output format yolov8 or yolov5, not {fmt!r}")
        if self.task == "classify" and fmt != "classify":
            raise ValueError(f"task 'classify' needs output format 'classify', not {fmt!r}")
        if self.task == "raw" and fmt != "raw":
            raise ValueError(f"task 'raw' needs output format 'raw', not {fmt!r}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_name(self, class_id: int) -> str:
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)
