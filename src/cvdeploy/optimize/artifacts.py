"""The one finishing step of every optimization: parity against FP32, an artifact record, an atomic add.

FP16, BF16, INT8 (post-training and QAT) and retrained models all end here (:func:`finish`). A
reduced-precision model cannot pass FP32 tolerances, so it is judged with its precision's tolerance
(:data:`cvdeploy.parity.TOLERANCES`): the figures are recorded and only a *broken* model is refused —
non-finite outputs, all class scores gone, cosine similarity or box agreement far below what a working
model reaches. The runtime's read-back of what it really executes is recorded with the parity. Files
are written under a temporary name in the bundle and renamed only when every check passed, so a
failure leaves the bundle as it was.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Artifact, Bundle, Parity, artifact_name
from cvdeploy.errors import BundleError, ParityError
from cvdeploy.export import batches
from cvdeploy.parity import Tolerance, check_parity, tolerance_for
from cvdeploy.runtimes import RuntimeOptions, execution_record, load_runtime

log = logging.getLogger("cvdeploy")

#: What a working optimized model always reaches; below it the model is broken, not just less exact.
LOOSE = tolerance_for("int8")


def optimized_parity(
    bundle: Bundle,
    path: Path,
    runtime: str,
    images: Sequence[np.ndarray],
    reference: str = "onnx-fp32",
    tolerance: Tolerance = LOOSE,
    precision: str = "fp32",
) -> tuple[Parity, dict[str, Any]]:
    """Parity of the model at ``path`` (run at ``precision``) against the bundle's ``reference``.

    Returns the parity record and what the runtime really executed; raises :class:`ParityError`
    naming the problem when the model is broken.
    """
    ref_rt = bundle.load_runtime(reference)
    cand_rt = load_runtime(runtime, path, RuntimeOptions(precision=precision))
    r_in, c_in = ref_rt.inputs[0].name, cand_rt.inputs[0].name
    static = cand_rt.inputs[0].static_batch or ref_rt.inputs[0].static_batch
    tensors, geoms = batches(bundle.contract, list(images), static)
    parity, problem = check_parity(
        lambda t: ref_rt.run({r_in: t}),
        lambda t: cand_rt.run({c_in: t}),
        bundle.contract,
        tensors,
        geoms,
        reference,
        tolerance,
    )
    outs = [cand_rt.run({c_in: t}) for t in tensors[:2]]
    if any(not np.all(np.isfinite(o)) for out in outs for o in out):
        problem = "; ".join(filter(None, [problem, "outputs contain NaN or infinity"]))
    if bundle.contract.task == "detect" and bundle.contract.output.format == "yolov8":
        refs = [ref_rt.run({r_in: t}) for t in tensors[:2]]
        ref_max = max(float(r[0][:, 4:].max()) for r in refs)
        out_max = max(float(o[0][:, 4:].max()) for o in outs)
        if ref_max > 0.05 and out_max < 1e-3 * ref_max:
            problem = "; ".join(
                filter(None, [problem, "every class score is zero (scores were quantized away)"])
            )
    if problem:
        hint = {
            "int8": "try --calib-method entropy or percentile, more representative --images, --per-tensor, "
            "--runtime openvino, or keep the FP32/FP16 artifact",
            "fp16": "keep the FP32 artifact, or try --bf16 where the CPU has it",
            "bf16": "keep the FP32 artifact",
        }.get(precision, "keep the FP32 artifact")
        raise ParityError(f"the optimized model is broken: {problem}; next: {hint}")
    return parity, execution_record(cand_rt)


def add_files(bundle: Bundle, art: Artifact, sources: dict[str, Path]) -> Artifact:
    """Copy ``sources`` (bundle-relative name → file) into the bundle and record ``art``.

    Each file is copied to ``<name>.partial`` first; the renames and the manifest save happen only
    after every copy succeeded. On any failure the partial files are removed.
    """
    if art.name in bundle.artifact_names:
        log.info("replacing the existing artifact %s", art.name)
    partial: list[tuple[Path, Path]] = []
    try:
        for rel, src in sources.items():
            dst = bundle.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".partial")
            shutil.copyfile(src, tmp)
            partial.append((tmp, dst))
        for tmp, dst in partial:
            tmp.replace(dst)
        return bundle.add_artifact(art, list(sources))
    except OSError as exc:
        for tmp, _ in partial:
            tmp.unlink(missing_ok=True)
        raise BundleError(f"cannot write {art.name} into {bundle.path}: {exc}") from None


@dataclass
class Finished:
    """A finished optimized model, ready to be checked and added to a bundle.

    ``files`` maps bundle-relative names (``{name}`` is replaced by the artifact's name) to the
    temporary files; the first one is the model file. ``parity``: already measured against another
    reference (a retrained model against itself in PyTorch); otherwise measured here against
    ``onnx-fp32`` on ``images`` with the precision's tolerance.
    """

    runtime: str
    precision: str
    files: dict[str, Path]
    tag: str | None = None
    images: Sequence[np.ndarray] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parity: Parity | None = None
    tolerance: Tolerance | None = None
    reference: str = "onnx-fp32"

    @property
    def name(self) -> str:
        return artifact_name(self.runtime, self.precision, self.tag)

    @property
    def model(self) -> Path:
        return next(iter(self.files.values()))


def finish(bundle: Bundle, done: Finished, say: Callable[[str], None] | None = None) -> Artifact:
    """Check ``done`` against FP32 (its precision's tolerance), record what it executes, add it atomically."""
    from cvdeploy.images import sample_images

    say = say or (lambda msg: log.info(msg))
    images = list(done.images) if done.images is not None else sample_images(8)
    vs_fp32, execution = optimized_parity(
        bundle, done.model, done.runtime, images, done.reference,
        done.tolerance or tolerance_for(done.precision), done.precision,
    )  # fmt: skip
    parity = done.parity or vs_fp32
    if done.parity is not None:
        done.details["parity_vs_fp32"] = vs_fp32.model_dump()
    name = done.name
    files = {rel.format(name=name): path for rel, path in done.files.items()}
    art = Artifact(
        name=name,
        file=next(iter(files)),
        runtime=done.runtime,
        precision=done.precision,
        made_by="optimize",
        dynamic_batch=bundle.artifact(done.reference).dynamic_batch,
        parity=parity,
        metrics=done.metrics,
        details=done.details,
        notes=list(done.notes),
        execution=execution,
    )
    agree = "n/a" if vs_fp32.box_agreement is None else f"{vs_fp32.box_agreement:.3f}"
    say(f"adding {name}: executes {execution['precision']}; vs {done.reference} cosine {vs_fp32.cosine:.4f}, "
        f"detections reproduced {agree}")  # fmt: skip
    return add_files(bundle, art, files)
