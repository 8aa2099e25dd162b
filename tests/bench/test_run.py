"""``run_bench``: the library entry point, with a fake runtime injected and on the real tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvdeploy.bench import BenchReport, BenchSettings, Progress, run_bench
from cvdeploy.bench.config import BenchConfig
from cvdeploy.errors import ConfigError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions

from .fakes import FakeClock, FakeRuntime, fake_pipeline


class _Recorder(Progress):
    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, configs: int) -> None:
        self.events.append(f"start {configs}")

    def config(self, index: int, key: str, passes: int | None) -> None:
        self.events.append(f"config {key} {passes}")

    def advance(self) -> None:
        self.events.append("advance")


def test_run_bench_through_the_seam(tiny_bundle_path: Path, fake_clock: FakeClock) -> None:
    runtimes: list[FakeRuntime] = []

    def loader(cfg: BenchConfig, options: RuntimeOptions) -> Pipeline:
        runtimes.append(
            FakeRuntime(fake_clock, [500.0, 3.0] if cfg.artifact == "onnx-fp32" else [500.0, 6.0])
        )
        return fake_pipeline(runtimes[-1])

    progress = _Recorder()
    report = run_bench(tiny_bundle_path, runs=5, warmup=2, loader=loader, clock=fake_clock, progress=progress)
    assert [r.key for r in report.results] == [
        "onnx-fp32 320x320 b1 tauto c1",
        "openvino-fp32 320x320 b1 tauto c1",
    ]
    onnx, ov = report.results
    assert onnx.latency.p50_ms == 3.0
    assert ov.latency.p50_ms == 6.0
    assert onnx.cold_start.first_inference_ms == 500.0
    assert onnx.warmup_ms == [3.0, 3.0]
    assert onnx.throughput_ips == pytest.approx(1000 / 3.0)
    assert onnx.artifact_size_mb is not None and onnx.artifact_size_mb > 1
    assert progress.events[:2] == ["start 2", "config onnx-fp32 320x320 b1 tauto c1 7"]
    assert progress.events.count("advance") == 2 * 7


def test_report_json_round_trip(tiny_bundle_path: Path, fake_clock: FakeClock, tmp_path: Path) -> None:
    report = run_bench(
        tiny_bundle_path,
        BenchSettings(artifacts=["onnx-fp32"], runs=4, warmup=1),
        loader=lambda c, o: fake_pipeline(FakeRuntime(fake_clock, [2.0])),
        clock=fake_clock,
    )
    path = report.save_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "cvdeploy-bench/1"
    assert data["results"][0]["samples_ms"]["total"] == [2.0] * 4
    assert data["results"][0]["p50_ms"] == 2.0
    assert set(data["hardware"]["cpu_features"]) >= {"AVX2", "AVX-512", "VNNI", "AMX"}
    assert data["environment"]["libraries"]["onnxruntime"]
    again = BenchReport.load(path)
    assert again.results[0].key == report.results[0].key
    assert again.results[0].latency == report.results[0].latency


def test_real_bundle_with_recommendation(metrics_bundle: Path) -> None:
    report = run_bench(metrics_bundle, runs=3, warmup=1, budget_ms=1e6, min_map=0.45, num_images=2)
    assert len(report.results) == 2
    rec = report.recommendation
    assert rec is not None
    assert rec.choice == "onnx-fp32 320x320 b1 tauto c1"  # the only one above the 0.45 floor
    assert report.result(rec.choice).metrics["mAP50-95"] == 0.5
    doc = report.to_document()
    assert any(s.title == "Recommendation" for s in doc.sections)
    assert len(doc.figures()) == 4  # distribution, stages, Pareto front, heat-map


def test_requested_gpu_that_falls_back_is_flagged(tiny_bundle_path: Path) -> None:
    report = run_bench(
        tiny_bundle_path, artifacts=["onnx-fp32"], device="cuda", runs=2, warmup=0, num_images=1
    )
    (r,) = report.results
    if "CUDA" in r.device_used:
        pytest.skip("a CUDA provider is available here")
    assert r.fell_back
    assert report.fell_back
    assert report.to_dict()["fell_back_to_cpu"] is True
    assert any("requested --device cuda" in w for w in report.warnings)


def test_nothing_measurable_is_an_error(no_source_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing could be measured.*no PyTorch source"):
        run_bench(no_source_bundle, imgsz=[(256, 256)], runs=2, warmup=0)


@pytest.mark.parametrize(
    ("load", "cores", "warns"),
    [
        ({"start": [0.2, 0, 0], "end": [0.5, 0, 0]}, 2, False),
        ({"start": [0.2, 0, 0], "end": [3.0, 0, 0]}, 2, True),
        ({"start": [3.0, 0, 0]}, 16, False),
        ({}, 2, False),
    ],
)
def test_busy_machine_warning(load: dict[str, list[float]], cores: int, warns: bool) -> None:
    from cvdeploy.bench.report import busy_warning

    msg = busy_warning(load, cores)
    assert (msg is not None) is warns
    if msg:
        assert f"on {cores} logical cores" in msg
