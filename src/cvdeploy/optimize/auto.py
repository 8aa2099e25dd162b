"""``--auto``: try the applicable methods and runtimes, measure each, keep the Pareto front, recommend.

Every candidate is measured the same way (bench harness latency, the evaluator's accuracy); the
recommendation is the fastest variant whose end-to-end p50 is within the latency budget and whose
accuracy drop is within ``max_drop``. A method that fails is reported with its reason, never
silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy import env
from cvdeploy._deps import available
from cvdeploy.bundle import Bundle
from cvdeploy.errors import CvdeployError
from cvdeploy.optimize.int8 import Int8Options, quantize_int8
from cvdeploy.optimize.variants import Variant, variants_table

log = logging.getLogger("cvdeploy")


@dataclass
class AutoResult:
    """All variants, the Pareto front, the recommendation and what was skipped (with why)."""

    rows: list[Variant]
    pareto: list[str]
    recommended: str | None
    why: str
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pareto": self.pareto,
            "recommended": self.recommended,
            "why": self.why,
            "skipped": self.skipped,
            "variants": [r.to_dict() for r in self.rows],
        }


def accuracy_loss(row: Variant) -> float | None:
    """Points lost against FP32: the mAP drop with labels, else 100 − fidelity; None when unknown."""
    if row.drop is not None:
        return row.drop
    if row.fidelity is not None:
        return 100.0 - row.fidelity
    return 0.0 if row.artifact == "onnx-fp32" else None


def pareto(rows: Sequence[Variant]) -> list[str]:
    """Artifacts no other beats on both end-to-end p50 and accuracy loss, fastest first."""
    from cvdeploy.bench.recommend import pareto_front

    pts = [(r.artifact, r.p50_ms, -(accuracy_loss(r) or 0.0)) for r in rows if r.p50_ms is not None]
    return pareto_front(pts)


def recommend(
    rows: Sequence[Variant], budget_ms: float | None, max_drop: float, max_loss_no_labels: float
) -> tuple[str | None, str]:
    """The fastest variant within the latency budget and the accuracy budget, and why."""
    ok = []
    for r in rows:
        loss = accuracy_loss(r)
        limit = max_drop if r.drop is not None else max_loss_no_labels
        if r.p50_ms is None or loss is None or loss > limit:
            continue
        ok.append(r)
    if not ok:
        return None, "no variant has a known accuracy within the budget"
    best = min(ok, key=lambda r: r.p50_ms or float("inf"))
    loss = accuracy_loss(best) or 0.0
    if budget_ms is not None and (best.p50_ms or 0.0) > budget_ms:
        return None, (
            f"the fastest variant within the accuracy budget, {best.artifact}, needs {best.p50_ms:.1f} ms "
            f"(p50) — over the {budget_ms:g} ms budget on this machine"
        )
    within = f", within the {budget_ms:g} ms budget" if budget_ms is not None else ""
    return best.artifact, f"fastest at {best.p50_ms:.1f} ms p50{within}, losing {loss:.2f} points"


def auto_optimize(
    bundle: Bundle | str | Path,
    calib: str | Path | Sequence[str | Path],
    val: str | Path | None = None,
    budget_ms: float | None = None,
    max_drop: float = 1.0,
    min_fidelity: float = 95.0,
    fp16: bool | None = None,
    runs: int = 30,
    report_dir: Path | None = None,
    step: Callable[[str], None] | None = None,
) -> AutoResult:
    """Add INT8 (ONNX Runtime accuracy-aware, OpenVINO/NNCF), BF16 where the CPU has it natively and FP16
    where applicable; measure; recommend.

    ``fp16``: None tries FP16 only where a GPU is visible (on CPUs it is measured to gain nothing).
    """
    say = step or (lambda msg: log.info(msg))
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    skipped: dict[str, str] = {}
    opts = Int8Options(val=val, max_drop=max_drop, min_fidelity=min_fidelity)
    methods: list[tuple[str, Callable[[], Any]]] = [
        ("onnx-int8", lambda: quantize_int8(b, calib, "onnxruntime", opts, say)),
    ]
    if available("openvino") and available("nncf"):
        ov_opts = Int8Options(val=val, max_drop=max_drop, min_fidelity=min_fidelity)
        methods.append(("openvino-int8", lambda: quantize_int8(b, calib, "openvino", ov_opts, say)))
    else:
        skipped["openvino-int8"] = 'OpenVINO/NNCF not installed (pip install "cvdeploy[openvino]")'
    from cvdeploy.optimize.reduced import reduced_unsupported, to_openvino_precision

    why_not = reduced_unsupported("bf16")
    if why_not is None:  # native BF16 here: a measured candidate like any other
        methods.append(("openvino-bf16", lambda: to_openvino_precision(
            b, "bf16", say, val=val, images=calib, max_drop=max_drop, min_fidelity=min_fidelity)))  # fmt: skip
    else:
        skipped["openvino-bf16"] = why_not
    want_fp16 = bool(env.gpu_info()) if fp16 is None else fp16
    if want_fp16:
        from cvdeploy.optimize.fp16 import to_fp16

        methods.append(("onnx-fp16", lambda: to_fp16(b, say)))
    else:
        skipped["onnx-fp16"] = (
            "no GPU here: FP16 on ONNX Runtime's CPU provider inserts casts and is no faster"
        )
    for name, run in methods:
        say(f"trying {name}")
        try:
            run()
        except CvdeployError as exc:
            skipped[name] = str(exc)
            log.warning("%s failed: %s", name, exc)
    rows, _ = variants_table(b, measure=True, val=val, runs=runs, report_dir=report_dir, step=say)
    front = pareto(rows)
    rec, why = recommend(rows, budget_ms, max_drop, 100.0 - min_fidelity)
    result = AutoResult(rows, front, rec, why, skipped)
    variants_table_extra = {"recommended": rec, "why": why, "pareto": front, "skipped": skipped}
    from cvdeploy.optimize.variants import write_report

    write_report(b, rows, report_dir, variants_table_extra)
    return result
