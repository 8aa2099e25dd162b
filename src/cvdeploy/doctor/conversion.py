"""Check 4 — export/conversion review: does the deployed model compute what the source computes?

1. Integrity: the artifact's files against their recorded sha256; a ``--model`` against the
   reference ONNX weight by weight (same names: an edited or re-saved copy).
2. Outputs: the deployed model and the reference (the PyTorch source when it can be rebuilt,
   else the FP32 ONNX artifact parity-checked against it at export) on the same contract tensors —
   largest difference, cosine, share of the reference's detections reproduced — judged with the
   parity tolerance of the precision the model executes (:data:`cvdeploy.parity.TOLERANCES`).
3. Layers (both ONNX): where the divergence starts and which tensors are worst
   (:mod:`cvdeploy.doctor.layers`), and the likely cause: a changed weight, quantised
   detection-head/decode nodes (:func:`cvdeploy.optimize.head.find_head_decode`), FP16 range
   (reference activations beyond 65504), or a dropped operator.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.doctor import figures
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.deployment import artifact_tampered
from cvdeploy.doctor.findings import CheckResult, FigureFn, Finding, skipped
from cvdeploy.doctor.layers import LayerReport, compare_layers, op_counts, weight_changes
from cvdeploy.parity import detection_agreement, output_diff, tolerance_for
from cvdeploy.reports.document import Figure
from cvdeploy.results import Result

CHECK, TITLE = "conversion", "Export/conversion review"
LAYER_IMAGES = 2
FP16_MAX = 65504.0
_IGNORED_OPS = {"QuantizeLinear", "DequantizeLinear", "Cast", "Identity", "Constant"}


def _outputs(ctx: Context) -> dict[str, Any]:
    """Deployed vs reference outputs on the sampled contract tensors."""
    ref = ctx.workspace.reference()
    assert ref is not None
    dep = ctx.deployment
    worst: dict[str, Any] = {"max_abs_diff": 0.0, "where": ""}
    cosines, means = [], []
    ref_res: list[Result] = []
    dep_res: list[Result] = []
    decoder = dep.pipeline.decoder
    for c in ctx.passed.captures:
        r = ctx.workspace.reference_outputs(ctx.passed.records[c.stem].path, c.tensor)
        d = output_diff(r, c.outputs)
        cosines.append(float(d["cosine"]))
        means.append(float(d["mean_abs_diff"]))
        if not float(d["max_abs_diff"]) <= float(worst["max_abs_diff"]):
            worst = {"max_abs_diff": float(d["max_abs_diff"]), "where": d["where"]}
        if dep.pipeline.contract.task == "detect" and np.isfinite(float(d["max_abs_diff"])):
            _, geoms = dep.pipeline.preprocess([c.image])
            ref_res.extend(decoder(r, geoms))
            dep_res.append(c.result)
    agreement = detection_agreement(ref_res, dep_res) if ref_res else None
    scale = max(
        (float(np.abs(o).max()) for c in ctx.passed.captures for o in c.outputs if o.size), default=0.0
    )
    return {"max_abs_diff": worst["max_abs_diff"], "where": worst["where"], "cosine": min(cosines, default=1.0),
            "mean_abs_diff": float(np.mean(means)) if means else 0.0, "agreement": agreement,
            "images": len(ctx.passed.captures), "scale": scale}  # fmt: skip


def _head_quantized(ref_path: Path, cand_path: Path) -> list[str]:
    """Tensors of the reference's box-decode head that the candidate quantises (QuantizeLinear inputs)."""
    import onnx

    from cvdeploy.optimize.head import ensure_node_names, find_head_decode

    ref = onnx.load(str(ref_path), load_external_data=False)
    ensure_node_names(ref)
    head = set(find_head_decode(ref).nodes)
    head_tensors = {o for n in ref.graph.node if n.name in head for o in n.output}
    cand = onnx.load(str(cand_path), load_external_data=False)
    return sorted(
        {n.input[0] for n in cand.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in head_tensors}
    )


def _fp16_overflow(ref_path: Path, tensor: np.ndarray) -> list[tuple[str, float]]:
    """Reference tensors whose magnitude exceeds the FP16 range on ``tensor``."""
    import onnx

    from cvdeploy.doctor.layers import producers, session_with_outputs

    model = onnx.load(str(ref_path))
    prods = producers(model)
    sess = session_with_outputs(model, [t for t, _, _ in prods])
    outs = sess.run(None, {sess.get_inputs()[0].name: tensor})
    big = []
    for o, v in zip(sess.get_outputs(), outs, strict=True):
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and v.size:
            m = float(np.nanmax(np.abs(v)))
            if m > FP16_MAX:
                big.append((o.name, m))
    return sorted(big, key=lambda x: -x[1])[:5]


def run(ctx: Context) -> list[CheckResult]:
    t0 = time.perf_counter()
    res = review(ctx)
    res.seconds = time.perf_counter() - t0
    return [res]


