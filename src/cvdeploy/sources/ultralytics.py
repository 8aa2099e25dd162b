"""Import an Ultralytics checkpoint (YOLOv5u/v8/11, detect and classify) through the optional extra.

The checkpoint is unpickled by Ultralytics' own loader, which needs ``weights_only=False``:
a pickle can run arbitrary code, so only load checkpoints you trust. cvdeploy says so when it
loads one. Export then goes through cvdeploy's own ``torch.onnx`` path, not Ultralytics' exporter.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ModelError

log = logging.getLogger("cvdeploy")


def _offline_env() -> None:
    # Ultralytics must never reach the network from cvdeploy; settings and fonts stay local.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")


@dataclass
class UltralyticsModel:
    module: Any  # nn.Module whose forward returns the decoded output tensor
    task: str
    names: list[str]
    stride: int
    imgsz: int


def load_checkpoint(path: str | Path) -> UltralyticsModel:
    """Load ``best.pt``/``yolov8n.pt`` (or a model ``.yaml``, which builds untrained weights)."""
    _offline_env()
    require("ultralytics", "Ultralytics checkpoints")
    from ultralytics import YOLO

    p = str(path)
    if not p.endswith((".yaml", ".yml")):
        log.warning(
            "loading %s unpickles it (weights_only=False is required for Ultralytics checkpoints): "
            "only load checkpoints you trust",
            p,
        )
    try:
        yolo = YOLO(p)
    except Exception as exc:
        raise ModelError(
            f"{p}: not a loadable Ultralytics checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    return from_yolo(yolo)


def from_yolo(yolo: Any) -> UltralyticsModel:
    """Prepare a loaded ``ultralytics.YOLO`` for export: eval mode, fused, first output only."""
    from cvdeploy.sources.torch import FirstOutput

    task = str(getattr(yolo, "task", "detect"))
    if task not in ("detect", "classify"):
        raise ModelError(f"Ultralytics task {task!r} is not supported yet (detect and classify are)")
    model = yolo.model
    names_raw = getattr(model, "names", None) or {}
    names = [str(names_raw[k]) for k in sorted(names_raw)] if isinstance(names_raw, dict) else list(names_raw)
    stride_t = getattr(model, "stride", None)
    stride = int(max(stride_t.tolist())) if stride_t is not None and hasattr(stride_t, "tolist") else 32
    args = getattr(model, "args", {}) or {}
    imgsz = args.get("imgsz", 640) if isinstance(args, dict) else 640
    imgsz = int(imgsz[0] if isinstance(imgsz, list | tuple) else imgsz)
    model = model.float().eval()
    if hasattr(model, "fuse"):
        try:
            model = model.fuse(verbose=False)
        except TypeError:
            model = model.fuse()
    for p in model.parameters():
        p.requires_grad_(False)
    return UltralyticsModel(FirstOutput.wrap(model), task, names, stride, imgsz)
