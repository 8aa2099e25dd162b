"""FP16 ONNX: weights and activations in half precision, float32 inputs and outputs kept.

``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`` yields a model
that loads; ``onnxconverter_common``'s conversion produced a Resize type error here. Operators that
need float32 (Resize scales, range/shape arithmetic, the final reductions) are block-listed. On
CPUs without native FP16 arithmetic, ONNX Runtime inserts casts and FP16 is no faster — the
variants table says so when that is what was measured.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import BundleError, ModelError
from cvdeploy.images import sample_images
from cvdeploy.optimize.artifacts import Finished, finish

log = logging.getLogger("cvdeploy")

#: Operators kept in float32: shape/index arithmetic and ops whose FP16 kernels are missing on CPU.
FLOAT_OPS = ("Resize", "Range", "CumSum", "ReduceSum", "ReduceMean", "Softmax", "TopK", "NonMaxSuppression")


def convert_fp16(src: Path, dst: Path, block_ops: tuple[str, ...] = FLOAT_OPS) -> None:
    """Convert an FP32 ONNX file to FP16 with float32 I/O."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(block_ops))
    except Exception as exc:
        raise ModelError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from None
    onnx.save(half, str(dst))


def to_fp16(
    bundle: Bundle | str | Path, step: Callable[[str], None] | None = None, parity_count: int = 8
) -> Artifact:
    """Add ``onnx-fp16`` to the bundle, verified by parity against ``onnx-fp32``."""
    say = step or (lambda msg: log.info(msg))
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    if "onnx-fp32" not in b.artifact_names:
        raise BundleError(f"bundle {b.name!r} has no onnx-fp32 artifact to convert; re-export it")
    with tempfile.TemporaryDirectory(prefix="cvdeploy-fp16-") as tmp:
        out = Path(tmp) / "fp16.onnx"
        say("converting onnx-fp32 to FP16 (float32 inputs/outputs kept)")
        convert_fp16(b.file("onnx-fp32"), out)
        details = {
            "conversion": "onnxruntime.transformers.float16",
            "keep_io_types": True,
            "float32_ops": list(FLOAT_OPS),
        }
        done = Finished("onnxruntime", "fp16", {"{name}.onnx": out}, images=sample_images(parity_count),
                        details=details)  # fmt: skip
        return finish(b, done, say)
