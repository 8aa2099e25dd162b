"""LiteRT (TensorFlow Lite): runs ``.tflite`` files through ``ai_edge_litert``'s interpreter.

LiteRT has no precision switch to pin: what a ``.tflite`` model computes in is written in its tensor
types. So :meth:`LiteRtRuntime.execution` reads it back from them — the activations that feed the
compute operators (convolutions, matrix products) are float32, float16 or 8-bit integers — and
counts the weights stored in a narrower type than they compute in (FP16 weights that a DEQUANTIZE
turns into FP32 when the model loads, INT8 weights of hybrid kernels). A model with FP16 weights
therefore executes **FP32** on a CPU: the CPU kernels dequantize the weights once and compute in FP32
(XNNPACK's FP16 mode is only forced through a delegate flag that the Python API does not expose), so
LiteRT cannot run a ``tflite-fp16`` artifact as FP16 here and :meth:`precision_unsupported` says so.

Inputs and outputs quantized to integers (full-integer models with integer I/O) are quantized and
dequantized here with the tensor's own scale and zero point, so callers always pass and get float32.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.errors import ModelError
from cvdeploy.runtimes.base import Dims, Execution, Runtime, RuntimeOptions, TensorInfo

#: Operators whose arithmetic decides what the model computes in (the rest move or reshape data).
COMPUTE_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL", "CONV_3D"}
)
_QUANTIZED = {"int8": "int8", "uint8": "int8", "int16": "int16"}


def _interpreter(content: bytes, threads: int, path: Path) -> Any:
    litert = require("ai_edge_litert.interpreter", "the LiteRT runtime")
    try:
        return litert.Interpreter(model_content=content, num_threads=threads)
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError for a bad flatbuffer
        raise ModelError(f"{path}: LiteRT cannot load this model: {exc}") from None


def model_precision(interp: Any) -> tuple[str, str]:
    """What a loaded model computes in, from its tensor types, and the evidence.

    Returns ``("int8" | "fp16" | "fp32", evidence)``: ``int8`` when a compute operator takes
    integer activations or integer weights (hybrid), ``fp16`` when it takes float16 activations,
    else ``fp32`` — FP16 *weights* dequantized to FP32 are reported as such but compute in FP32.
    """
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API lists tensors but not which operator uses them
    produced = {i for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    kinds: collections.Counter[str] = collections.Counter()
    ops_seen: collections.Counter[str] = collections.Counter()
    dequantized = collections.Counter(
        np.dtype(tensors[op["inputs"][0]]["dtype"]).name
        for op in ops
        if op["op_name"] == "DEQUANTIZE" and op["inputs"][0] in tensors
    )
    for op in ops:
        name = op["op_name"]
        if name not in COMPUTE_OPS:
            continue
        ops_seen[name] += 1
        ins = [tensors[i] for i in op["inputs"] if i >= 0 and i in tensors]
        if not ins:
            continue
        act = np.dtype(ins[0]["dtype"]).name
        weights = [np.dtype(t["dtype"]).name for t in ins[1:2] if t["index"] not in produced | graph_inputs]
        if act in _QUANTIZED:
            kinds["int8"] += 1
        elif weights and weights[0] in _QUANTIZED:
            kinds["int8 hybrid"] += 1
        elif act == "float16":
            kinds["fp16"] += 1
        else:
            kinds["fp32"] += 1
    shown = ", ".join(f"{k} {v}" for k, v in ops_seen.most_common()) or "none"
    evidence = f"compute operators ({shown}) by activation type: " + (
        ", ".join(f"{k} {v}" for k, v in kinds.most_common()) or "none"
    )
    if dequantized:
        weights_note = ", ".join(f"{v} {k}" for k, v in dequantized.most_common())
        evidence += f"; weights dequantized to float when loaded: {weights_note}"
    if kinds["int8"] or kinds["int8 hybrid"]:
        return "int8", evidence
    if kinds["fp16"]:
        return "fp16", evidence
    return "fp32", evidence


class LiteRtRuntime(Runtime):
    """A LiteRT interpreter behind the runtime interface (one interpreter per thread)."""

    name = "litert"

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        super().__init__(path, options)
        try:
            self._content = self.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{self.path}: cannot read the model ({exc.strerror})") from None
        self._threads = self.options.resolved_threads()
        self._interp = _interpreter(self._content, self._threads, self.path)
        self._lock = threading.Lock()
        self._in = self._interp.get_input_details()
        self._out = sorted(self._interp.get_output_details(), key=lambda d: d["index"])
        self._inputs = [_info(d) for d in self._in]
        self._outputs = [_info(d) for d in self._out]
        self._allocated: dict[int, tuple[int, ...]] = {}
        precision, evidence = model_precision(self._interp)
        settings = {
            "op_resolver": "AUTO (builtin kernels + default XNNPACK delegate)",
            "xnnpack_force_fp16": False,
        }
        self._execution = Execution(precision, evidence, settings, self._threads, None)
        self._check_precision()

    @staticmethod
    def read_input_dims(path: Path) -> Dims | None:
        try:
            litert = require("ai_edge_litert.interpreter", "the LiteRT runtime")
            detail = litert.Interpreter(model_path=str(path)).get_input_details()[0]
        except ModelError:
            raise
        except Exception:  # an unreadable file is reported when it is loaded for real
            return None
        sig = detail.get("shape_signature", detail["shape"])
        return tuple(int(d) if d > 0 else None for d in sig)

    @staticmethod
    def precision_unsupported(precision: str, device: str = "cpu") -> str | None:
        if precision == "fp16":
            return (
                "LiteRT's CPU kernels dequantize FP16 weights to FP32 when the model loads and compute in FP32 "
                "(XNNPACK's FP16 mode needs a delegate flag the Python API does not expose): a tflite-fp16 "
                "artifact would execute FP32 here, with tflite-fp32's numerics at half the file size"
            )
        return None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:  # an interpreter is not thread-safe; thread_copy gives each thread its own
            for detail, info in zip(self._in, self._inputs, strict=True):
                if info.name not in feeds:
                    raise ModelError(
                        f"missing input {info.name!r}; the model takes {[i.name for i in self._inputs]}"
                    )
                self._feed(detail, np.asarray(feeds[info.name]))
            self._interp.invoke()
            return [_dequantize(self._interp.get_tensor(d["index"]), d) for d in self._out]

    def _feed(self, detail: dict[str, Any], x: np.ndarray) -> None:
        idx = detail["index"]
        if self._allocated.get(idx) != x.shape:
            if tuple(detail["shape"]) != x.shape:
                try:
                    self._interp.resize_tensor_input(idx, list(x.shape), strict=True)
                except Exception as exc:
                    raise ModelError(
                        f"{self.path.name}: input {detail['name']} takes shape {list(detail['shape'])}, "
                        f"not {list(x.shape)} ({exc})"
                    ) from None
            self._interp.allocate_tensors()
            self._allocated = {idx: x.shape}
        self._interp.set_tensor(idx, _quantize(x, detail))

    def execution(self) -> Execution:
        return self._execution

    def thread_copy(self) -> Runtime:
        """Another interpreter over the same model bytes, for another thread."""
        return LiteRtRuntime(self.path, self.options)


def _info(detail: dict[str, Any]) -> TensorInfo:
    sig = detail.get("shape_signature")
    shape = sig if sig is not None and len(sig) else detail["shape"]
    dtype = np.dtype(detail["dtype"]).name
    if detail.get("quantization", (0.0, 0))[0]:  # integer I/O: the runtime (de)quantizes, callers see float
        dtype = "float32"
    return TensorInfo(str(detail["name"]), tuple(int(d) if d > 0 else None for d in shape), dtype)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return np.ascontiguousarray(x, dtype=dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and y.dtype.kind in "iu":
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return np.array(y, copy=True)  # get_tensor returns a view into the interpreter's arena
