"""TensorRT (NVIDIA GPUs, Jetson): runs serialized engines (``.engine``) built by ``export --format tensorrt``.

An engine's precision is fixed when it is built (:func:`build_engine`: FP32 with TF32 off, or FP16),
so there is nothing to pin at load time; what it executes is read back from the engine inspector
(``DETAILED`` profiling verbosity is set at build time so every layer reports its data type) and
refused by :meth:`Runtime._check_precision` when it differs from the artifact's name.

Device buffers are PyTorch CUDA tensors (TensorRT's Python API takes raw device pointers; torch is
the allocator every TensorRT user here already has). Needs an NVIDIA GPU: elsewhere
:meth:`TensorRtRuntime.precision_unsupported` says why and the tests skip with that reason.
"""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.errors import ModelError
from cvdeploy.runtimes.base import Dims, Execution, Runtime, RuntimeOptions, TensorInfo

_TYPES = {"Float": "fp32", "FP32": "fp32", "Half": "fp16", "FP16": "fp16", "Int8": "int8", "INT8": "int8",
          "BFloat16": "bf16", "BF16": "bf16"}  # fmt: skip


def gpu_missing() -> str | None:
    """Why TensorRT cannot run here (no package, no CUDA device), or None."""
    from cvdeploy._deps import available

    if not available("tensorrt"):
        return 'TensorRT is not installed (pip install "cvdeploy[tensorrt]" on a machine with an NVIDIA GPU)'
    if not available("torch"):
        return "TensorRT buffers need PyTorch with CUDA"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible: TensorRT engines run on NVIDIA GPUs (and Jetson) only"
    return None


def build_engine(
    onnx_path: Path, engine_path: Path, precision: str = "fp32", workspace_mb: int = 1024
) -> None:
    """Build a serialized engine from ONNX: ``fp32`` (TF32 off: exact FP32) or ``fp16``.

    The engine is specific to this GPU and TensorRT version; the manifest records both.
    """
    trt = require("tensorrt", "TensorRT export")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions readable afterwards
    config.clear_flag(trt.BuilderFlag.TF32)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise ModelError(f"TensorRT export builds fp32 or fp16 engines, not {precision}")
    inp = network.get_input(0)
    if any(d < 0 for d in inp.shape):  # dynamic batch: one optimisation profile, batch 1..8
        profile = builder.create_optimization_profile()
        fixed = [d if d > 0 else 1 for d in inp.shape]
        top = [d if d > 0 else 8 for d in inp.shape]
        profile.set_shape(inp.name, fixed, fixed, top)
        config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ModelError(f"TensorRT could not build an engine from {onnx_path.name} (see the log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(blob))


class TensorRtRuntime(Runtime):
    """A deserialized TensorRT engine with one execution context per thread."""

    name = "tensorrt"

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        super().__init__(path, options)
        reason = gpu_missing()
        if reason:
            raise ModelError(f"{self.path.name}: {reason}")
        trt = require("tensorrt", "the TensorRT runtime")
        self._torch = require("torch")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{self.path}: not a TensorRT engine for this GPU and TensorRT version")
        self._trt = trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._in = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self._out = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self._inputs = [self._info(n) for n in self._in]
        self._outputs = [self._info(n) for n in self._out]
        self._context = self.engine.create_execution_context()
        self._lock = threading.Lock()
        self._execution = self._read_back()
        self._check_precision()

    def _info(self, name: str) -> TensorInfo:
        shape = tuple(int(d) if d >= 0 else None for d in self.engine.get_tensor_shape(name))
        return TensorInfo(name, shape, np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))).name)

    def _read_back(self) -> Execution:
        inspector = self.engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))
        counts: collections.Counter[str] = collections.Counter()
        for layer in info.get("Layers", []):
            if not isinstance(layer, dict) or layer.get("LayerType") in ("Reformat", "NoOp", "Shuffle"):
                continue
            for t in layer.get("Outputs", []):
                fmt = str(t.get("Format/Datatype", ""))
                for key, name in _TYPES.items():
                    if key in fmt:
                        counts[name] += 1
                        break
        low = sorted(set(counts) - {"fp32"})
        precision = "+".join(low) if low else "fp32"
        shown = (
            ", ".join(f"{k} {v}" for k, v in counts.most_common())
            or "no layer information (built without DETAILED verbosity)"
        )
        torch = self._torch
        return Execution(
            precision,
            f"engine inspector, layer outputs by data type: {shown}",
            {"device": torch.cuda.get_device_name(), "tensorrt": self._trt.__version__},
            None,
            None,
        )

    @staticmethod
    def read_input_dims(path: Path) -> Dims | None:
        return None  # reading an engine needs the GPU it was built for

    @staticmethod
    def precision_unsupported(precision: str, device: str = "cpu") -> str | None:
        return gpu_missing()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        with self._lock:
            keep: list[Any] = []
            for name in self._in:
                x = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
                self._context.set_input_shape(name, tuple(x.shape))
                self._context.set_tensor_address(name, x.data_ptr())
                keep.append(x)
            outs = []
            for name in self._out:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = getattr(torch, np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))).name)
                y = torch.empty(shape, dtype=dtype, device="cuda")
                self._context.set_tensor_address(name, y.data_ptr())
                outs.append(y)
            stream = torch.cuda.current_stream()
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise ModelError(f"{self.path.name}: TensorRT execution failed")
            stream.synchronize()
            return [y.cpu().numpy() for y in outs]

    def execution(self) -> Execution:
        return self._execution

    @property
    def device_used(self) -> str:
        return f"cuda:{self._torch.cuda.current_device()}"
