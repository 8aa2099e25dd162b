"""Check 1 — preprocessing mismatch: which preprocessing reproduces what the deployment returned or fed?

With ``--observed``, the images go through the contract's pipeline and through every plausible
deviation (:mod:`cvdeploy.doctor.variants`); each is scored by how exactly it reproduces the
observed detections (:mod:`cvdeploy.doctor.matching`). Only when the contract itself does not
reproduce them are variants tried — first all on a few of the worst-explained images, then the
best four on up to ``variant_images`` of them — and a variant counts only when it is better on
significantly many images (one-sided Wilcoxon signed-rank test, scipy).

With ``--inputs``, the tensors themselves are compared with each variant's tensor (relative mean
absolute error): exact and independent of the model.

Score: ``1 - residual(variant) / residual(contract)``, where a residual is the share of the
observations left unexplained (plus 0.01): a variant that explains everything the contract
missed scores near 1, a marginal improvement near 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from cvdeploy._deps import require
from cvdeploy.contract import Contract
from cvdeploy.decode import Decoder
from cvdeploy.doctor import figures
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.findings import CheckResult, FigureFn, Finding, Verdict, skipped
from cvdeploy.doctor.inputs import has_confidence
from cvdeploy.doctor.matching import similarities
from cvdeploy.doctor.variants import Variant, at_size, describe_norm, exif_variant, preprocessing_variants
from cvdeploy.parity import detection_agreement
from cvdeploy.preprocess import Preprocessor
from cvdeploy.reports.document import Figure
from cvdeploy.results import Detections, Result

CHECK, TITLE = "preprocessing", "Preprocessing mismatch"
#: The contract explains the observations when it reproduces this much on average...
GOOD_MEAN = 0.98
#: ... and at least this much on every image.
GOOD_IMAGE = 0.9
FIRST_ROUND = 6  # images every variant is tried on
FINALISTS = 4  # variants tried on all the chosen images
EXACT_TENSOR = 0.01  # relative error of a tensor that matches (JPEG decoders differ by about a level)


def _simulate(ctx: Context, variant: Variant | None, stems: Sequence[str]) -> list[Result]:
    """The deployed model's results on ``stems`` through ``variant``'s preprocessing (None: the contract)."""
    if variant is None:
        return ctx.passed.results(list(stems))
    dep = ctx.deployment
    spec = variant.contract.input
    same_size = (spec.height, spec.width) == (
        dep.pipeline.contract.input.height,
        dep.pipeline.contract.input.width,
    )
    resizable = None if same_size else ctx.workspace.resizable(dep)
    pre = Preprocessor(spec)
    decoder = Decoder(variant.contract, [o.name for o in dep.runtime.outputs])
    out: list[Result] = []
    ws = ctx.workspace
    for stem in stems:
        path = ctx.passed.records[stem].path
        found = ws.simulated(dep.model_path, variant.key, path)
        if found is None:
            tensor, geoms = pre([variant.decode(path) if variant.decode else ctx.image(stem)])
            raw = dep.run(tensor) if resizable is None else resizable.run(tensor)
            found = decoder(raw, geoms)[0]
            ws.keep_simulated(dep.model_path, variant.key, path, found)
        out.append(found)
    return out


def _wilcoxon_greater(diff: np.ndarray) -> float:
    """One-sided p-value that ``diff`` tends to be positive (1.0 when every difference is zero)."""
    d = diff[np.abs(diff) > 1e-6]
    if d.size == 0:
        return 1.0
    stats = require("scipy.stats", "doctor's statistical tests")
    return float(stats.wilcoxon(d, alternative="greater").pvalue)


def _score(contract_mean: float, variant_mean: float) -> float:
    return max(0.0, 1.0 - (1.0 - variant_mean + 0.01) / (1.0 - contract_mean + 0.01))


def check_observed(ctx: Context) -> CheckResult:
    """Rank preprocessing variants by how well they reproduce ``--observed``."""
    assert ctx.observed is not None
    if ctx.deployment.pipeline.contract.task != "detect":
        return skipped(CHECK, TITLE, "observed results are compared only for detectors")
    stems = ctx.images.stems
    use_conf = has_confidence(ctx.observed)
    observed = [ctx.observed[s] for s in stems]
    base = similarities(observed, ctx.passed.results(stems), use_conf)
    details: dict[str, object] = {"contract_reproduces": round(float(base.mean()), 4), "images": len(stems),
                                  "confidences_compared": use_conf}  # fmt: skip
    if base.mean() >= GOOD_MEAN and base.min() >= GOOD_IMAGE:
        return CheckResult(CHECK, TITLE, "ok", f"the contract's pipeline reproduces {base.mean():.1%} of what the "
                           f"deployment returned on {len(stems)} images", details)  # fmt: skip
    order = np.argsort(base, kind="stable")[: ctx.variant_images]
    chosen = [stems[i] for i in order]
    first = chosen[:FIRST_ROUND]
    can_resize = ctx.workspace.resizable(ctx.deployment) is not None
    candidates = preprocessing_variants(ctx.deployment.pipeline.contract, sizes=can_resize)
    exif = exif_variant(ctx.deployment.pipeline.contract, [ctx.passed.records[s].path for s in stems])
    if exif is not None:
        candidates.append(exif)
    ctx.progress.begin(
        "trying preprocessing variants", len(candidates) * len(first) + FINALISTS * len(chosen)
    )
    obs_first = [ctx.observed[s] for s in first]
    round1 = []
    for v in candidates:
        round1.append((float(similarities(obs_first, _simulate(ctx, v, first), use_conf).mean()), v))
        ctx.progress.advance(len(first))
    round1.sort(key=lambda sv: -sv[0])
    obs = [ctx.observed[s] for s in chosen]
    base_sub = base[order]
    scored = []
    for _, v in round1[:FINALISTS]:
        sims = similarities(obs, _simulate(ctx, v, chosen), use_conf)
        scored.append((float(sims.mean()), _wilcoxon_greater(sims - base_sub), v, sims))
        ctx.progress.advance(len(chosen))
    ctx.progress.end()
    scored.sort(key=lambda t: -t[0])
    details["variants"] = {v.key: round(m, 4) for m, v in round1}
    details["finalists"] = [{"variant": v.key, "reproduces": round(m, 4), "p_value": round(p, 5)}
                            for m, p, v, _ in scored]  # fmt: skip
    details["resizable_model"] = can_resize
    best_mean, p, best, sims = scored[0]
    contract_mean = float(base_sub.mean())
    figs: list[FigureFn] = [
        lambda: _figures(ctx, chosen, obs, base_sub, float(base_sub[: len(first)].mean()), round1)
    ]
    if best_mean <= contract_mean + 0.01 or p >= 0.05:
        note = (
            ""
            if can_resize
            else "; other input sizes could not be simulated (static model, no PyTorch source)"
        )
        return CheckResult(CHECK, TITLE, "ok", f"the contract reproduces {base.mean():.1%} of the observations and no "
                           f"single preprocessing deviation does better (best: {best.key}, {best_mean:.1%}){note}",
                           details, figures=figs)  # fmt: skip
    gain = best_mean - contract_mean
    score = _score(contract_mean, best_mean)
    evidence = (
        f"the deployment most likely {best.description}: that pipeline reproduces {best_mean:.1%} of what it "
        f"returned on the {len(chosen)} least-explained images, the contract's {contract_mean:.1%} "
        f"(better on {int((sims > base_sub + 1e-6).sum())} of {len(chosen)} images, Wilcoxon p={p:.2g})."
    )
    if best_mean < 0.9:
        evidence += " It does not explain everything: a second deviation or another cause may remain."
    finding = Finding(best.finding, "critical" if gain >= 0.1 else "warning", evidence, score, fix=best.fix,
                      title=best.title)  # fmt: skip
    return CheckResult(CHECK, TITLE, "finding", f"{best.key} reproduces {best_mean:.1%} vs the contract's "
                       f"{contract_mean:.1%}", details, [finding], figs)  # fmt: skip


def _figures(ctx: Context, stems: list[str], obs: list[Detections], base: np.ndarray, contract_first: float,
             round1: list[tuple[float, Variant]]) -> list[Figure]:  # fmt: skip
    figs: list[Figure] = []
    labels = ["contract", *[v.key for _, v in round1[:10]]]
    values = [contract_first, *[m for m, _ in round1[:10]]]
    png = figures.ranking(labels, values, "share of observations reproduced", "Preprocessing variants")
    if png:
        figs.append(Figure("How well each preprocessing reproduces the deployment's results", png,
                           "contract: the bundle's own preprocessing; the others change one setting"))  # fmt: skip
    worst = list(np.argsort(base, kind="stable")[:3])
    pairs = [(stems[i], ctx.image(stems[i]), ctx.passed.records[stems[i]].result, obs[i]) for i in worst]
    figs.append(Figure("Expected (contract) vs observed (deployment)", figures.image_pairs(pairs, "expected", "observed"),
                       "the images the contract explains worst; left: the contract's pipeline, right: what the "
                       "deployment returned"))  # fmt: skip
    return figs


# ---- tensors ---------------------------------------------------------------------------------------


def _rel_error(observed: np.ndarray, simulated: np.ndarray) -> float:
    if not np.all(np.isfinite(observed)):
        return float("inf")
    scale = float(np.std(simulated)) + 1e-6
    return float(np.mean(np.abs(observed - simulated)) / scale)


def _tensor(contract: Contract, img: np.ndarray) -> np.ndarray:
    t, _ = Preprocessor(contract.input)([img])
    t = t[0].astype(np.float32)
    return t.transpose(2, 0, 1) if contract.input.layout == "NHWC" else t


def check_tensors(ctx: Context) -> CheckResult:
    """Compare the tensors the deployment fed (``--inputs``) with each variant's, image by image."""
    assert ctx.tensors is not None
    contract = ctx.deployment.pipeline.contract
    spec = contract.input
    stems = ctx.images.stems[: ctx.variant_images]
    nonfinite = [s for s in ctx.images.stems if not np.all(np.isfinite(ctx.tensors[s]))]
    findings: list[Finding] = []
    details: dict[str, object] = {"images": len(stems)}
    if nonfinite:
        findings.append(Finding("numerics.nonfinite", "critical",
                                f"the tensors the deployment fed its model hold NaN or infinity for {len(nonfinite)} of "
                                f"{len(ctx.images)} images (e.g. {nonfinite[0]!r}): its preprocessing produces them "
                                f"(a division by a zero std, a corrupt decode)", 0.97,
                                fix="find the preprocessing step that divides by zero or reads past the image; "
                                f"the contract normalises as {describe_norm(spec)}"))  # fmt: skip
    shapes = {ctx.tensors[s].shape[1:] for s in stems}
    (h, w) = next(iter(shapes)) if len(shapes) == 1 else (spec.height, spec.width)
    resized = (h, w) != (spec.height, spec.width)
    base = at_size(contract, h, w) if resized else contract
    candidates: list[tuple[str, str, Contract, str]] = [("contract" if not resized else f"contract at {h}x{w}",
                                                         "preprocess.input_size", base, "")]  # fmt: skip
    for v in preprocessing_variants(base, sizes=False):
        candidates.append((v.key, v.finding, v.contract, v.description))
    errors = {c[0]: [] for c in candidates}  # type: dict[str, list[float]]
    ctx.progress.begin("comparing input tensors", len(stems))
    for s in stems:
        img = ctx.image(s)
        t_obs = ctx.tensors[s]
        for key, _, c, _ in candidates:
            t_sim = _tensor(c, img)
            errors[key].append(_rel_error(t_obs, t_sim) if t_sim.shape == t_obs.shape else float("inf"))
        ctx.progress.advance()
    ctx.progress.end()
    med = {k: float(np.median(v)) for k, v in errors.items()}
    details["relative_error"] = {k: (round(v, 5) if np.isfinite(v) else None) for k, v in med.items()}
    ranked = sorted(candidates, key=lambda c: med[c[0]])
    best_key, best_id, best_contract, best_desc = ranked[0]
    base_err = med[candidates[0][0]]
    if not resized and base_err <= EXACT_TENSOR:
        verdict: Verdict = "finding" if findings else "ok"
        return CheckResult(CHECK, TITLE, verdict, f"the tensors match the contract's preprocessing (relative error "
                           f"{base_err:.2g})", details, findings)  # fmt: skip
    if resized:
        what = f"feeds {h}x{w} tensors (the contract: {spec.height}x{spec.width})"
        if best_key != candidates[0][0] and med[best_key] <= EXACT_TENSOR:
            what += f" and {best_desc}"
        finding_id, fix = (
            "preprocess.input_size",
            f"resize images to {spec.height}x{spec.width} as the contract says",
        )
    elif med[best_key] < 0.5 * base_err and np.isfinite(med[best_key]):
        what, finding_id = best_desc, best_id
        fix = next((v.fix for v in preprocessing_variants(contract) if v.key == best_key), "")
    else:
        details["unexplained"] = True
        return CheckResult(CHECK, TITLE, "finding" if findings else "ok",
                           f"the tensors differ from the contract's (relative error {base_err:.2g}) in a way no single "
                           "deviation explains", details, findings)  # fmt: skip
    exact = med[best_key] <= EXACT_TENSOR
    impact = _impact(ctx, stems[: ctx.sample], best_contract if not resized else base)
    details["impact_agreement"] = impact
    evidence = (f"the deployment {what}: its tensors match that preprocessing "
                f"{'exactly' if exact else 'closely'} (median relative error {med[best_key]:.2g}) and the contract's "
                f"{'not at all' if not np.isfinite(base_err) else f'with error {base_err:.2g}'}.")  # fmt: skip
    if impact is not None:
        evidence += f" Fed these tensors, the model keeps {impact:.0%} of the contract's detections."
    severe = impact is None or impact < 0.9
    findings.append(
        Finding(finding_id, "critical" if severe else "warning", evidence, 0.97 if exact else 0.8, fix=fix)
    )
    return CheckResult(CHECK, TITLE, "finding", f"the tensors match {best_key}", details, findings)


