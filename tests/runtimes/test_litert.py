"""LiteRT: what a .tflite computes in is read back from its tensor types; TFLite export keeps parity.

The runtime tests use models written with LiteRT's own schema (``tflite_builder``); the export test
needs the converter (litert-torch, the ``tflite-export`` extra) and is skipped with the reason where
it is not installed — it cannot share an environment with the server stack (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.errors import ModelError, PrecisionError
from cvdeploy.runtimes import RuntimeOptions, engine, load_runtime

pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")

from .tflite_builder import build


@pytest.mark.parametrize(
    ("weights", "executes", "evidence"),
    [
        ("fp32", "fp32", "fp32 1"),
        (
            "fp16",
            "fp32",
            "weights dequantized to float when loaded: 1 float16",
        ),  # FP16 storage, FP32 arithmetic
        ("int8", "int8", "int8 hybrid 1"),
    ],
)
def test_execution_is_read_from_the_tensor_types(
    weights: str, executes: str, evidence: str, tmp_path: Path
) -> None:
    path = build(tmp_path / f"{weights}.tflite", 64, 64, 3, weights=weights)
    rt = load_runtime("litert", path, RuntimeOptions(precision=executes, threads=1))
    ex = rt.execution()
    assert ex.precision == executes and evidence in ex.evidence and "CONV_2D 1" in ex.evidence
    out = rt.run({"images": np.random.default_rng(0).random((3, 3, 64, 64), np.float32)})[0]
    assert out.shape == (3, 7, 64) and np.isfinite(out).all()


def test_a_model_stated_at_another_precision_is_refused(tmp_path: Path) -> None:
    path = build(tmp_path / "fp16w.tflite", 64, 64, 3, weights="fp16")
    with pytest.raises(PrecisionError, match="would execute fp32, not the fp16"):
        load_runtime("litert", path, RuntimeOptions(precision="fp16"))


def test_fp16_is_declared_unsupported_on_cpus_with_the_reason() -> None:
    reason = engine("litert").unsupported("fp16")
    assert reason is not None and "compute in FP32" in reason
    assert engine("tflite").unsupported("fp32") is None and engine("tflite").unsupported("int8") is None


def test_quantized_weights_run_close_to_float(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((1, 3, 64, 64), np.float32)
    ref = load_runtime("litert", build(tmp_path / "a.tflite", 64, 64, 3)).run({"images": x})[0]
    for w, p in (("fp16", "fp32"), ("int8", "int8")):
        got = load_runtime(
            "litert", build(tmp_path / f"{w}.tflite", 64, 64, 3, weights=w), RuntimeOptions(precision=p)
        ).run({"images": x})[0]
        cos = float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got))
        assert cos > 0.999, (w, cos)
        assert not np.array_equal(ref, got), f"{w} weights changed nothing: the variant was not built"


def test_a_broken_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3 but not really a flatbuffer" * 4)
    with pytest.raises(ModelError, match="LiteRT cannot load this model"):
        load_runtime("litert", bad)


@pytest.mark.slow
def test_export_tflite_from_pytorch_with_parity(tmp_path: Path) -> None:
    pytest.importorskip(
        "litert_torch",
        reason="TFLite export needs litert-torch: pip install 'cvdeploy[tflite-export]' in its own environment",
    )
    torch = pytest.importorskip("torch")
    from cvdeploy.export import ExportOptions, export

    torch.manual_seed(0)
    b = export(
        "python:cvdeploy.zoo.model:build_n",
        tmp_path / "t.cvd",
        ExportOptions(formats=("tflite",), imgsz=(320, 320), parity_count=4),
    )
    assert {"onnx-fp32", "tflite-fp32", "tflite-int8"} <= set(
        b.artifact_names
    ) and "tflite-fp16" not in b.artifact_names
    fp32, int8 = b.artifact("tflite-fp32"), b.artifact("tflite-int8")
    assert fp32.parity and fp32.parity.passed and fp32.parity.max_abs_diff < 1e-3
    assert fp32.execution and fp32.execution["precision"] == "fp32"
    assert int8.execution and int8.execution["precision"] == "int8" and int8.parity and int8.parity.passed
