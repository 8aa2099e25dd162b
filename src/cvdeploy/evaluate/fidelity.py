"""Fidelity without labels: how closely one artifact reproduces another on any images.

The reference artifact's detections, at the contract's own confidence threshold (what production
would output), serve as pseudo-labels; the candidate's detections at the evaluation threshold
(0.001) are scored against them with the COCO mAP. Both artifacts see the very same preprocessed
tensor, so only the models differ. Also reported: the largest absolute difference of the raw
outputs and the box agreement (share of reference detections the candidate reproduces at IoU ≥ 0.9
with the same class, both at the contract threshold). Detections without area count on neither
side. For classifiers, fidelity is top-1 agreement.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.evaluate.datasets import list_images
from cvdeploy.evaluate.metrics import coco_map
from cvdeploy.evaluate.runner import (
    EVAL_CONF,
    EVAL_MAX_DET,
    check_batch,
    chunks,
    eval_pipeline,
    open_bundle,
    progress_bar,
    require_task,
    save_bundle,
)
from cvdeploy.images import read_image
from cvdeploy.parity import detection_agreement, output_diff
from cvdeploy.results import Classification, Detections, Result

__all__ = ["fidelity", "write_fidelity"]


def fidelity(
    bundle: Bundle | str | Path,
    data: str | os.PathLike[str],
    artifact: str | None,
    against: str,
    split: str = "val",
    images: str | os.PathLike[str] | None = None,
    batch: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    conf: float = EVAL_CONF,
    reference_conf: float | None = None,
    max_det: int = EVAL_MAX_DET,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``artifact`` (default: the bundle's default) against the ``against`` artifact on unlabelled images.

    ``data``: a folder of images, an image, or a ``data.yaml`` / COCO json whose ``split`` images
    are used (labels ignored). ``conf`` is the candidate's threshold for mAP; ``reference_conf``
    the pseudo-labels' (default: the contract's ``conf``, also used for ``box_agreement``).

    Detectors: ``mAP50-95``, ``mAP50``, ``per_class``, ``box_agreement``, ``reference_detections``;
    the mAPs and agreement are None when the reference finds nothing (nothing to agree on).
    Classifiers: ``top1_agreement`` (and ``top5_agreement``: reference top-1 within the
    candidate's top 5). Both: ``max_abs_diff``, ``mean_abs_diff``, ``cosine`` of the raw outputs,
    ``images``, ``artifact``, ``against``, ``dataset``, ``seconds``.
    """
    b = open_bundle(bundle)
    task = require_task(b, "a fidelity check")
    check_batch(batch)
    b.artifact(artifact)  # unknown names fail before any work
    b.artifact(against)
    files, source = list_images(data, images, split)
    if limit is not None:
        files = files[:limit]
    t0 = time.perf_counter()
    ref_conf = b.contract.output.conf if reference_conf is None else reference_conf
    reference = eval_pipeline(b, against, threads, device, conf=ref_conf, max_det=max_det)
    candidate = eval_pipeline(b, artifact, threads, device, conf=conf, max_det=max_det)
    cand_name = candidate.artifact.name if candidate.artifact else str(artifact)

    ref_results: list[Result] = []
    cand_results: list[Result] = []  # at the evaluation threshold
    cand_at_ref: list[Result] = []  # at the reference threshold, for agreement
    diff = _DiffStats()
    with progress_bar(len(files), f"fidelity {cand_name} vs {against}", progress) as advance:
        for chunk in chunks(files, batch):
            tensor, geoms = candidate.preprocess([read_image(f) for f in chunk])
            out_c, out_r = candidate.infer(tensor), reference.infer(tensor)
            diff.add(output_diff(out_r, out_c), len(chunk))
            ref_results.extend(_real(reference.decode(out_r, geoms)))
            cand_results.extend(_real(candidate.decode(out_c, geoms)))
            cand_at_ref.extend(_real(reference.decode(out_c, geoms)))
            advance(len(chunk))

    result: dict[str, Any] = {"bundle": b.name, "artifact": cand_name, "against": against, "task": task,
                              "dataset": source, "images": len(files)}  # fmt: skip
    if task == "classify":
        result.update(_classify_agreement(ref_results, cand_results))
    else:
        result.update(_detect_fidelity(ref_results, cand_results, cand_at_ref, b.contract.classes, max_det))
        result.update({"conf": conf, "reference_conf": ref_conf})
    result.update(diff.summary())
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _real(results: list[Result]) -> list[Result]:
    """Detections without area (boxes clipped to nothing, e.g. in letterbox padding) removed.

    They can never match anything (IoU 0), so as pseudo-labels they could not be reproduced even
    by the reference itself; they are left out on both sides.
    """
    out: list[Result] = []
    for r in results:
        if isinstance(r, Detections):
            r = r.filter((r.xyxy[:, 2] > r.xyxy[:, 0]) & (r.xyxy[:, 3] > r.xyxy[:, 1]))
        out.append(r)
    return out


