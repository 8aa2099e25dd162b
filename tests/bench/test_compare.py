"""``bench compare``: the verdict on synthetic samples with and without a real shift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cvdeploy.bench.compare import SCHEMA, compare_pair, compare_reports, environment_changes, load_report
from cvdeploy.cli.main import app
from cvdeploy.errors import ConfigError, InputError


def _samples(seed: int, scale: float = 1.0, n: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(20.0), 0.08, n) * scale


@pytest.mark.parametrize(
    ("scale", "verdict", "regression"),
    [
        (1.00, "no real difference", False),  # a fresh draw of the same distribution
        (1.20, "slower", True),
        (0.80, "faster", False),
        (1.03, "slower", False),  # real, but within the 5 % threshold
    ],
)
def test_verdict_on_synthetic_shifts(scale: float, verdict: str, regression: bool) -> None:
    a = _samples(0, n=2000)
    b = _samples(1, scale, n=2000)
    p = compare_pair(a, b, "k", "k", threshold=0.05, alpha=0.01)
    assert p.verdict == verdict
    assert p.regression is regression
    assert p.ci_low <= p.ratio <= p.ci_high
    assert p.change == pytest.approx(scale - 1.0, abs=0.02)


def _report(results: dict[str, np.ndarray], libs: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "environment": {"libraries": libs or {"onnxruntime": "1.32.0"}, "cpu": {"model": "x", "cores": 2}},
        "results": [
            {"key": k, "samples_ms": {"total": v.tolist(), "inference": (v * 0.8).tolist()}}
            for k, v in results.items()
        ],
    }


def test_compare_reports_matches_by_key_and_lists_the_rest() -> None:
    a = _report(
        {"onnx-fp32 640x640 b1 tauto c1": _samples(0), "openvino-fp32 640x640 b1 tauto c1": _samples(1)}
    )
    b = _report(
        {"onnx-fp32 640x640 b1 tauto c1": _samples(2, 1.3), "onnx-int8 640x640 b1 tauto c1": _samples(3)},
        libs={"onnxruntime": "1.33.0"},
    )
    cmp = compare_reports(a, b, stage="inference")
    assert [p.key_a for p in cmp.pairs] == ["onnx-fp32 640x640 b1 tauto c1"]
    assert cmp.only_a == ["openvino-fp32 640x640 b1 tauto c1"]
    assert cmp.only_b == ["onnx-int8 640x640 b1 tauto c1"]
    assert [p.label for p in cmp.regressions] == ["onnx-fp32 640x640 b1 tauto c1"]
    assert cmp.environment_changes == ["onnxruntime 1.32.0 → 1.33.0"]


def test_single_configurations_are_compared_even_when_keys_differ() -> None:
    cmp = compare_reports(
        _report({"onnx-fp32 640x640 b1 tauto c1": _samples(0)}),
        _report({"onnx-int8 640x640 b1 tauto c1": _samples(1, 0.7)}),
    )
    assert len(cmp.pairs) == 1
    assert cmp.pairs[0].verdict == "faster"
    assert cmp.pairs[0].label == "onnx-fp32 640x640 b1 tauto c1 → onnx-int8 640x640 b1 tauto c1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": -0.1}, "--threshold"),
        ({"alpha": 1.5}, "--alpha"),
        ({"stage": "warp"}, "no 'warp' samples"),
    ],
)
def test_compare_reports_bad_options(kwargs: dict[str, Any], match: str) -> None:
    a = _report({"k": _samples(0)})
    with pytest.raises(ConfigError, match=match):
        compare_reports(a, a, **kwargs)


def test_environment_changes_lists_cpu_and_gpu() -> None:
    a = {"cpu": {"model": "A", "cores": 2}, "gpu": [], "libraries": {}}
    b = {"cpu": {"model": "B", "cores": 2}, "gpu": ["H200"], "libraries": {}}
    assert environment_changes(a, b) == ["cpu model A → B", "gpu none → ['H200']"]


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (None, InputError, "report not found"),
        ("not json {", ConfigError, "is not JSON"),
        (json.dumps({"hello": 1}), ConfigError, "not a cvdeploy bench report"),
        (json.dumps([1, 2]), ConfigError, "not a cvdeploy bench report"),
        (json.dumps({"schema": SCHEMA, "results": [{"key": "k"}]}), ConfigError, "no raw samples"),
    ],
)
def test_load_report_refuses_what_is_not_a_report(
    tmp_path: Path, content: str | None, error: type, match: str
) -> None:
    p = tmp_path / "r.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(error, match=match):
        load_report(p)


def _write(path: Path, report: dict[str, Any]) -> Path:
    path.write_text(json.dumps(report))
    return path


@pytest.mark.parametrize(("scale", "code"), [(1.25, 1), (1.0, 0), (0.75, 0)])
def test_cli_compare_exit_code_gates_ci(tmp_path: Path, scale: float, code: int) -> None:
    a = _write(tmp_path / "a.json", _report({"k": _samples(0)}))
    b = _write(tmp_path / "b.json", _report({"k": _samples(1, scale)}))
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(b), "--threshold", "0.05"])
    assert result.exit_code == code, result.output
    assert "B against A" in result.output


def test_cli_compare_json_output(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", _report({"k": _samples(0)}))
    b = _write(tmp_path / "b.json", _report({"k": _samples(1, 1.5)}))
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(b), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["regressions"] == 1
    assert doc["pairs"][0]["verdict"] == "slower"


def test_cli_compare_on_a_non_report_is_a_one_line_error(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", _report({"k": _samples(0)}))
    bad = _write(tmp_path / "other.json", {"predictions": []})
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "not a cvdeploy bench report" in lines[0]


def test_a_change_in_machine_load_is_reported() -> None:
    a = {**_report({"k": _samples(0)}), "system_load": {"start": [0.4, 0.5, 0.5], "end": [0.6, 0.5, 0.5]}}
    b = {**_report({"k": _samples(1)}), "system_load": {"start": [3.9, 2.0, 1.0], "end": [4.2, 2.0, 1.0]}}
    assert compare_reports(a, b).environment_changes == [
        "load average 0.6 → 4.2 (other work on the machine changes timings)"
    ]
    assert compare_reports(a, a).environment_changes == []
