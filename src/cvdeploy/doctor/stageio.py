"""Check 6 — stage I/O log: every stage's input and output, checked for what should never be there.

The contract pass keeps every stage of a sample of images (image, tensor, raw outputs, decoded
results) and the health of every image (:class:`~cvdeploy.doctor.passes.Health`). Flagged: NaN or
infinity in any stage (with the first node that produces it, for ONNX models); a constant or
all-zero output; class scores saturated at 1; candidate boxes outside the model input. With
``--keep-io DIR`` the captures are written for the user to inspect: ``STEM.image.png``,
``STEM.tensor.npy``, ``STEM.output<k>.npy``, ``STEM.result.json`` and an ``index.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cvdeploy.doctor.context import Context
from cvdeploy.doctor.findings import CheckResult, Finding
from cvdeploy.doctor.layers import first_nonfinite_node
from cvdeploy.errors import InputError
from cvdeploy.results import Result

CHECK, TITLE = "stage_io", "Stage I/O log"
SATURATED_SHARE = 0.2  # of anchors with a class score ≥ 0.999


def _result_json(res: Result) -> Any:
    return res.to_list()


def keep_io(ctx: Context, folder: Path) -> Path:
    """Write the captured stages of the sampled images into ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--keep-io {folder}: cannot create it ({exc.strerror or exc})") from None
    index = []
    for c in ctx.passed.captures:
        cv2.imwrite(str(folder / f"{c.stem}.image.png"), c.image)
        np.save(folder / f"{c.stem}.tensor.npy", c.tensor)
        for k, o in enumerate(c.outputs):
            np.save(folder / f"{c.stem}.output{k}.npy", o)
        (folder / f"{c.stem}.result.json").write_text(json.dumps(_result_json(c.result)), encoding="utf-8")
        index.append(
            {
                "image": c.stem,
                "tensor_shape": list(c.tensor.shape),
                "outputs": [list(o.shape) for o in c.outputs],
            }
        )
    (folder / "index.json").write_text(
        json.dumps({"deployment": ctx.deployment.label, "captures": index}, indent=1)
    )
    return folder


def run(ctx: Context, keep: Path | None = None) -> list[CheckResult]:
    t0 = time.perf_counter()
    records = list(ctx.passed.records.values())
    n = len(records)
    stages: dict[str, list[str]] = {}
    for r in records:
        for stage, count in r.health.nonfinite.items():
            if count:
                stages.setdefault(stage, []).append(r.stem)
    notes: list[str] = []
    constant = [r.stem for r in records if r.health.constant_output]
    if constant:
        notes.append(
            f"the model's output is constant for {len(constant)} of {n} images (e.g. {constant[0]!r})"
        )
    saturated = [r.stem for r in records if r.health.saturated_share >= SATURATED_SHARE]
    if saturated:
        notes.append(f"class scores saturate at 1 on ≥{SATURATED_SHARE:.0%} of the anchors for {len(saturated)} images "
                     "(inputs far out of the trained range?)")  # fmt: skip
    oob = sum(r.health.out_of_range for r in records)
    if oob:
        notes.append(f"{oob} candidate boxes lie outside the model input")
    details: dict[str, Any] = {"images": n, "captured": len(ctx.passed.captures), "nonfinite": {k: len(v) for k, v in stages.items()},
                               "anomalies": notes}  # fmt: skip
    if keep is not None:
        details["kept"] = str(keep_io(ctx, keep))
    findings: list[Finding] = []
    if stages:
        first = next(s for s in ("tensor", "output", "detections") if s in stages)
        stems = stages[first]
        where = {"tensor": "the preprocessed tensor", "output": "the model's raw output",
                 "detections": "the decoded results"}[first]  # fmt: skip
        evidence = (
            f"NaN or infinity first appears in {where} for {len(stems)} of {n} images (e.g. {stems[0]!r})"
        )
        node = _locate(ctx, stems[0]) if first == "output" else None
        if node:
            evidence += f"; the first node of {ctx.deployment.label} to produce it is {node[0]} ({node[1]})"
            details["first_nonfinite_node"] = {"node": node[0], "op_type": node[1]}
        fix = (
            (
                "check that node's weights and inputs (a NaN/inf weight, a division by zero, FP16 overflow); "
                "re-export from the source"
            )
            if first == "output"
            else ""
        )
        findings.append(Finding("numerics.nonfinite", "critical", evidence + ".", 0.96, fix=fix))
    summary = ("NaN/inf in " + ", ".join(stages) if stages else f"every stage finite on {n} images") + (
        f"; note: {'; '.join(notes)}" if notes else "; outputs vary and stay in range"
    )
    res = CheckResult(CHECK, TITLE, "finding" if findings else "ok", summary, details, findings)
    res.seconds = time.perf_counter() - t0
    return [res]


def _locate(ctx: Context, stem: str) -> tuple[str, str] | None:
    path = ctx.deployment.onnx_path
    if path is None:
        return None
    img = ctx.image(stem)
    tensor, _ = ctx.deployment.pipeline.preprocess([img])
    return first_nonfinite_node(path, tensor)
