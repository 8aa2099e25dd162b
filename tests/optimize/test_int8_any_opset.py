"""INT8 on any opset: opset-12 models are upgraded for per-channel weights (or fall back to per-tensor, said
so), messages never show cvdeploy's temporary folders, and segmentation/pose models quantize like detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bundle import Bundle

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def opset12_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small detector exported at opset 12 (as some Ultralytics releases do by default)."""
    import torch

    from cvdeploy.export import ExportOptions, export
    from cvdeploy.sources.onnx import ContractHints

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("op12") / "op12.cvd"
    export("python:cvdeploy.zoo.model:build_n", out,
           ExportOptions(imgsz=(160, 160), opset=12, parity_count=2, hints=ContractHints(output={"conf": 0.01})))  # fmt: skip
    return out


def test_opset12_model_gets_per_channel_int8(opset12_bundle: Path, tmp_path: Path, calib_dir: Path) -> None:
    import shutil

    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.optimize.quantize_ort import model_opset

    b = tmp_path / "b.cvd"
    shutil.copytree(opset12_bundle, b)
    assert model_opset(Bundle.load(b).file("onnx-fp32")) == 12
    said: list[str] = []
    art = quantize_int8(b, calib_dir, options=Int8Options(search=False), step=said.append)
    assert any("opset 12: upgraded to opset 13" in s for s in said)
    assert art.details["quantization"]["per_channel"] is True
    model = onnx.load(str(Bundle.load(b).file(art)))
    deq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert any(a.name == "axis" for n in deq for a in n.attribute), "no per-channel weights"


def test_converter_failure_falls_back_to_per_tensor(
    opset12_bundle: Path, tmp_path: Path, calib_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from onnx import version_converter

    from cvdeploy.optimize.int8 import Int8Options, quantize_int8

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("/tmp/cvdeploy-int8-abc/opset.onnx: no adapter for op Foo")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    b = tmp_path / "b.cvd"
    shutil.copytree(opset12_bundle, b)
    said: list[str] = []
    art = quantize_int8(b, calib_dir, options=Int8Options(search=False), step=said.append)
    note = next(s for s in said if "per-tensor" in s)
    assert "opset 12" in note and "cvdeploy-int8" not in note and "/tmp/" not in note
    assert art.details["quantization"]["per_channel"] is False
    model = onnx.load(str(Bundle.load(b).file(art)))
    assert model.opset_import[0].version == 12 or all(
        a.name != "axis" for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute
    )


def test_quantization_errors_name_no_temp_folder(tmp_path: Path) -> None:
    from cvdeploy.errors import ModelError
    from cvdeploy.optimize.quantize_ort import pre_process

    bad = tmp_path / "work" / "pre.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError) as err:
        pre_process(bad, tmp_path / "work" / "out.onnx")
    assert str(tmp_path) not in str(err.value)


def test_broken_int8_says_what_to_try_next(tiny_bundle_copy: Path, photos: list[np.ndarray]) -> None:
    from cvdeploy.errors import ParityError
    from cvdeploy.optimize.artifacts import optimized_parity
    from cvdeploy.optimize.calibration import TensorReader
    from cvdeploy.optimize.quantize_ort import OrtQuantConfig, quantize_qdq
    from cvdeploy.preprocess import Preprocessor

    b = Bundle.load(tiny_bundle_copy)
    zeros, int8 = tiny_bundle_copy / "zero.onnx", tiny_bundle_copy / "zero-int8.onnx"
    model = onnx.load(str(b.file("onnx-fp32")))
    for init in model.graph.initializer:  # every conv weight zero: an INT8 model whose outputs are gone
        arr = onnx.numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim == 4:
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(arr), init.name))
    onnx.save(model, str(zeros))
    tensors = [Preprocessor(b.contract.input)([p])[0] for p in photos[:2]]
    quantize_qdq(zeros, int8, OrtQuantConfig(), TensorReader(tensors, model.graph.input[0].name))
    with pytest.raises(ParityError, match=r"broken: .*; next: try --calib-method"):
        optimized_parity(b, int8, "onnxruntime", photos[:2], precision="int8")


@pytest.mark.slow
@pytest.mark.ultralytics
@pytest.mark.parametrize(
    ("yaml", "field"), [("yolov8n-pose.yaml", "keypoints"), ("yolov8n-seg.yaml", "polygon")]
)
def test_pose_and_segment_models_quantize_like_detectors(
    yaml: str, field: str, tmp_path: Path, calib_dir: Path
) -> None:
    """An Ultralytics pose / segmentation graph through the same INT8 path: it runs INT8 (read back), and
    its results keep their keypoints / polygons."""
    pytest.importorskip("ultralytics")
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.pipeline import Pipeline

    out = tmp_path / "m.cvd"
    export(yaml, out, ExportOptions(imgsz=(160, 160), parity_count=2))
    art = quantize_int8(out, calib_dir, options=Int8Options(search=False))
    assert art.name == "onnx-int8" and art.execution is not None and art.execution["precision"] == "int8"
    pipe = Pipeline.from_bundle(Bundle.load(out), "onnx-int8")
    pipe.contract.output.conf = 1e-4  # untrained: keep its faint detections to look at their fields
    rows = pipe.predict([next(calib_dir.glob("*.jpg"))])[0].to_list()
    assert rows and all(field in d for d in rows)
