"""Adding an optimized model to a bundle: parity against FP32 with loose tolerances, then an atomic add.

INT8 and FP16 cannot pass FP32 tolerances, so the figures are recorded and only a *broken* model
is refused: non-finite outputs, all class scores gone, cosine similarity or box agreement far below
what any working quantization reaches. Files are written under a temporary name in the bundle and
renamed only when every check passed, so a failure leaves the bundle as it was.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cvdeploy.bundle import Artifact, Bundle, Parity
from cvdeploy.errors import BundleError, ParityError
from cvdeploy.export import batches
from cvdeploy.parity import Tolerance, check_parity
from cvdeploy.runtimes import RuntimeOptions, load_runtime

log = logging.getLogger("cvdeploy")

#: What a working optimized model always reaches; below it the model is broken, not just less exact.
LOOSE = Tolerance(atol=float("inf"), rtol=0.0, min_cosine=0.9, min_agreement=0.5)


def optimized_parity(
    bundle: Bundle,
    path: Path,
    runtime: str,
    images: Sequence[np.ndarray],
    reference: str = "onnx-fp32",
    tolerance: Tolerance = LOOSE,
) -> Parity:
    """Parity of the model at ``path`` against the bundle's ``reference`` on BGR ``images``.

    Raises :class:`ParityError` naming the problem when the model is broken.
    """
    ref_rt = load_runtime("onnxruntime", bundle.file(reference), RuntimeOptions())
    cand_rt = load_runtime(runtime, path, RuntimeOptions())
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
        raise ParityError(f"the optimized model is broken: {problem}")
    return parity


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
