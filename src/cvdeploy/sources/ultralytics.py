"""Import an Ultralytics checkpoint (YOLOv5u/v8/11/26 …, every task) through the optional extra.

Tasks: detect, segment, pose, obb and classify, with plain and end-to-end (NMS-free) heads. The
checkpoint is unpickled by Ultralytics' own loader, which needs ``weights_only=False``: a pickle
can run arbitrary code, so only load checkpoints you trust (cvdeploy says so when it loads one).
Before that, the file is *inspected* without unpickling (the pickle's opcodes are read, not run):
a state dict or a pickled non-Ultralytics module gets advice that fits it, not Ultralytics'.

What a bundle keeps of the model — so that re-export, pruning, distillation and QAT work on it
later without the original file — is safe to load: the architecture as YAML (``model.yaml``) and
the unfused weights as a plain state dict (``weights_only=True``), see :func:`rebuild`.
"""

from __future__ import annotations

import logging
import os
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ModelError

log = logging.getLogger("cvdeploy")

#: Ultralytics' model class per task (``ultralytics.nn.tasks``).
MODEL_CLASSES = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel",
                 "obb": "OBBModel", "classify": "ClassificationModel"}  # fmt: skip


def _offline_env() -> None:
    # Ultralytics must never reach the network from cvdeploy; settings and fonts stay local.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")


@dataclass
class UltralyticsModel:
    """A loaded Ultralytics model, ready to export, and what it states about itself."""

    module: Any  # nn.Module whose forward returns the task's outputs (segment: detections and prototypes)
    task: str
    names: list[str]
    stride: int
    imgsz: int
    end2end: bool = False
    kpt_shape: list[int] | None = None
    architecture: dict[str, Any] = field(default_factory=dict)  # the model's YAML, to rebuild it
    state: dict[str, Any] | None = None  # unfused weights (a plain state dict)


def pickle_globals(path: str | Path) -> set[str]:
    """Module names a ``torch.save`` file's pickle refers to, read from its opcodes without running it."""
    p = Path(path)
    mods: set[str] = set()
    if not zipfile.is_zipfile(p):
        return mods
    with zipfile.ZipFile(p) as zf:
        for name in zf.namelist():
            if not name.endswith("data.pkl"):
                continue
            data = zf.read(name)
            strings: list[str] = []
            try:
                for op, arg, _ in pickletools.genops(data):
                    if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                        mods.add(arg.split(" ", 1)[0])
                    elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and isinstance(arg, str):
                        strings.append(arg)
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        mods.add(strings[-2])
            except Exception:  # a truncated or odd pickle: what was read so far is the answer
                pass
    return mods


def inspect_checkpoint(path: str | Path) -> str:
    """``"ultralytics"``, ``"state_dict"`` (tensors only) or ``"module"`` (a pickled non-Ultralytics model)."""
    mods = pickle_globals(path)
    if any(m == "ultralytics" or m.startswith("ultralytics.") for m in mods):
        return "ultralytics"
    code = {m for m in mods if not m.startswith(("torch", "collections", "numpy", "builtins", "_codecs"))}
    return "module" if code else "state_dict"


