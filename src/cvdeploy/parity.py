"""Parity: how closely an artifact's outputs match a reference on the same inputs.

Three figures: the largest absolute difference (and where it is), cosine similarity of the
flattened outputs, and for detectors the share of reference detections that the candidate also
finds (IoU ≥ 0.9, same class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cvdeploy.bundle import Parity
from cvdeploy.contract import Contract
from cvdeploy.decode import Decoder
from cvdeploy.ops.boxes import box_iou
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.results import Classification, Detections, Result

RunFn = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class Tolerance:
    """Pass when ``max_abs_diff ≤ atol + rtol · max|reference|``, cosine ≥ ``min_cosine`` and
    the detection agreement ≥ ``min_agreement``."""

    atol: float = 1e-3
    rtol: float = 1e-4
    min_cosine: float = 0.9999
    min_agreement: float = 0.98


_INF = float("inf")

#: Parity tolerance per precision an artifact executes in — the one place they are stated.
#:
#: - ``fp32``: the same arithmetic up to summation order and fused kernels: outputs within 1e-3 plus
#:   1e-4 of the output scale (a 640-px box coordinate has an FP32 ulp of 6e-5), cosine ≥ 0.9999 and
#:   98 % of detections reproduced at IoU ≥ 0.9. Anything looser hides a real conversion error.
#: - ``bf16`` / ``fp16``: 8 (BF16) or 11 (FP16) mantissa bits move a 640-px coordinate by up to ~2.5
#:   (BF16) px, so no elementwise bound is meaningful: judged on outputs' direction (cosine ≥ 0.999) and
#:   on detections (85 % reproduced at IoU ≥ 0.9); their accuracy is then measured like INT8's.
#: - ``int8``: only a *broken* model is refused here (cosine < 0.9, under half the detections): how much
#:   accuracy INT8 costs is measured by mAP or fidelity against FP32, within the user's budget.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-4, min_cosine=0.9999, min_agreement=0.98),
    "bf16": Tolerance(atol=_INF, rtol=0.0, min_cosine=0.999, min_agreement=0.85),
    "fp16": Tolerance(atol=_INF, rtol=0.0, min_cosine=0.999, min_agreement=0.85),
    "int8": Tolerance(atol=_INF, rtol=0.0, min_cosine=0.9, min_agreement=0.5),
}


def tolerance_for(precision: str) -> Tolerance:
    """The parity tolerance for an artifact executing ``precision`` (mixed/unknown: INT8's)."""
    return TOLERANCES.get(precision, TOLERANCES["int8"])


def output_diff(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> dict[str, float | str]:
    """Max/mean absolute difference, cosine similarity and the location of the largest difference."""
    if len(ref) != len(out):
        return {
            "max_abs_diff": float("inf"),
            "mean_abs_diff": float("inf"),
            "cosine": 0.0,
            "where": f"{len(out)} outputs vs {len(ref)} in the reference",
            "ref_scale": 0.0,
        }
    worst, where, total, count = 0.0, "", 0.0, 0
    dots = na = nb = 0.0
    scale = 0.0
    for k, (r, o) in enumerate(zip(ref, out, strict=True)):
        r64, o64 = np.asarray(r, np.float64), np.asarray(o, np.float64)
        if r64.shape != o64.shape:
            return {
                "max_abs_diff": float("inf"),
                "mean_abs_diff": float("inf"),
                "cosine": 0.0,
                "where": f"output {k} has shape {o64.shape}, reference {r64.shape}",
                "ref_scale": 0.0,
            }
        d = np.abs(r64 - o64)
        if d.size:
            idx = np.unravel_index(int(np.argmax(d)), d.shape)
            if d[idx] > worst:
                worst = float(d[idx])
                where = f"output {k} at index {tuple(int(i) for i in idx)} (reference {r64[idx]:.6g}, got {o64[idx]:.6g})"
            total += float(d.sum())
            count += d.size
            scale = max(scale, float(np.abs(r64).max()))
        dots += float((r64 * o64).sum())
        na += float((r64 * r64).sum())
        nb += float((o64 * o64).sum())
    cosine = dots / np.sqrt(na * nb) if na > 0 and nb > 0 else float(na == nb)
    return {
        "max_abs_diff": worst,
        "mean_abs_diff": total / max(count, 1),
        "cosine": float(cosine),
        "where": where,
        "ref_scale": scale,
    }


def detection_agreement(ref: Sequence[Result], out: Sequence[Result], iou: float = 0.9) -> float | None:
    """Share of reference detections matched one-to-one by a candidate detection of the same class.

    For classifiers: share of images with the same top-1 class. ``None`` when there is nothing to
    compare (raw outputs, or no reference detections at all).
    """
    matched = total = 0
    for r, o in zip(ref, out, strict=True):
        if isinstance(r, Classification) and isinstance(o, Classification):
            total += 1
            matched += int(r.class_id == o.class_id)
        elif isinstance(r, Detections) and isinstance(o, Detections):
            total += len(r)
            if len(r) == 0 or len(o) == 0:
                continue
            ious = box_iou(r.xyxy, o.xyxy)
            ious[r.class_id[:, None] != o.class_id[None, :]] = 0.0
            used = np.zeros(len(o), bool)
            for i in np.argsort(-r.confidence, kind="stable"):
                cand = np.where(~used & (ious[i] >= iou))[0]
                if cand.size:
                    used[cand[np.argmax(ious[i, cand])]] = True
                    matched += 1
    return matched / total if total else None


def check_parity(
    reference: RunFn,
    candidate: RunFn,
    contract: Contract,
    tensors: Sequence[np.ndarray],
    geometries: Sequence[Sequence[Geometry]],
    reference_name: str = "source",
    tolerance: Tolerance | None = None,
) -> tuple[Parity, str]:
    """Run both on the same preprocessed batches; returns the parity record and a failure message
    (empty when it passed)."""
    tol = tolerance or Tolerance()
    decoder = Decoder(contract, with_masks=False)  # boxes are compared; masks follow from the raw outputs
    worst: dict[str, float | str] = {
        "max_abs_diff": 0.0,
        "mean_abs_diff": 0.0,
        "cosine": 1.0,
        "where": "",
        "ref_scale": 0.0,
    }
    means, cosines = [], []
    ref_results: list[Result] = []
    out_results: list[Result] = []
    n_images = 0
    for tensor, geoms in zip(tensors, geometries, strict=True):
        r, o = reference(tensor), candidate(tensor)
        d = output_diff(r, o)
        means.append(float(d["mean_abs_diff"]))
        cosines.append(float(d["cosine"]))
        if float(d["max_abs_diff"]) >= float(worst["max_abs_diff"]):
            worst = {**d, "ref_scale": max(float(d["ref_scale"]), float(worst["ref_scale"]))}
        else:
            worst["ref_scale"] = max(float(d["ref_scale"]), float(worst["ref_scale"]))
        n_images += tensor.shape[0]
        if contract.output.format != "raw" and np.isfinite(float(d["max_abs_diff"])):
            ref_results.extend(decoder(r, geoms))
            out_results.extend(decoder(o, geoms))
    agreement = detection_agreement(ref_results, out_results) if ref_results else None
    max_abs = float(worst["max_abs_diff"])
    allowed = tol.atol + tol.rtol * float(worst["ref_scale"])
    cosine = float(min(cosines)) if cosines else 0.0
    problems = []
    if not max_abs <= allowed:
        problems.append(f"max abs diff {max_abs:.3g} exceeds {allowed:.3g} at {worst['where']}")
    if cosine < tol.min_cosine:
        problems.append(f"cosine similarity {cosine:.6f} is below {tol.min_cosine}")
    if agreement is not None and agreement < tol.min_agreement:
        problems.append(
            f"only {agreement:.1%} of reference detections are reproduced (need {tol.min_agreement:.0%})"
        )
    parity = Parity(
        reference=reference_name,
        images=n_images,
        max_abs_diff=max_abs,
        mean_abs_diff=float(np.mean(means)) if means else 0.0,
        cosine=cosine,
        box_agreement=agreement,
        passed=not problems,
    )
    return parity, "; ".join(problems)
