"""The public surface of ``cvdeploy.bench`` and ``cvdeploy.reports`` is deliberate, and importing
them (or the CLI module) pulls in no heavy optional library."""

from __future__ import annotations

import subprocess
import sys

import cvdeploy.bench
import cvdeploy.reports


def test_bench_all_is_pinned() -> None:
    assert sorted(cvdeploy.bench.__all__) == sorted(
        [
            "STAGES",
            "BenchConfig",
            "BenchReport",
            "BenchResult",
            "BenchSettings",
            "Comparison",
            "ImageFeed",
            "LatencyStats",
            "Measurement",
            "OperatorProfile",
            "PairComparison",
            "Progress",
            "Recommendation",
            "SkippedConfig",
            "bootstrap_median_ratio",
            "compare_reports",
            "load_report",
            "mann_whitney_u",
            "measure",
            "pareto_front",
            "recommend",
            "run_bench",
            "summarize",
            "time_pass",
        ]
    )
    assert all(hasattr(cvdeploy.bench, name) for name in cvdeploy.bench.__all__)


def test_reports_all_is_pinned() -> None:
    assert sorted(cvdeploy.reports.__all__) == sorted(
        [
            "Callout",
            "Document",
            "Figure",
            "KeyValues",
            "Paragraph",
            "Section",
            "Table",
            "as_document",
            "render_html",
            "render_markdown",
            "to_jsonable",
            "write_html",
            "write_json",
            "write_markdown",
        ]
    )
    assert all(hasattr(cvdeploy.reports, name) for name in cvdeploy.reports.__all__)


def test_imports_stay_light() -> None:
    code = (
        "import sys, cvdeploy.cli.bench_cmd, cvdeploy.bench, cvdeploy.reports; "
        "heavy = [m for m in ('onnxruntime', 'openvino', 'torch', 'matplotlib', 'jinja2') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