def load_checkpoint(path: str | Path) -> UltralyticsModel:
    """Load ``best.pt``/``yolov8n-seg.pt`` (or a model ``.yaml``, which builds untrained weights)."""
    _offline_env()
    p = str(path)
    if not p.endswith((".yaml", ".yml")):
        kind = inspect_checkpoint(p)
        if kind == "state_dict":
            raise ModelError(
                f"{p} holds only weights (a state dict), no architecture: export it as "
                f"python:your_package.module:build_model --weights {p}"
            )
        if kind == "module":
            raise ModelError(
                f"{p} is a whole pickled PyTorch module (torch.save(model)), which cvdeploy does not unpickle: save "
                "it as TorchScript (torch.jit.trace(model, x).save('model.torchscript')) or as a state dict for "
                "python:your_package.module:build_model --weights FILE"
            )
        log.warning(
            "loading %s unpickles it (weights_only=False is required for Ultralytics checkpoints): "
            "only load checkpoints you trust",
            p,
        )
    require("ultralytics", "Ultralytics checkpoints")
    from ultralytics import YOLO

    try:
        yolo = YOLO(p)
    except Exception as exc:
        raise ModelError(
            f"{p}: not a loadable Ultralytics checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    return from_yolo(yolo)


def from_yolo(yolo: Any) -> UltralyticsModel:
    """Prepare a loaded ``ultralytics.YOLO`` for export: eval mode, fused, the task's outputs only."""
    task = str(getattr(yolo, "task", "detect"))
    if task not in MODEL_CLASSES:
        raise ModelError(f"Ultralytics task {task!r} is not supported ({', '.join(MODEL_CLASSES)} are)")
    model = yolo.model
    state = {k: v.detach().clone() for k, v in model.float().state_dict().items()}
    return _prepared(model, task, state)


def _prepared(model: Any, task: str, state: dict[str, Any] | None) -> UltralyticsModel:
    names_raw = getattr(model, "names", None) or {}
    names = [str(names_raw[k]) for k in sorted(names_raw)] if isinstance(names_raw, dict) else list(names_raw)
    stride_t = getattr(model, "stride", None)
    stride = int(max(stride_t.tolist())) if stride_t is not None and hasattr(stride_t, "tolist") else 32
    args = getattr(model, "args", {}) or {}
    imgsz = args.get("imgsz", 640) if isinstance(args, dict) else 640
    imgsz = int(imgsz[0] if isinstance(imgsz, list | tuple) else imgsz)
    head = model.model[-1] if hasattr(model, "model") else None
    end2end = bool(getattr(head, "end2end", False))
    kpt = getattr(head, "kpt_shape", None)
    architecture = dict(getattr(model, "yaml", {}) or {})
    model = model.float().eval()
    if hasattr(model, "fuse"):
        try:
            model = model.fuse(verbose=False)
        except TypeError:
            model = model.fuse()
    for p in model.parameters():
        p.requires_grad_(False)
    return UltralyticsModel(
        TaskOutputs.wrap(model, task), task, names, stride if task != "classify" else 1, imgsz, end2end,
        [int(v) for v in kpt] if kpt is not None else None, architecture, state,
    )  # fmt: skip


def rebuild(
    architecture: dict[str, Any], state: dict[str, Any], task: str, names: list[str], strict: bool = True
) -> Any:
    """An Ultralytics model from its YAML architecture and a plain state dict (no unpickling), eval mode.

    An empty ``state`` with ``strict=False`` leaves the new model's initial weights (a fresh student).
    """
    _offline_env()
    require("ultralytics", "Ultralytics models")
    from ultralytics.nn import tasks

    if task not in MODEL_CLASSES:
        raise ModelError(f"cannot rebuild an Ultralytics {task!r} model")
    cls = getattr(tasks, MODEL_CLASSES[task])
    try:
        model = cls(cfg=dict(architecture), nc=len(names) or None, verbose=False)
        if state or strict:
            model.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"cannot rebuild the Ultralytics model from the bundle's source ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0]})") from None  # fmt: skip
    model.names = dict(enumerate(names))
    return model.float().eval()


class TaskOutputs:
    """Wraps an Ultralytics model so that ``forward`` returns only what a deployed model outputs.

    detect/pose/obb/classify: one tensor; segment: ``(detections, prototypes)``. For retraining,
    ``forward_raw`` gives the head's raw training outputs and ``decode`` turns them into the decoded
    ``(B, 4 + nc, N)`` layout (detect heads), so BatchNorm can learn while the loss sees boxes.
    """

    @staticmethod
    def wrap(model: Any, task: str) -> Any:
        torch = require("torch")

        class _TaskOutputs(torch.nn.Module):  # type: ignore[name-defined]
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner
                self.task = task
                self.names = list(getattr(inner, "names", {}).values()) if isinstance(
                    getattr(inner, "names", None), dict) else getattr(inner, "names", None)  # fmt: skip

            def forward(self, x: Any) -> Any:
                out = self.inner(x)
                return out[0] if isinstance(out, tuple) else out

            def forward_raw(self, x: Any) -> Any:
                return self.inner(x)

            def decode(self, raw: Any) -> Any:
                head = self.inner.model[-1]
                if not self.training:
                    return raw[0] if isinstance(raw, tuple) else raw
                if self.task != "detect" or not hasattr(head, "_inference"):
                    raise ModelError(
                        f"cannot retrain an Ultralytics {self.task} model here (detect models only)"
                    )
                preds = raw.get("one2many", raw) if isinstance(raw, dict) else raw
                return head._inference(preds)

        return _TaskOutputs(model).eval()
