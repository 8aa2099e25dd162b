"""Check 7 — controlled dataset: the deployed model and the source on the same labelled images.

COCO mAP (:func:`cvdeploy.evaluate.metrics.coco_map`, evaluation threshold 0.001) of the deployed
pipeline and of the source on exactly the same images and tensors, per class. The source is
represented by the bundle's FP32 ONNX artifact (parity-checked against it at export, and again by
the conversion review), which runs several times faster than PyTorch; PyTorch is used only when the
bundle has no such artifact. When the source
scores well and the deployment does not, the drop is in the model or its conversion; when both
score far below what the bundle recorded on its own validation data, the drop is in the data (or
the labels).
"""

from __future__ import annotations

import time
from typing import Any

from cvdeploy.decode import Decoder
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.deployment import Reference, artifact_tampered, reference_artifact
from cvdeploy.doctor.findings import CheckResult, Finding, skipped
from cvdeploy.evaluate.metrics import coco_map
from cvdeploy.evaluate.runner import EVAL_CONF, EVAL_MAX_DET
from cvdeploy.reports.document import Table
from cvdeploy.results import Detections, Result

CHECK, TITLE = "controlled", "Controlled dataset"
MIN_DROP = 0.03  # mAP points (0-1) below which a difference is noise on a few dozen images


def run(ctx: Context) -> list[CheckResult]:
    t0 = time.perf_counter()
    res = evaluate(ctx)
    res.seconds = time.perf_counter() - t0
    return [res]


def evaluate(ctx: Context) -> CheckResult:
    if ctx.labels is None:
        return skipped(CHECK, TITLE, "needs --labels (a YOLO data.yaml or COCO json for some of the images)")
    contract = ctx.deployment.pipeline.contract
    if contract.task != "detect":
        return skipped(CHECK, TITLE, "the controlled-dataset mAP is computed for detectors")
    ref, same = _reference(ctx)
    stems = [s for s in ctx.images.stems if s in ctx.labels.boxes]
    gts = [ctx.labels.boxes[s] for s in stems]
    deployed: list[Result] = [
        ctx.passed.records[s].eval_result or ctx.passed.records[s].result for s in stems
    ]
    names = list(contract.classes)
    dep_map = coco_map(
        gts, [d for d in deployed if isinstance(d, Detections)], len(names), max_dets=EVAL_MAX_DET
    )
    details: dict[str, Any] = {"images": len(stems), "deployed": _summary(dep_map, names)}
    findings: list[Finding] = []
    line = f"on {len(stems)} labelled images mAP50-95 {dep_map['mAP50-95']:.3f} ({ctx.deployment.label})"
    if same:
        details["reference"] = {"label": "the source", **details["deployed"]}
        line += f"; {ctx.deployment.label} is the bundle's reference ONNX, parity-checked against the source at export"
    elif ref is not None:
        eval_contract = contract.model_copy(deep=True)
        eval_contract.output.conf, eval_contract.output.max_det = EVAL_CONF, EVAL_MAX_DET
        decoder = Decoder(eval_contract, [o.name for o in ctx.deployment.runtime.outputs])
        ref_results = []
        ctx.progress.begin(f"mAP of {ref.label}", len(stems))
        for s in stems:
            tensor, geoms = ctx.deployment.pipeline.preprocess([ctx.image(s)])
            ref_results.extend(
                decoder(ctx.workspace.reference_outputs(ctx.passed.records[s].path, tensor, ref), geoms)
            )
            ctx.progress.advance()
        ctx.progress.end()
        ref_map = coco_map(
            gts, [d for d in ref_results if isinstance(d, Detections)], len(names), max_dets=EVAL_MAX_DET
        )
        details["reference"] = {"label": ref.label, **_summary(ref_map, names)}
        line += f" vs {ref_map['mAP50-95']:.3f} ({ref.label})"
        drop = ref_map["mAP50-95"] - dep_map["mAP50-95"]
        if drop > max(MIN_DROP, 0.1 * ref_map["mAP50-95"]):
            worst = sorted(((v["mAP50-95"] - details["deployed"]["per_class"].get(k, {}).get("mAP50-95", 0.0), k)
                            for k, v in details["reference"]["per_class"].items()), reverse=True)[:3]  # fmt: skip
            findings.append(Finding("conversion.divergence", "critical",
                                    f"{line}: the drop ({drop:.3f}) is in the deployed model, not the data; most in "
                                    + ", ".join(f"{k} (−{d:.2f})" for d, k in worst) + ".", 0.8))  # fmt: skip
    recorded = ctx.deployment.artifact.metrics.get("mAP50-95")
    if isinstance(recorded, float | int) and not findings:
        best = max(dep_map["mAP50-95"], details.get("reference", {}).get("mAP50-95", 0.0))
        details["recorded_mAP50-95"] = recorded
        if best < 0.7 * float(recorded) and recorded - best > MIN_DROP:
            findings.append(Finding("data.drift", "warning",
                                    f"{line}, far below the {recorded:.3f} recorded on the bundle's validation data "
                                    f"({ctx.deployment.artifact.metrics.get('dataset', 'its dataset')}): the model itself "
                                    "is fine, the drop is in these images or their labels.", 0.35))  # fmt: skip
    res = CheckResult(CHECK, TITLE, "finding" if findings else "ok", line, details, findings)
    res.tables.append(_per_class(details, ctx.deployment.label))
    return res


def _reference(ctx: Context) -> tuple[Reference | None, bool]:
    """What to score beside the deployment, and whether the deployment is that reference itself.

    The FP32 ONNX artifact stands for the source (its parity with the source was checked at export, and
    the conversion review checks it again on a sample): it runs several times faster than PyTorch, which
    matters on a hundred images. The PyTorch source is used only for bundles without that artifact.
    """
    dep = ctx.deployment
    art = reference_artifact(ctx.bundle)
    if (
        art is not None
        and not dep.from_file
        and dep.artifact.name == art.name
        and artifact_tampered(dep) is None
    ):
        return None, True
    return (ctx.workspace.onnx_reference() or ctx.workspace.reference()), False


def _per_class(details: dict[str, Any], label: str) -> Table:
    dep = details["deployed"]["per_class"]
    ref = (details.get("reference") or {}).get("per_class", {})
    ref_label = (details.get("reference") or {}).get("label", "reference")
    rows = [[name, str(v["instances"]), f"{v['mAP50-95']:.3f}", f"{ref[name]['mAP50-95']:.3f}" if name in ref else "—"]
            for name, v in dep.items()]  # fmt: skip
    rows.append(["all", str(sum(v["instances"] for v in dep.values())), f"{details['deployed']['mAP50-95']:.3f}",
                 f"{details['reference']['mAP50-95']:.3f}" if "reference" in details else "—"])  # fmt: skip
    return Table(["class", "instances", f"mAP50-95 {label}", f"mAP50-95 {ref_label}"], rows,
                 title="Controlled dataset: the same labelled images through both", highlight=[len(rows) - 1])  # fmt: skip


def _summary(scores: dict[str, Any], names: list[str]) -> dict[str, Any]:
    per = {(names[k] if k < len(names) else str(k)): {"mAP50-95": round(v["mAP50-95"], 4), "instances": v["instances"]}
           for k, v in scores["per_class"].items()}  # fmt: skip
    return {"mAP50-95": round(scores["mAP50-95"], 4), "mAP50": round(scores["mAP50"], 4), "per_class": per}
