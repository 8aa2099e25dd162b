"""Conversion to TFLite/LiteRT (``.tflite``), used by ``export --format tflite``.

The converter kept is **litert-torch** (Google's PyTorch → LiteRT converter, formerly ai-edge-torch):
measured side by side with onnx2tf by ``benchmarks/tflite_converters.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def consistent_tf32_flags(torch: Any) -> Iterator[None]:
    """Let ``torch.export`` read cuDNN's TF32 switch while cvdeploy's FP32 pins are in force.

    cvdeploy's torch reference pins ``cudnn.conv.fp32_precision = "ieee"`` with the new API;
    ``torch.export`` reads the legacy ``cudnn.allow_tf32``, which then raises ("a mix of the legacy
    and new APIs"). Setting the legacy switch to False (no TF32: still exact FP32) makes the two agree;
    the per-operator settings are restored afterwards. Conversion runs on the CPU: cuDNN is not used.
    """
    cudnn = getattr(torch.backends, "cudnn", None)
    ops = [getattr(cudnn, n, None) for n in ("conv", "rnn")]
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
