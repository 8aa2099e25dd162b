"""Sensitivity ranking and the accuracy-aware loop on a model with one planted sensitive layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.optimize.calibration import TensorReader
from cvdeploy.optimize.quantize_ort import OrtQuantConfig, choose_types, pre_process, quantize_qdq
from cvdeploy.optimize.search import accuracy_aware_quantize
from cvdeploy.optimize.sensitivity import layer_sensitivity

ort = pytest.importorskip("onnxruntime")

INPUTS = [np.random.default_rng(i).normal(0, 1, (1, 3, 16, 16)).astype(np.float32) for i in range(8)]


def _outputs(path: Path) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, {"X": x})[0] for x in INPUTS]


def _scorer(reference: Path):
    """Score in points: 100 × (1 − relative L2 error of the output against the float model)."""
    ref = _outputs(reference)

    def score(path: Path) -> float:
        out = _outputs(path)
        err = sum(float(np.sum((o - r) ** 2)) for o, r in zip(out, ref, strict=True))
        return 100.0 * (1.0 - np.sqrt(err / sum(float(np.sum(r**2)) for r in ref)))

    return score


@pytest.fixture
def prepared(planted: Path, tmp_path: Path) -> Path:
    pre = tmp_path / "pre.onnx"
    pre_process(planted, pre)
    return pre


def test_planted_layer_ranks_most_sensitive(prepared: Path, tmp_path: Path) -> None:
    q = tmp_path / "q.onnx"
    quantize_qdq(prepared, q, OrtQuantConfig(types=choose_types("u8s8")), TensorReader(INPUTS, "X"))
    ranked = layer_sensitivity(prepared, q, INPUTS[:2], "X")
    assert ranked[0].tensor == "B"
    assert ranked[0].qdq_sqnr < min(s.qdq_sqnr for s in ranked[1:]) - 10  # far below the rest
    assert {"conv2", "conv3"} <= set(ranked[0].nodes)  # producer and consumer keep B in float


def test_search_stops_within_budget(prepared: Path, tmp_path: Path) -> None:
    score = _scorer(prepared)
    config = OrtQuantConfig(types=choose_types("u8s8"))
    out = tmp_path / "int8.onnx"
    work = tmp_path / "work"
    work.mkdir()
    res = accuracy_aware_quantize(
        prepared,
        out,
        config,
        TensorReader(INPUTS, "X"),
        score,
        100.0,
        max_drop=2.0,
        work_dir=work,
        group_size=1,
    )
    assert res.rounds[0].drop > 2.0  # fully quantized, the planted layer breaks the output
    assert res.within and res.drop <= 2.0
    assert len(res.rounds) == 2  # one group (the planted tensor) was enough
    assert [f["tensor"] for f in res.float_layers] == ["B"]
    assert out.is_file() and abs(score(out) - res.score) < 1e-6
    assert sum(n.startswith("conv") for n in res.exclude_nodes) == 2


def test_search_keeps_the_best_when_the_budget_is_unreachable(prepared: Path, tmp_path: Path) -> None:
    score = _scorer(prepared)
    work = tmp_path / "work"
    work.mkdir()
    res = accuracy_aware_quantize(
        prepared, tmp_path / "o.onnx", OrtQuantConfig(types=choose_types("u8s8")), TensorReader(INPUTS, "X"),
        score, 100.0, max_drop=-1.0, work_dir=work, group_size=1, max_rounds=2,
    )  # fmt: skip
    assert not res.within
    assert res.drop == min(r.drop for r in res.rounds)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_calibration_methods_give_runnable_qdq_models(prepared: Path, tmp_path: Path, method: str,
                                                     per_channel: bool) -> None:  # fmt: skip
    import onnx

    out = tmp_path / f"{method}.onnx"
    cfg = OrtQuantConfig(method=method, per_channel=per_channel, types=choose_types("u8s8"))
    quantize_qdq(prepared, out, cfg, TensorReader(INPUTS, "X"))
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 3
    y = _outputs(out)[0]
    assert y.shape == (1, 4, 16, 16) and np.isfinite(y).all()