def _detect_fidelity(
    ref: list[Result], cand: list[Result], cand_at_ref: list[Result], names: list[str], max_det: int
) -> dict[str, Any]:
    pseudo = [(r.xyxy, r.class_id) for r in ref if isinstance(r, Detections)]
    preds = [c for c in cand if isinstance(c, Detections)]
    n_ref = sum(len(c) for _, c in pseudo)
    out: dict[str, Any] = {"reference_detections": n_ref}
    if n_ref == 0:
        return {**out, "mAP50-95": None, "mAP50": None, "per_class": {}, "box_agreement": None}
    # every pseudo-label and prediction counts: no COCO cap of 100 below the pipeline's own max_det
    scores = coco_map(pseudo, preds, num_classes=len(names), max_dets=max(max_det, 100))
    per_class = {(names[k] if k < len(names) else str(k)): v for k, v in scores["per_class"].items()}
    return {**out, "mAP50-95": scores["mAP50-95"], "mAP50": scores["mAP50"], "per_class": per_class,
            "box_agreement": detection_agreement(ref, cand_at_ref)}  # fmt: skip


def _classify_agreement(ref: list[Result], cand: list[Result]) -> dict[str, Any]:
    pairs = [(r, c) for r, c in zip(ref, cand, strict=True)
             if isinstance(r, Classification) and isinstance(c, Classification)]  # fmt: skip
    if not pairs:
        return {"top1_agreement": None, "top5_agreement": None}
    top1 = np.mean([r.class_id == c.class_id for r, c in pairs])
    top5 = np.mean([r.class_id in np.argsort(-c.probs, kind="stable")[:5] for r, c in pairs])
    return {"top1_agreement": float(top1), "top5_agreement": float(top5)}


class _DiffStats:
    """Raw-output differences accumulated over batches: worst max, image-weighted mean, lowest cosine."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.where = ""
        self.total = 0.0
        self.images = 0
        self.cosine = 1.0

    def add(self, d: dict[str, float | str], images: int) -> None:
        if float(d["max_abs_diff"]) >= self.max_abs:
            self.max_abs, self.where = float(d["max_abs_diff"]), str(d["where"])
        self.total += float(d["mean_abs_diff"]) * images
        self.images += images
        self.cosine = min(self.cosine, float(d["cosine"]))

    def summary(self) -> dict[str, Any]:
        finite = bool(np.isfinite(self.max_abs))
        return {
            "max_abs_diff": self.max_abs if finite else None,
            "mean_abs_diff": self.total / self.images if finite and self.images else None,
            "cosine": self.cosine,
            "max_diff_at": self.where,
        }


def write_fidelity(bundle: Bundle, result: dict[str, Any]) -> Artifact:
    """Record a :func:`fidelity` result under the artifact's ``metrics["fidelity"]`` and save the manifest."""
    art = bundle.artifact(result["artifact"])
    keys = ("mAP50-95", "mAP50", "box_agreement", "top1_agreement", "max_abs_diff")
    art.metrics["fidelity"] = {"against": result["against"], "dataset": result["dataset"], "images": result["images"],
                               **{k: result[k] for k in keys if k in result}}  # fmt: skip
    save_bundle(bundle)
    return art
