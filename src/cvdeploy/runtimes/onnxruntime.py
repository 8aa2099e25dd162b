"""ONNX Runtime: the default runtime, with execution-provider choice and a loud CPU fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cvdeploy.errors import ConfigError, ModelError
from cvdeploy.runtimes.base import Runtime, RuntimeOptions, TensorInfo

log = logging.getLogger("cvdeploy")

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "auto": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _shape(dims: list[object]) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, int | str) else None for d in dims)


class OnnxRuntime(Runtime):
    """An ``onnxruntime.InferenceSession`` behind the runtime interface."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        super().__init__(path, options)
        import onnxruntime as ort

        opts = self.options
        so = ort.SessionOptions()
        if opts.threads:
            so.intra_op_num_threads = int(opts.threads)
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if opts.extra.get("profile"):
            so.enable_profiling = True
            so.profile_file_prefix = str(opts.extra.get("profile_prefix", "ort_profile"))
        if opts.providers:
            requested = list(opts.providers)
        else:
            if opts.device not in _DEVICE_PROVIDERS:
                raise ConfigError(
                    f"unknown device {opts.device!r}: use one of {', '.join(_DEVICE_PROVIDERS)}"
                )
            requested = _DEVICE_PROVIDERS[opts.device]
        available = ort.get_available_providers()
        providers = [p for p in requested if p in available]
        missing = [p for p in requested if p not in available and p != "CPUExecutionProvider"]
        if not providers:
            providers = ["CPUExecutionProvider"]
        if missing and opts.device != "auto":
            log.warning(
                "requested execution provider(s) %s not available in this onnxruntime build "
                "(available: %s); running on %s",
                ", ".join(missing),
                ", ".join(available),
                providers[0],
            )
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load this model: {exc}") from None
        self.requested_providers = requested
        self.fell_back = bool(missing) and self.session.get_providers()[0] == "CPUExecutionProvider"
        self._inputs = [
            TensorInfo(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]
        self._outputs = [
            TensorInfo(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type))
            for o in self.session.get_outputs()
        ]
        self._output_names = [o.name for o in self._outputs]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self._output_names, feeds))

    @property
    def device_used(self) -> str:
        return str(self.session.get_providers()[0])

    def end_profiling(self) -> str:
        """Stop profiling and return the path of the JSON trace ONNX Runtime wrote."""
        return str(self.session.end_profiling())
