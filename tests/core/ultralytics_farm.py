"""Ultralytics models of every task, built from their yaml offline and exported by Ultralytics itself.

An untrained network predicts almost nothing worth comparing (its class-score biases are
initialised so that every score is ~0.01), so each model is "planted" first: batch-norm statistics
are re-estimated on real photographs and the class-score biases zeroed. The model then gives
varied, confident boxes, masks, keypoints and angles, which is all a decoder comparison needs —
the weights are not trained, and nothing here measures accuracy.

Files are built once per test session, lazily, and shared by every test that asks for them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

IMGSZ = 256  # small inputs keep the matrix fast; a multiple of every model's stride (32)
SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "classify": "-cls"}
VARIANTS = ("pt", "onnx", "onnx-nms", "onnx-dynamic")


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def plant(cfg: str):  # type: ignore[no-untyped-def]
    """``YOLO(cfg)`` with batch-norm statistics from real photographs and zeroed class-score biases."""
    import torch
    from ultralytics import YOLO

    from cvdeploy.contract import InputSpec
    from cvdeploy.images import sample_images
    from cvdeploy.preprocess import Preprocessor

    torch.manual_seed(0)
    yolo = YOLO(cfg)
    x, _ = Preprocessor(InputSpec(height=IMGSZ, width=IMGSZ))(sample_images(6))
    for m in yolo.model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batch
            m.reset_running_stats()
    yolo.model.train()
    with torch.no_grad():
        yolo.model(torch.from_numpy(x))
    head = yolo.model.model[-1]
    for seq in getattr(head, "cv3", []):
        seq[-1].bias.data.fill_(0.0)
    yolo.model.eval()
    return yolo


class Farm:
    """Planted checkpoints and their Ultralytics ONNX exports, made on first request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[tuple[str, str, str], Path] = {}

    def file(self, arch: str, task: str, variant: str) -> Path:
        key = (arch, task, variant)
        if key not in self._files:
            self._build(arch, task)
        return self._files[key]

    def _build(self, arch: str, task: str) -> None:
        from ultralytics import YOLO

        name = f"{arch}{SUFFIX[task]}"
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        pt = folder / f"{name}.pt"
        with _cwd(folder):
            plant(f"{name}.yaml").save(str(pt))
        self._files[(arch, task, "pt")] = pt
        for variant, kwargs in (
            ("onnx", {}),
            ("onnx-nms", {"nms": True}),
            ("onnx-dynamic", {"dynamic": True}),
        ):
            if variant == "onnx-nms" and task == "classify":
                continue  # Ultralytics has no nms=True export for classifiers
            with _cwd(folder):
                made = Path(YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ, verbose=False, **kwargs))
            target = folder / f"{name}-{variant}.onnx"
            shutil.move(str(made), target)
            self._files[(arch, task, variant)] = target
