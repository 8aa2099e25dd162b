"""Reduced-precision OpenVINO variants (``openvino-bf16``, ``openvino-fp16``) as explicit, measured artifacts.

The IR is the FP32 one; the precision is what OpenVINO is told to execute when compiling
(``INFERENCE_PRECISION_HINT``), and is read back after compiling like every artifact's. A precision
the hardware does not do natively is refused before any work: OpenVINO would emulate it slowly or
run something else. Parity against ``onnx-fp32`` is judged with the precision's tolerance, and the
accuracy (mAP on labels, fidelity without) is measured and recorded as for INT8.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import BundleError, PrecisionError
from cvdeploy.images import sample_images
from cvdeploy.optimize.artifacts import Finished, finish
from cvdeploy.optimize.scoring import make_scorer, record_accuracy, single_source
from cvdeploy.runtimes.registry import engine

log = logging.getLogger("cvdeploy")

#: Precisions this module adds, per engine.
REDUCED = ("bf16", "fp16")


def reduced_unsupported(precision: str, device: str = "cpu") -> str | None:
    """Why ``openvino-<precision>`` cannot run here, or None when it can."""
    ov = engine("openvino")
    if not ov.available():
        return 'OpenVINO is not installed (pip install "cvdeploy[openvino]")'
    return ov.unsupported(precision, device)


def to_openvino_precision(
    bundle: Bundle | str | Path,
    precision: str,
    step: Callable[[str], None] | None = None,
    val: str | Path | None = None,
    images: str | Path | Sequence[str | Path] | None = None,
    max_drop: float = 1.0,
    min_fidelity: float = 95.0,
    eval_limit: int | None = None,
    parity_count: int = 8,
) -> Artifact:
    """Add ``openvino-<precision>`` (``bf16`` or ``fp16``), checked against ``onnx-fp32`` and scored.

    ``val``: labels for mAP50-95 (drop within ``max_drop`` points); else ``images`` for fidelity
    (mAP50 against FP32's detections, at least ``min_fidelity``). Refused with one line where the
    CPU has no native arithmetic for ``precision``.
    """
    from cvdeploy.export import onnx_to_openvino

    say = step or (lambda msg: log.info(msg))
    if precision not in REDUCED:
        raise PrecisionError(f"--{precision}: OpenVINO reduced-precision variants are {', '.join(REDUCED)}")
    why = reduced_unsupported(precision)
    if why:
        raise PrecisionError(f"--{precision}: {why}; --int8 is the faster variant on this CPU")
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    if "onnx-fp32" not in b.artifact_names:
        raise BundleError(f"bundle {b.name!r} has no onnx-fp32 artifact to convert; re-export it")
    with tempfile.TemporaryDirectory(prefix=f"cvdeploy-{precision}-") as tmp:
        work = Path(tmp)
        xml = work / "model.xml"
        if "openvino-fp32" in b.artifact_names:
            src = b.file("openvino-fp32")
            shutil.copyfile(src, xml)
            shutil.copyfile(src.with_suffix(".bin"), xml.with_suffix(".bin"))
            origin = "the openvino-fp32 IR"
        else:
            say("converting onnx-fp32 to OpenVINO IR")
            onnx_to_openvino(b.file("onnx-fp32"), xml)
            origin = "onnx-fp32, converted"
        from cvdeploy.runtimes.openvino import HINTS

        details: dict[str, Any] = {
            "ir": f"{origin}; FP32 weights — the precision is set when compiling",
            "inference_precision_hint": HINTS[precision],
        }
        metrics: dict[str, Any] = {}
        scorer = make_scorer(b, val, single_source(images), eval_limit, details)
        if scorer is not None:
            say(f"scoring {precision.upper()} against FP32 ({scorer.mode})")
            baseline = scorer.baseline()
            score = scorer(xml, "openvino", precision)
            budget = max_drop if val is not None else 100.0 - min_fidelity
            drop = baseline - score
            say(f"{precision.upper()} {scorer.mode} {score:.2f} vs FP32 {baseline:.2f} (drop {drop:.2f})")
            record_accuracy(metrics, scorer, baseline, score, drop, drop <= budget, budget)
        done = Finished("openvino", precision, {"{name}/model.xml": xml, "{name}/model.bin": xml.with_suffix(".bin")},
                        images=sample_images(parity_count), metrics=metrics, details=details)  # fmt: skip
        return finish(b, done, say)
