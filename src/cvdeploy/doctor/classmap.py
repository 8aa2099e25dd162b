"""Check 3 — class mapping: boxes that match well but carry systematically other class ids.

Boxes are paired whatever their class (IoU ≥ 0.7 between the contract's detections and the
observed ones; ≥ 0.5 between ground truth and the contract's detections), counted in a confusion
matrix, and the permutation that agrees with most pairs is found by optimal assignment
(``scipy.optimize.linear_sum_assignment``). A permutation that agrees with far more pairs than the
identity, on enough pairs, is a class mapping problem; the mapping is printed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.doctor import figures
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.findings import CheckResult, FigureFn, Finding, Verdict, skipped
from cvdeploy.doctor.matching import class_pairs
from cvdeploy.reports.document import Figure
from cvdeploy.results import Detections

CHECK, TITLE = "class_mapping", "Class mapping"
MIN_PAIRS = 8
MIN_GAIN = 0.3  # the permutation must agree with this much more of the pairs than the identity
MIN_AGREEMENT = 0.7


def best_permutation(
    pairs: list[tuple[int, int]], nc: int
) -> tuple[dict[int, int], float, float, np.ndarray]:
    """``(mapping row→col where it differs, agreement under the identity, under the best permutation, matrix)``."""
    n = max([nc, *(a + 1 for a, _ in pairs), *(b + 1 for _, b in pairs)])
    m = np.zeros((n, n), np.int64)
    for a, b in pairs:
        m[a, b] += 1
    opt = require("scipy.optimize", "doctor's class-mapping check")
    rows, cols = opt.linear_sum_assignment(-m)
    total = max(1, int(m.sum()))
    perm = int(m[rows, cols].sum()) / total
    ident = int(np.trace(m)) / total
    mapping = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if r != c and m[r, c] > 0}
    return mapping, ident, perm, m


def _judge(pairs: list[tuple[int, int]], names: list[str], source: str, them: str) -> tuple[dict[str, Any], Finding | None, np.ndarray]:  # fmt: skip
    mapping, ident, perm, m = best_permutation(pairs, len(names))

    def name(k: int) -> str:
        return f"{names[k]!r} ({k})" if 0 <= k < len(names) else str(k)

    details = {"pairs": len(pairs), "identity_agreement": round(ident, 4), "best_agreement": round(perm, 4),
               "mapping": {name(a): name(b) for a, b in sorted(mapping.items())}}  # fmt: skip
    if len(pairs) < MIN_PAIRS or perm - ident < MIN_GAIN or perm < MIN_AGREEMENT:
        return details, None, m
    shown = ", ".join(f"{name(a)} → {name(b)}" for a, b in sorted(mapping.items())[:8])
    more = f" and {len(mapping) - 8} more" if len(mapping) > 8 else ""
    evidence = (f"{source}: of {len(pairs)} boxes that match, {ident:.0%} carry the same class id and {perm:.0%} "
                f"follow one permutation — model class → {them}: {shown}{more}.")  # fmt: skip
    score = min(0.97, 0.5 + 0.5 * (perm - ident))
    fix = "translate class ids by name with the bundle's class list (cvdeploy inspect shows it); " + (
        "the labels were written with another class order — fix names in data.yaml"
        if them == "label"
        else "the deployment decodes ids with another class list"
    )
    return details, Finding("labels.class_mapping", "critical", evidence, score, fix=fix), m


def run(ctx: Context) -> list[CheckResult]:
    t0 = time.perf_counter()
    contract = ctx.deployment.pipeline.contract
    if contract.task != "detect":
        return [skipped(CHECK, TITLE, "class mapping is checked for detectors")]
    if ctx.observed is None and ctx.labels is None:
        return [skipped(CHECK, TITLE, "needs --observed or --labels")]
    names = list(contract.classes)
    findings: list[Finding] = []
    details: dict[str, Any] = {}
    figs: list[FigureFn] = []
    stems = ctx.images.stems
    if ctx.observed is not None:
        pairs = class_pairs(ctx.passed.results(stems), [ctx.observed[s] for s in stems], iou=0.7)  # type: ignore[arg-type]
        details["observed"], f, m = _judge(
            pairs, names, "the deployment's results vs the contract's", "deployment"
        )
        if f:
            findings.append(f)
            figs.append(_draw(m, names, "model class (contract)", "class the deployment reports"))
    if ctx.labels is not None:
        stems_l = [s for s in stems if s in ctx.labels.boxes]
        preds = [ctx.passed.records[s].result for s in stems_l]
        gts = [ctx.labels.boxes[s] for s in stems_l]
        pairs = [
            (b, a) for a, b in class_pairs(gts, [p for p in preds if isinstance(p, Detections)], iou=0.5)
        ]
        details["labels"], f, m = _judge(
            pairs, names, f"the labels ({ctx.labels.source.name}) vs the model", "label"
        )
        if f:
            findings.append(f)
            figs.append(_draw(m, names, "model class", "label class"))
    verdict: Verdict = "finding" if findings else "ok"
    summary = ("class ids are permuted" if findings else
               "matched boxes carry the same class ids" + (f" ({details['observed']['identity_agreement']:.0%} of "
               f"{details['observed']['pairs']} vs the deployment)" if "observed" in details else ""))  # fmt: skip
    res = CheckResult(CHECK, TITLE, verdict, summary, details, findings, figs)
    res.seconds = time.perf_counter() - t0
    return [res]


def _draw(m: np.ndarray, names: list[str], rows: str, cols: str) -> FigureFn:
    return lambda: _confusion(m, names, rows, cols)


def _confusion(m: np.ndarray, names: list[str], rows: str, cols: str) -> list[Figure]:
    used = np.where((m.sum(0) + m.sum(1)) > 0)[0][:20]
    labels = [names[k] if k < len(names) else str(k) for k in used]
    png = figures.confusion(m[np.ix_(used, used)], labels, labels, f"{rows} (rows) vs {cols} (columns)")
    return [Figure("Class confusion of matched boxes", png)] if png else []
