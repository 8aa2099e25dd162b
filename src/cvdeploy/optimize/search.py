"""Accuracy-aware INT8: give the most sensitive layers back to float, a group at a time, until the
accuracy drop is within budget.

The box-decode head is in float from the start (:mod:`cvdeploy.optimize.head`). Each round
re-quantizes from cached calibration ranges (no new calibration pass) and scores the candidate
with the caller's ``evaluate`` (mAP on labelled data, or fidelity against FP32 without labels).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.optimize.calibration import TensorReader
from cvdeploy.optimize.quantize_ort import OrtQuantConfig, quantize_qdq
from cvdeploy.optimize.sensitivity import LayerSensitivity, layer_sensitivity

log = logging.getLogger("cvdeploy")

Evaluate = Callable[[Path], float]  # model path → score (higher is better, in points)


@dataclass
class SearchRound:
    float_nodes: int
    score: float
    drop: float
    added: list[str] = field(default_factory=list)  # tensors given back to float this round


@dataclass
class SearchResult:
    """The chosen model and how it was found."""

    path: Path
    score: float
    drop: float
    within: bool
    exclude_nodes: list[str]
    float_layers: list[dict[str, Any]]  # tensors kept in float by the search, with their SQNR (why)
    rounds: list[SearchRound]
    sensitivity: list[LayerSensitivity] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 3),
            "drop": round(self.drop, 3),
            "within_budget": self.within,
            "float_nodes": len(self.exclude_nodes),
            "float_layers": self.float_layers,
            "rounds": [r.__dict__ for r in self.rounds],
            "most_sensitive": [s.to_dict() for s in self.sensitivity[:10]],
        }


def accuracy_aware_quantize(
    model_path: Path,
    out_path: Path,
    config: OrtQuantConfig,
    reader: TensorReader,
    evaluate: Evaluate,
    baseline: float,
    max_drop: float,
    work_dir: Path,
    sensitivity_tensors: Sequence[np.ndarray] | None = None,
    group_size: int | None = None,
    max_rounds: int = 8,
) -> SearchResult:
    """Quantize ``model_path`` (pre-processed FP32) to ``out_path`` so that ``baseline − score ≤ max_drop``.

    ``config.exclude_nodes`` (the float head) is kept in float throughout. When no round reaches
    the budget, the candidate with the smallest drop is kept and ``within`` is False.
    """
    cache = work_dir / "calibration.json"
    cache.unlink(missing_ok=True)
    exclude = list(dict.fromkeys(config.exclude_nodes))
    first = work_dir / "candidate0.onnx"
    quantize_qdq(model_path, first, _with(config, exclude), reader, cache)
    score = evaluate(first)
    rounds = [SearchRound(len(exclude), score, baseline - score)]
    best = (baseline - score, first, list(exclude), 0)
    log.info("INT8 round 0: %d float nodes, score %.3f (drop %.3f)", len(exclude), score, baseline - score)
    ranked: list[LayerSensitivity] = []
    chosen: list[LayerSensitivity] = []
    if baseline - score > max_drop:
        probe = list(sensitivity_tensors if sensitivity_tensors is not None else reader.tensors[:4])
        ranked = layer_sensitivity(model_path, first, probe, reader.input_name)
        todo = [s for s in ranked if not set(s.nodes) <= set(exclude)]
        size = group_size or max(1, len(todo) // 10)
        for k in range(1, max_rounds + 1):
            group, todo = todo[:size], todo[size:]
            if not group:
                break
            chosen.extend(group)
            exclude = list(dict.fromkeys(exclude + [n for s in group for n in s.nodes]))
            cand = work_dir / f"candidate{k}.onnx"
            quantize_qdq(model_path, cand, _with(config, exclude), None, cache)
            score = evaluate(cand)
            drop = baseline - score
            rounds.append(SearchRound(len(exclude), score, drop, [s.tensor for s in group]))
            log.info("INT8 round %d: %d float nodes, score %.3f (drop %.3f)", k, len(exclude), score, drop)
            if drop < best[0]:
                best = (drop, cand, list(exclude), k)
            if drop <= max_drop:
                break
    drop, path, excl, k = best
    shutil.copyfile(path, out_path)
    kept = [s for s in chosen if set(s.nodes) <= set(excl)]
    float_layers = [
        {**s.to_dict(), "why": f"activation SQNR {s.qdq_sqnr:.1f} dB (among the lowest)"} for s in kept
    ]
    return SearchResult(
        path=out_path,
        score=rounds[k].score,
        drop=drop,
        within=drop <= max_drop,
        exclude_nodes=excl,
        float_layers=float_layers,
        rounds=rounds,
        sensitivity=ranked,
    )


def _with(config: OrtQuantConfig, exclude: list[str]) -> OrtQuantConfig:
    return OrtQuantConfig(
        method=config.method,
        per_channel=config.per_channel,
        types=config.types,
        percentile=config.percentile,
        exclude_nodes=exclude,
        reduce_range=config.reduce_range,
    )
