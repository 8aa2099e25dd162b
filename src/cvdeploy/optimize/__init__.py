"""Make a bundle's model smaller and faster — and say exactly what it cost.

Each method adds an artifact to the bundle with its parity against ``onnx-fp32``, its accuracy
(mAP on labels, fidelity without) and, through the variants table, its measured latency:

- :func:`quantize_int8` — static INT8 for ONNX Runtime (QDQ, CPU-chosen types, float head,
  accuracy-aware search) or OpenVINO (NNCF, optional accuracy control);
- :func:`to_fp16` — FP16 ONNX with float32 I/O;
- :func:`prune_bundle` — structured channel pruning + recovery by distillation (PyTorch sources);
- :func:`distill_bundle` — knowledge distillation from a teacher bundle (label-free or with labels);
- :func:`qat_bundle` — quantization-aware training, then the same ONNX Runtime QDQ path as PTQ;
- :func:`auto_optimize` — all applicable methods, Pareto front and a recommendation;
- :func:`variants_table` — measure, record and report every artifact of a bundle.

Heavy libraries (ONNX Runtime quantization, NNCF, torch) are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Int8Options",
    "TrainConfig",
    "auto_optimize",
    "distill_bundle",
    "prune_bundle",
    "qat_bundle",
    "quantize_int8",
    "to_fp16",
    "variants_table",
]

if TYPE_CHECKING:
    from cvdeploy.optimize.auto import auto_optimize
    from cvdeploy.optimize.distill import TrainConfig
    from cvdeploy.optimize.fp16 import to_fp16
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.optimize.qat import qat_bundle
    from cvdeploy.optimize.retrain import distill_bundle, prune_bundle
    from cvdeploy.optimize.variants import variants_table

_WHERE = {
    "Int8Options": "cvdeploy.optimize.int8",
    "quantize_int8": "cvdeploy.optimize.int8",
    "to_fp16": "cvdeploy.optimize.fp16",
    "auto_optimize": "cvdeploy.optimize.auto",
    "variants_table": "cvdeploy.optimize.variants",
    "TrainConfig": "cvdeploy.optimize.distill",
    "prune_bundle": "cvdeploy.optimize.retrain",
    "distill_bundle": "cvdeploy.optimize.retrain",
    "qat_bundle": "cvdeploy.optimize.qat",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'cvdeploy.optimize' has no attribute {name!r}")