def review(ctx: Context) -> CheckResult:
    dep = ctx.deployment
    ref = ctx.workspace.reference()
    if ref is None:
        return skipped(
            CHECK, TITLE, "the bundle has neither a PyTorch source nor an FP32 ONNX artifact to compare with"
        )
    details: dict[str, Any] = {"reference": ref.label, "deployed": dep.label}
    causes: list[str] = []
    tampered = artifact_tampered(dep)
    if tampered:
        causes.append(
            f"{tampered} no longer matches the sha256 recorded at export: the file was modified (a changed weight)"
        )
    same_file = ref.onnx_path is not None and dep.model_path.resolve() == ref.onnx_path.resolve()
    if same_file and not ref.is_source and not tampered:
        parity = dep.artifact.parity
        note = (
            f" (max abs diff {parity.max_abs_diff:.2g}, agreement {parity.box_agreement})" if parity else ""
        )
        return CheckResult(CHECK, TITLE, "ok", f"the deployed model is the bundle's reference ONNX, checked against "
                           f"the source at export{note}", details)  # fmt: skip
    precision = dep.runtime.execution().precision
    tol = tolerance_for(precision)
    out = _outputs(ctx)
    details["outputs"] = {
        k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in out.items()
    }
    details["precision"] = precision
    allowed = tol.atol + tol.rtol * out["scale"]
    agreement = out["agreement"]
    beyond = (not out["max_abs_diff"] <= allowed) or out["cosine"] < tol.min_cosine or (
        agreement is not None and agreement < tol.min_agreement)  # fmt: skip
    layers: LayerReport | None = None
    figs: list[FigureFn] = []
    cand_onnx = dep.onnx_path
    if ref.onnx_path is not None and cand_onnx is not None and not same_file:
        tensors = [c.tensor for c in ctx.passed.captures[:LAYER_IMAGES]]
        layers = compare_layers(ref.onnx_path, cand_onnx, tensors, reduced=precision != "fp32")
        details["layers"] = layers.to_dict()
        changed, n_changed = weight_changes(ref.onnx_path, cand_onnx)
        if n_changed:
            causes.append(f"{n_changed} weight tensor(s) differ from the reference's: {', '.join(changed)}")
        head_q = _head_quantized(ref.onnx_path, cand_onnx)
        if head_q:
            causes.append(f"{len(head_q)} tensors of the box-decode head are quantised (e.g. {head_q[0]}): boxes in "
                          "pixels and 0-1 scores cannot share an INT8 scale")  # fmt: skip
        if precision == "fp16" and tensors:
            over = _fp16_overflow(ref.onnx_path, tensors[0])
            if over:
                causes.append(
                    f"FP16 range: reference activations reach {over[0][1]:.3g} at {over[0][0]} (FP16 max 65504)"
                )
        if precision == "fp32":  # FP16/INT8 conversions legitimately add and remove operators
            r_ops, c_ops = op_counts(ref.onnx_path), op_counts(cand_onnx)
            dropped = {
                op: n - c_ops.get(op, 0)
                for op, n in r_ops.items()
                if op not in _IGNORED_OPS and c_ops.get(op, 0) < n
            }
            if dropped:
                causes.append("operators dropped: " + ", ".join(f"{op} ×{n}" for op, n in dropped.items()))
        compared = layers
        onnx_name = ref.onnx_path.name
        figs = [lambda: _layer_figure(compared, dep.label, onnx_name)]
    agree_txt = f", reproduces {agreement:.0%} of its detections" if agreement is not None else ""
    summary = (f"{dep.label} (executing {precision}) vs {ref.label}: max abs diff {out['max_abs_diff']:.3g}, cosine "
               f"{out['cosine']:.5f}{agree_txt} on {out['images']} images")  # fmt: skip
    noticeable = agreement is not None and agreement < 0.95
    if not (beyond or causes or noticeable):
        return CheckResult(
            CHECK, TITLE, "ok", summary + f" — within the {precision} tolerance", details, figures=figs
        )
    evidence = summary + ("; beyond the " + precision + " tolerance" if beyond else "") + "."
    if layers is not None and layers.first_jump is not None:
        j = layers.layers[layers.first_jump]
        evidence += (f" Layer by layer against {ref.onnx_path.name if ref.onnx_path else 'the reference'} "
                     f"({layers.aligned_by}-aligned), the error starts at {j.node} ({j.op_type}, SQNR {j.sqnr_db:.0f} dB)")  # fmt: skip
        worst = ", ".join(f"{e.node} {e.sqnr_db:.0f} dB" for e in layers.worst(3))
        evidence += f"; worst: {worst}."
    if causes:
        evidence += " Likely cause: " + "; ".join(causes) + "."
    critical = (
        beyond
        or bool(causes and (agreement is None or agreement < 0.95))
        or (agreement is not None and agreement < 0.8)
    )
    score = (0.85 if critical else 0.4) + (0.1 if causes else 0.0)
    fix = ("restore the exported file or re-export (cvdeploy export), which checks parity against the source"
           if tampered or any("weight" in c for c in causes) else
           "keep the box-decode head in float (cvdeploy optimize --int8 does)" if any("head" in c for c in causes) else
           "keep the overflowing layers in FP32 or use BF16/INT8" if any("FP16" in c for c in causes) else "")  # fmt: skip
    finding = Finding(
        "conversion.divergence", "critical" if critical else "warning", evidence, score, fix=fix
    )
    return CheckResult(CHECK, TITLE, "finding", summary, details, [finding], figs)


def _layer_figure(layers: LayerReport | None, cand: str, ref: str) -> list[Figure]:
    if layers is None or not layers.layers:
        return []
    png = figures.layer_curve([e.position for e in layers.layers], [e.sqnr_db for e in layers.layers],
                              [e.node for e in layers.layers], layers.first_jump, f"{cand} vs {ref}, layer by layer")  # fmt: skip
    return [Figure("Per-layer error along the graph", png, "SQNR of every aligned intermediate tensor; "
                   "the dashed line marks where the divergence starts")] if png else []  # fmt: skip
