"""Conversion to TFLite/LiteRT (``.tflite``), used by ``export --format tflite``.

The converter kept is **litert-torch** (Google's PyTorch → LiteRT converter, formerly ai-edge-torch),
measured side by side with onnx2tf by ``benchmarks/tflite_converters.py`` on the same PyTorch modules
through the same LiteRT runtime (max abs diff against PyTorch; cosine; detections found again):

    zoo:n 640      litert-torch 4.9e-4, 1.0000000, 1.000   onnx2tf 5.7e-4, 1.0000000, 1.000
    YOLOv8n 320    litert-torch 1.4e-2, 1.0000000, 0.999   onnx2tf 1.4e-2, 1.0000000, 0.999

Parity is equal or better, conversion 2-4x faster, and litert-torch needs no TensorFlow; onnx2tf
pins numpy 1.26, onnx 1.19, onnxruntime 1.23 and tensorflow 2.19 exactly, which cannot coexist with
cvdeploy's own dependencies. TFLite conversion therefore needs a PyTorch source (ONNX files cannot
go through litert-torch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ModelError


@contextlib.contextmanager
def consistent_tf32_flags(torch: Any) -> Iterator[None]:
    """Let ``torch.export`` read cuDNN's TF32 switch while cvdeploy's FP32 pins are in force.

    cvdeploy's torch reference pins ``cudnn.conv.fp32_precision = "ieee"`` with the new API;
    ``torch.export`` reads the legacy ``cudnn.allow_tf32``, which then raises ("a mix of the legacy
    and new APIs"). Setting the legacy switch to False (no TF32: still exact FP32) makes the two agree;
    the per-operator settings are restored afterwards. Conversion runs on the CPU: cuDNN is not used.
    """
    cudnn: Any = getattr(torch.backends, "cudnn", None)
    ops: list[Any] = [getattr(cudnn, n, None) for n in ("conv", "rnn")]
    if cudnn is None or not all(hasattr(o, "fp32_precision") for o in ops):
        yield
        return
    before = [o.fp32_precision for o in ops]
    try:
        cudnn.allow_tf32 = False
        yield
    finally:
        for o, v in zip(ops, before, strict=True):
            o.fp32_precision = v


#: How ``tflite-int8`` is quantized, recorded in the artifact's details.
INT8_METHOD = (
    "dynamic range (ai-edge-quantizer dynamic_wi8_afp32): INT8 weights, activations quantized per inference by "
    "LiteRT's hybrid kernels; static full-INT8 was measured at 0% of zoo:n's detections (one INT8 scale for the "
    "head's pixel boxes and 0-1 scores zeroes the scores)"
)


def torch_to_tflite(module: Any, path: Path, height: int, width: int) -> None:
    """Convert an ``nn.Module`` taking ``(1, 3, height, width)`` to an FP32 ``.tflite`` (litert-torch).

    The module is deep-copied first: tracing can leave state (cached anchors) on it, and the caller
    still runs the original as the parity reference.
    """
    import copy

    torch = require("torch", "TFLite export")
    litert_torch = require("litert_torch", "TFLite export")
    sample = torch.zeros(1, 3, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with consistent_tf32_flags(torch), torch.inference_mode(False):
            litert_torch.convert(copy.deepcopy(module).eval(), (sample,)).export(str(path))
    except Exception as exc:
        raise ModelError(
            f"TFLite conversion (litert-torch) failed: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None


def quantize_int8(src: Path, dst: Path) -> None:
    """INT8 weights with dynamic-range activations (see :data:`INT8_METHOD`)."""
    aq = require("ai_edge_quantizer", "TFLite INT8 quantization")
    from ai_edge_quantizer import recipe

    try:
        qt = aq.quantizer.Quantizer(str(src))
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        qt.quantize().export_model(str(dst), overwrite=True)
    except Exception as exc:
        raise ModelError(f"TFLite INT8 quantization failed: {type(exc).__name__}: {str(exc)[:300]}") from None
