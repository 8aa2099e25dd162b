"""The bundled default detectors: a synthetic shapes dataset, a compact YOLOv8-style model, training.

Submodules are imported on demand: :mod:`~cvdeploy.zoo.dataset` needs only numpy and OpenCV, while
:mod:`~cvdeploy.zoo.model` and :mod:`~cvdeploy.zoo.train` need PyTorch.
"""

from cvdeploy.zoo.classes import CLASS_NAMES, IMGSZ, NUM_CLASSES, STRIDES

__all__ = ["CLASS_NAMES", "IMGSZ", "NUM_CLASSES", "STRIDES"]
