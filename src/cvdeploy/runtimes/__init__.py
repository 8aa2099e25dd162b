"""Inference engines behind one interface; ``load_runtime`` picks one by name."""

from __future__ import annotations

from pathlib import Path

from cvdeploy.errors import ConfigError
from cvdeploy.runtimes.base import Runtime, RuntimeOptions, TensorInfo

RUNTIMES = ("onnxruntime", "openvino", "torch")

__all__ = ["RUNTIMES", "Runtime", "RuntimeOptions", "TensorInfo", "load_runtime"]


def load_runtime(kind: str, path: str | Path, options: RuntimeOptions | None = None) -> Runtime:
    """Load the artifact at ``path`` with the runtime named ``kind``."""
    if kind == "onnxruntime":
        from cvdeploy.runtimes.onnxruntime import OnnxRuntime

        return OnnxRuntime(path, options)
    if kind == "openvino":
        from cvdeploy.runtimes.openvino import OpenVinoRuntime

        return OpenVinoRuntime(path, options)
    if kind == "torch":
        from cvdeploy.runtimes.torch import TorchRuntime

        return TorchRuntime.from_torchscript(path, options)
    raise ConfigError(f"unknown runtime {kind!r}: use one of {', '.join(RUNTIMES)}")
