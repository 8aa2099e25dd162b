"""Recommendation: fastest within budget and above the accuracy floor; the Pareto front."""

from __future__ import annotations

import pytest

from cvdeploy.bench.config import BenchConfig
from cvdeploy.bench.recommend import pareto_front, recommend, require_metrics
from cvdeploy.bench.results import BenchResult, ColdStart
from cvdeploy.bundle import Artifact
from cvdeploy.errors import ConfigError


def _result(name: str, p50: float, acc: float | None) -> BenchResult:
    samples = [p50 * f for f in (0.9, 0.95, 1.0, 1.05, 1.1)]
    cfg = BenchConfig(artifact=name, runtime="onnxruntime", precision="fp32", imgsz=(640, 640))
    return BenchResult(
        cfg,
        {"total": samples, "inference": samples},
        [],
        ColdStart(1.0, 1.0),
        10.0,
        1.0,
        1.0,
        "CPU",
        metrics={} if acc is None else {"mAP50-95": acc},
    )


RESULTS = [
    _result("onnx-fp32", 40.0, 0.70),
    _result("onnx-int8", 25.0, 0.66),
    _result("openvino-int8", 15.0, 0.55),
    _result("onnx-fp16", 45.0, 0.69),  # dominated by onnx-fp32
    _result("onnx-fp32-pruned", 30.0, None),
]


def test_pareto_front() -> None:
    points = [("a", 10.0, 0.5), ("b", 20.0, 0.6), ("c", 25.0, 0.55), ("d", 30.0, 0.7), ("e", 30.0, 0.7)]
    assert pareto_front(points) == ["a", "b", "d", "e"]


@pytest.mark.parametrize(
    ("budget", "floor", "choice"),
    [
        (50.0, 0.6, "onnx-int8 640x640 b1 tauto c1"),
        (50.0, 0.68, "onnx-fp32 640x640 b1 tauto c1"),
        (50.0, None, "openvino-int8 640x640 b1 tauto c1"),
        (None, 0.69, "onnx-fp32 640x640 b1 tauto c1"),
        (30.0, 0.69, None),
    ],
)
def test_recommend_picks_the_fastest_that_qualifies(
    budget: float | None, floor: float | None, choice: str | None
) -> None:
    rec = recommend(RESULTS, budget_ms=budget, min_accuracy=floor, stat="p95")
    assert rec.choice == choice
    assert rec.front == [
        "openvino-int8 640x640 b1 tauto c1",
        "onnx-int8 640x640 b1 tauto c1",
        "onnx-fp32 640x640 b1 tauto c1",
    ]
    if choice is None:
        assert rec.reason.startswith("no configuration meets")
        assert "Fastest: openvino-int8" in rec.reason
    else:
        assert rec.reason.startswith(choice)


def test_reason_names_the_faster_rejected_configuration() -> None:
    rec = recommend(RESULTS, budget_ms=50.0, min_accuracy=0.6)
    assert "Faster but rejected: openvino-int8 640x640 b1 tauto c1 (mAP50-95 55.0 < 60 points)" in rec.reason


def test_budget_is_held_to_the_chosen_statistic() -> None:
    # p95 of the onnx-int8 samples is 25 * ~1.09 = 27.2 ms: within 27.5 at p95, not within 26
    assert recommend(RESULTS[:2], budget_ms=27.5, stat="p95").choice == "onnx-int8 640x640 b1 tauto c1"
    assert recommend(RESULTS[:2], budget_ms=26.0, stat="p95").choice is None
    assert recommend(RESULTS[:2], budget_ms=26.0, stat="p50").choice == "onnx-int8 640x640 b1 tauto c1"


def test_min_map_without_recorded_metrics_says_to_run_val() -> None:
    arts = [Artifact(name="onnx-fp32", file="m.onnx", runtime="onnxruntime")]
    with pytest.raises(ConfigError, match=r"run 'cvdeploy val m\.cvd --write' first"):
        require_metrics(arts, "mAP50-95", "m", "m.cvd")
    arts[0].metrics = {"mAP50-95": 0.5}
    require_metrics(arts, "mAP50-95", "m", "m.cvd")
