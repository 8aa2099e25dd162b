"""Constants shared by the zoo's dataset generator, model and training script."""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "IMGSZ", "NUM_CLASSES", "STRIDES"]

#: Class names of the synthetic "shapes" dataset; the index is the class id in YOLO labels.
CLASS_NAMES: list[str] = ["circle", "square", "triangle", "star", "cross", "ring"]

#: Number of classes of the bundled detectors.
NUM_CLASSES: int = len(CLASS_NAMES)

#: Output strides of the detector heads (P3, P4, P5).
STRIDES: tuple[int, int, int] = (8, 16, 32)

#: Native input size (square) of the bundled detectors and of the generated dataset.
IMGSZ: int = 640
