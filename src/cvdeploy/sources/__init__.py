"""Importers: turn an ONNX file, a PyTorch module or an Ultralytics checkpoint into a model + contract."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

from cvdeploy.errors import InputError

SourceKind = Literal["onnx", "torch", "torchscript", "ultralytics", "bundle"]


def detect_kind(source: str) -> SourceKind:
    """Decide what kind of model ``source`` names: a file, ``python:pkg.mod:factory``, a bundle or ``zoo:NAME``."""
    if "://" in source:
        raise InputError(
            f"{source}: cvdeploy does not download models (it never reaches the network); save the file and pass its path"
        )
    if source.startswith("python:"):
        return "torch"
    if source.startswith("zoo:"):
        return "bundle"
    p = Path(source)
    if p.suffix.lower() in (".yaml", ".yml") and not p.is_dir():
        return "ultralytics"  # an Ultralytics model definition (its own cfg or a file): untrained weights
    if not p.exists():
        raise InputError(f"model not found: {source}")
    if p.is_dir():
        if (p / "cvdeploy.yaml").is_file():
            return "bundle"
        raise InputError(f"{source} is a folder but not a cvdeploy bundle (no cvdeploy.yaml)")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".torchscript", ".ts", ".jit"):
        return "torchscript"
    if suffix in (".pt", ".pth"):
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                if any(n.split("/", 2)[1:2] == ["code"] for n in zf.namelist()):
                    return "torchscript"
        return "ultralytics"
    raise InputError(
        f"cannot tell what kind of model {source} is: expected .onnx, an Ultralytics .pt checkpoint, "
        "a TorchScript file, python:pkg.module:factory, or a bundle"
    )
