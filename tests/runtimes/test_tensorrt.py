"""TensorRT: engines built from the ONNX on this GPU, precision read back from the engine inspector.

Runs where an NVIDIA GPU and TensorRT are present; elsewhere each test is skipped with the reason
(the refusal itself is tested everywhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cvdeploy.cli.main import run
from cvdeploy.runtimes import engine
from cvdeploy.runtimes.tensorrt import gpu_missing

REASON = gpu_missing()


def test_without_a_gpu_tensorrt_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if REASON is None:
        pytest.skip("a GPU with TensorRT is present: the refusal does not apply")
    onnx = Path(__file__).parents[2] / "src/cvdeploy/zoo/bundles/n.cvd/onnx-fp32.onnx"
    assert run(["export", str(onnx), "-o", str(tmp_path / "t.cvd"), "--format", "tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--format tensorrt:" in err and "Traceback" not in err
    assert engine("trt").unsupported("fp32") == REASON
    assert not (tmp_path / "t.cvd").exists()


@pytest.mark.slow
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_export_builds_fp32_and_fp16_engines_with_parity(tmp_path: Path) -> None:
    from cvdeploy.bundle import Bundle
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.pipeline import Pipeline

    onnx = Bundle.load("zoo:n").file("onnx-fp32")
    b = export(str(onnx), tmp_path / "t.cvd", ExportOptions(formats=("onnx", "tensorrt"), parity_count=4))
    for name, precision in (("tensorrt-fp32", "fp32"), ("tensorrt-fp16", "fp16")):
        art = b.artifact(name)
        assert art.parity is not None and art.parity.passed, name
        assert art.execution is not None and art.execution["precision"] == precision, art.execution
    assert b.artifact("tensorrt-fp32").parity.max_abs_diff < 1e-2  # type: ignore[union-attr]
    from cvdeploy.images import sample_images

    ref = Pipeline.from_bundle(b, "onnx-fp32")(sample_images(2))
    got = Pipeline.from_bundle(b, "tensorrt-fp32")(sample_images(2))
    assert [len(r) for r in ref] == [len(g) for g in got]  # type: ignore[arg-type]