def _impact(ctx: Context, stems: list[str], deviant: Contract) -> float | None:
    """Share of the contract's detections the model still finds when fed the deployment's tensors."""
    assert ctx.tensors is not None
    dep = ctx.deployment
    spec = dep.pipeline.contract.input
    if dep.pipeline.contract.task != "detect":
        return None
    same = (deviant.input.height, deviant.input.width) == (spec.height, spec.width)
    runner = dep.run if same else getattr(ctx.workspace.resizable(dep), "run", None)
    if runner is None:
        return None
    decoder = Decoder(deviant, [o.name for o in dep.runtime.outputs])
    pre = Preprocessor(deviant.input)
    theirs: list[Result] = []
    for s in stems:
        t = ctx.tensors[s]
        if not np.all(np.isfinite(t)):
            return 0.0
        _, geoms = pre([ctx.image(s)])
        batch = t[None] if spec.layout == "NCHW" else t.transpose(1, 2, 0)[None]
        theirs.extend(decoder(runner(np.ascontiguousarray(batch, np.float32)), geoms))
    return detection_agreement(ctx.passed.results(stems), theirs, iou=0.5)


def run(ctx: Context) -> list[CheckResult]:
    t0 = time.perf_counter()
    out: list[CheckResult] = []
    if ctx.tensors is not None:
        out.append(check_tensors(ctx))
    if ctx.observed is not None:
        out.append(check_observed(ctx))
    if not out:
        out.append(
            skipped(CHECK, TITLE, "needs --observed (what the deployment returned) or --inputs (what it fed)")
        )
    for r in out:
        r.seconds = (time.perf_counter() - t0) / len(out)
    return out
