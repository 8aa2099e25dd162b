"""The demo's steps run end to end on the tiny bundle (the real ``make demo`` uses zoo:n)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_every_step(tiny_bundle_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from cvdeploy.demo import run_demo

    lines: list[str] = []
    shown: list[object] = []
    summary = run_demo(
        tmp_path / "demo", images=10, bundle=str(tiny_bundle_path), say=lines.append, bench=False,
        show=shown.append,
    )  # fmt: skip
    rows = dict(summary.rows)
    assert Path(rows["dataset"]).is_file()
    assert (Path(rows["bundle"]) / "openvino-fp32" / "model.xml").is_file()
    assert "max abs diff" in rows["parity openvino-fp32"]
    assert "mAP50-95 onnx-fp32" in rows and "mAP50-95 openvino-fp32" in rows
    assert len(list((tmp_path / "demo" / "predictions").glob("*.jpg"))) >= 4
    assert "detections" in rows["serve image API"]
    assert "output0 [1, 10, 2100]" in rows["serve v2 binary infer"]
    assert any(line.startswith("7/7") for line in lines)
    # the INT8 step shows the variants table: every artifact measured, the report written
    (doc,) = shown
    assert "Variants" in [section.title for section in doc.sections]  # type: ignore[attr-defined]
    assert {"speedup onnx-int8", "speedup openvino-fp32"} <= set(rows)
    assert Path(rows["variants report"]).is_file()
    assert "onnx-int8" in Path(rows["variants report"]).read_text()
    # BF16 is a measured variant where the CPU has it natively, and said why not elsewhere
    from cvdeploy.optimize.reduced import reduced_unsupported

    if reduced_unsupported("bf16") is None:
        assert "speedup openvino-bf16" in rows and "executes bf16" in rows["mAP50-95 openvino-bf16"]
    else:
        assert rows["openvino-bf16"].startswith("not made here:")
    # one unit for mAP everywhere: points
    assert all(str(v).split()[1] == "points" for k, v in rows.items() if k.startswith("mAP50-95 "))


def test_demo_bf16_step_without_native_bf16(tiny_bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from cvdeploy import env
    from cvdeploy.bundle import Bundle
    from cvdeploy.demo import DemoSummary, _bf16

    monkeypatch.setattr(env, "cpu_capabilities", lambda flags=None: dict.fromkeys(env.CAPABILITIES, False))
    summary = DemoSummary(tiny_bundle_copy.parent)
    lines: list[str] = []
    _bf16(Bundle.load(tiny_bundle_copy), tiny_bundle_copy / "unused.yaml", summary, lines.append)
    assert "no native BF16" in dict(summary.rows)["openvino-bf16"]
    assert "openvino-bf16" not in Bundle.load(tiny_bundle_copy).artifact_names
