"""``cvdeploy bench`` on the command line: reports written and parseable, clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cvdeploy.cli.main import app

runner = CliRunner()


def test_help_of_bench_and_of_compare() -> None:
    top = runner.invoke(app, ["bench", "--help"])
    assert top.exit_code == 0
    assert "cvdeploy bench compare before.json after.json" in top.output
    assert "--concurrency" in top.output
    sub = runner.invoke(app, ["bench", "compare", "--help"])
    assert sub.exit_code == 0
    assert "bench compare" in sub.output
    assert "--threshold" in sub.output
    assert "--concurrency" not in sub.output


def test_bench_writes_json_markdown_and_html(tiny_bundle_path: Path, tmp_path: Path) -> None:
    out, md, html = tmp_path / "reports" / "bench.json", tmp_path / "r.md", tmp_path / "r.html"
    result = runner.invoke(
        app,
        [
            "bench",
            str(tiny_bundle_path),
            "-a",
            "onnx-fp32",
            "--runs",
            "5",
            "--warmup",
            "2",
            "--batch",
            "1,2",
            "--report",
            str(out.parent),
            "--markdown",
            str(md),
            "--html",
            str(html),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "latency per request" in result.output
    data = json.loads(out.read_text())
    assert [r["key"] for r in data["results"]] == [
        "onnx-fp32 320x320 b1 tauto c1",
        "onnx-fp32 320x320 b2 tauto c1",
    ]
    assert all(len(r["samples_ms"]["total"]) == 5 for r in data["results"])
    assert all(len(r["warmup_ms"]) == 2 for r in data["results"])
    for key in ("p50_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "cv"):
        assert key in data["results"][0]["latency"]
    text = md.read_text()
    assert "| configuration | device | executes | steady p50 ms | ± noise | p50 ms |" in text
    assert "fp32 · " in text  # the read-back precision and threads of each configuration
    assert "| onnx-fp32 320x320 b2 tauto c1 |" in text
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 3  # distribution, stages, heat-map
    assert "<table" in page and "Per-stage breakdown" in page


def test_bench_json_on_stdout_with_concurrency(tiny_bundle_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            str(tiny_bundle_path),
            "--runtime",
            "openvino",
            "--concurrency",
            "2",
            "--runs",
            "4",
            "--warmup",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (r,) = data["results"]
    assert r["key"] == "openvino-fp32 320x320 b1 tauto c2"
    assert r["throughput_ips"] > 0
    # two requests in flight: OpenVINO compiled for throughput, and that is what the report records
    assert r["execution"]["settings"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert r["execution"]["precision"] == "fp32"


def test_profile_on_the_command_line(tiny_bundle_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            str(tiny_bundle_path),
            "-a",
            "onnx-fp32",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--profile",
            "--top",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (p,) = json.loads(result.stdout)["profiles"]
    assert p["source"] == "ONNX Runtime profiler"
    assert len(p["by_type"]) == 3
    assert p["by_type"][0]["op_type"] == "Conv"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-a", "onnx-int8"], "has no artifact 'onnx-int8'; it has: onnx-fp32, openvino-fp32"),
        (["--runtime", "torch"], "has no artifact for runtime 'torch'; it has: onnx-fp32 (onnxruntime)"),
        (["--runtime", "tflite"], "has no artifact for runtime 'litert'"),
        (["--runtime", "tvm"], "unknown runtime 'tvm'"),
        (["--budget-ms", "50", "--min-map", "60"], "run 'cvdeploy val"),
        (["--min-map", "160"], "--min-map is in mAP points, 0-100"),
        (["--imgsz", "big"], "--imgsz"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_bundle_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", str(tiny_bundle_path), "--runs", "2", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0]


def test_impossible_batch_on_the_command_line(static_bundle: Path) -> None:
    result = runner.invoke(app, ["bench", str(static_bundle), "-a", "onnx-fp32-static", "--batch", "4"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "fixed batch of 1, so --batch 4 is impossible" in lines[0]


def test_missing_bundle_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", str(tmp_path / "nope.cvd")])
    assert result.exit_code == 2
    assert "bundle not found" in result.output
