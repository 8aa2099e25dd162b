"""Recommendation: the fastest configuration within a latency budget and above an accuracy floor.

Accuracy comes from the metrics recorded in the manifest (``cvdeploy val --write``), which hold for
the artifact at the image size it was validated at. Latency is the end-to-end time of one request:
the budget is checked against a tail figure (``p95`` by default) and "fastest" means the lowest
median. The latency-versus-accuracy Pareto front shows every configuration no other beats on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cvdeploy.bench.results import BenchResult
from cvdeploy.bundle import Artifact
from cvdeploy.errors import ConfigError


@dataclass
class Candidate:
    key: str
    p50_ms: float
    budget_ms_value: float  # the latency figure checked against the budget (e.g. p95)
    accuracy: float | None
    meets_budget: bool
    meets_accuracy: bool
    on_front: bool = False

    @property
    def feasible(self) -> bool:
        return self.meets_budget and self.meets_accuracy


@dataclass
class Recommendation:
    """The chosen configuration (``None`` when nothing qualifies), why, and the Pareto front."""

    choice: str | None
    reason: str
    budget_ms: float | None
    min_accuracy: float | None
    stat: str
    metric: str
    front: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = [asdict(c) for c in self.candidates]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recommendation:
        cands = [Candidate(**c) for c in d.get("candidates", [])]
        return cls(
            d.get("choice"),
            d.get("reason", ""),
            d.get("budget_ms"),
            d.get("min_accuracy"),
            d.get("stat", "p95"),
            d.get("metric", "mAP50-95"),
            list(d.get("front", [])),
            cands,
        )


def require_metrics(arts: Sequence[Artifact], metric: str, bundle_name: str, bundle_path: str) -> None:
    """An accuracy floor needs recorded accuracy: refuse early, saying how to record it."""
    if not any(isinstance(a.metrics.get(metric), int | float) for a in arts):
        raise ConfigError(
            f"--min-map needs the accuracy ({metric}) recorded in the bundle, but no artifact of "
            f"{bundle_name!r} has it; run 'cvdeploy val {bundle_path} --write' first"
        )


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Labels of ``(label, latency, accuracy)`` points that no other point beats on both (lower
    latency and higher accuracy, at least one strictly), fastest first."""
    front = []
    for label, lat, acc in points:
        dominated = any(
            (ol <= lat and oa >= acc) and (ol < lat or oa > acc) for other, ol, oa in points if other != label
        )
        if not dominated:
            front.append((lat, label))
    return [label for _, label in sorted(front)]


def _accuracy(r: BenchResult, metric: str) -> float | None:
    v = r.metrics.get(metric)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def recommend(
    results: Sequence[BenchResult],
    budget_ms: float | None = None,
    min_accuracy: float | None = None,
    stat: str = "p95",
    metric: str = "mAP50-95",
) -> Recommendation:
    """Pick the lowest-median configuration whose ``stat`` latency is within ``budget_ms`` and whose
    ``metric`` is at least ``min_accuracy``; say why, and what the nearest alternatives miss."""
    cands = []
    for r in results:
        lat = r.latency
        acc = _accuracy(r, metric)
        value = lat.get(stat)
        cands.append(
            Candidate(
                key=r.key,
                p50_ms=lat.p50_ms,
                budget_ms_value=value,
                accuracy=acc,
                meets_budget=budget_ms is None or value <= budget_ms,
                meets_accuracy=min_accuracy is None or (acc is not None and acc >= min_accuracy),
            )
        )
    front = pareto_front([(c.key, c.p50_ms, c.accuracy) for c in cands if c.accuracy is not None])
    for c in cands:
        c.on_front = c.key in front
    rec = Recommendation(None, "", budget_ms, min_accuracy, stat, metric, front, cands)
    if not cands:
        rec.reason = "nothing was measured"
        return rec
    feasible = sorted((c for c in cands if c.feasible), key=lambda c: c.p50_ms)
    fastest = min(cands, key=lambda c: c.p50_ms)
    wants = _wants(budget_ms, min_accuracy, stat, metric)
    if not feasible:
        rec.reason = f"no configuration meets {wants}. " + _nearest(
            cands, budget_ms, min_accuracy, stat, metric
        )
        return rec
    best = feasible[0]
    rec.choice = best.key
    facts = [
        f"{stat} {best.budget_ms_value:.1f} ms"
        + (f" ≤ budget {budget_ms:g} ms" if budget_ms is not None else "")
    ]
    if best.accuracy is not None:
        facts.append(
            f"{metric} {100 * best.accuracy:.1f}"
            + (f" ≥ {100 * min_accuracy:g}" if min_accuracy is not None else "")
            + " points"
        )
    reason = (
        f"{best.key}: {', '.join(facts)}; the fastest (median {best.p50_ms:.1f} ms) of "
        f"{len(feasible)} of {len(cands)} configurations that meet {wants}."
    )
    if fastest.key != best.key:
        why = _why_not(fastest, budget_ms, min_accuracy, stat, metric)
        reason += f" Faster but rejected: {fastest.key} ({why})."
    rec.reason = reason
    return rec


def _wants(budget_ms: float | None, min_accuracy: float | None, stat: str, metric: str) -> str:
    parts = []
    if budget_ms is not None:
        parts.append(f"the {budget_ms:g} ms budget ({stat})")
    if min_accuracy is not None:
        parts.append(f"{metric} ≥ {100 * min_accuracy:g} points")
    return " and ".join(parts) or "no constraint"


def _why_not(
    c: Candidate, budget_ms: float | None, min_accuracy: float | None, stat: str, metric: str
) -> str:
    why = []
    if not c.meets_budget and budget_ms is not None:
        why.append(f"{stat} {c.budget_ms_value:.1f} ms > {budget_ms:g} ms")
    if not c.meets_accuracy and min_accuracy is not None:
        why.append(
            f"{metric} not recorded at this configuration"
            if c.accuracy is None
            else f"{metric} {100 * c.accuracy:.1f} < {100 * min_accuracy:g} points"
        )
    return ", ".join(why)


def _nearest(
    cands: list[Candidate], budget_ms: float | None, min_accuracy: float | None, stat: str, metric: str
) -> str:
    fastest = min(cands, key=lambda c: c.budget_ms_value)
    out = f"Fastest: {fastest.key} ({stat} {fastest.budget_ms_value:.1f} ms"
    out += f", {metric} {100 * fastest.accuracy:.1f} points)." if fastest.accuracy is not None else ")."
    accurate = [c for c in cands if c.accuracy is not None]
    if accurate:
        top = max(accurate, key=lambda c: (c.accuracy, -c.p50_ms))
        if top.key != fastest.key and top.accuracy is not None:
            out += (
                f" Most accurate: {top.key} ({metric} {100 * top.accuracy:.1f} points, "
                f"{stat} {top.budget_ms_value:.1f} ms)."
            )
    return out + " Loosen a constraint, or optimize the model (cvdeploy optimize)."
