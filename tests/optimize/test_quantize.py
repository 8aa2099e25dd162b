"""INT8 and FP16 artifacts: they load, run, keep the head in float and record what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bundle import Bundle
from cvdeploy.optimize.quantize_ort import choose_types

from .builders import manifest_bytes

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize(
    ("choice", "flags", "want"),
    [
        ("auto", ["avx2", "fma"], "u8s8"),  # AVX2 without VNNI: S8S8 runs slower than FP32
        ("auto", ["avx2", "avx512f", "avx512_vnni"], "u8s8"),  # VNNI multiplies u8 x s8; measured S8S8 0.39x
        ("auto", ["asimd", "asimddp"], "s8s8"),  # Arm dot-product
        ("s8s8", ["avx2"], "s8s8"),
        ("u8s8", ["asimddp"], "u8s8"),
    ],
)
def test_types_follow_the_cpu(choice: str, flags: list[str], want: str) -> None:
    t = choose_types(choice, flags)
    assert t.tag == want and t.weight == "s8" and t.reason


def test_unknown_type_choice() -> None:
    from cvdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="u8s8"):
        choose_types("int4")


def _run(bundle: Path, artifact: str, photos: list[np.ndarray]) -> list:
    from cvdeploy.pipeline import Pipeline

    pipe = Pipeline.from_bundle(bundle, artifact)
    pipe.contract.output.conf = 1e-4
    return pipe.predict(photos[:2])


def test_onnx_int8_artifact(tiny_bundle_copy: Path, calib_dir: Path, photos: list[np.ndarray]) -> None:
    from cvdeploy.optimize.head import find_head_decode
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8

    art = quantize_int8(tiny_bundle_copy, calib_dir, options=Int8Options(search=False))
    b = Bundle.load(tiny_bundle_copy)  # sha256 verified
    assert art.name == "onnx-int8" and b.artifact("onnx-int8").precision == "int8"
    assert art.parity is not None and art.parity.cosine > 0.9
    assert art.details["quantization"]["activations"] in ("u8", "s8")
    assert art.details["calibration"]["images"] == 6 and art.notes  # few images: a warning is recorded
    model = onnx.load(str(b.file("onnx-int8")))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the head is float: no DequantizeLinear feeds the score Sigmoid or the final Concat
    prod = {o: n for n in model.graph.node for o in n.output}
    final = prod[model.graph.output[0].name]
    assert final.op_type == "Concat" and all(prod[i].op_type != "DequantizeLinear" for i in final.input)
    fp32 = onnx.load(str(b.file("onnx-fp32")))
    assert find_head_decode(fp32).nodes
    ref, out = _run(tiny_bundle_copy, "onnx-fp32", photos), _run(tiny_bundle_copy, "onnx-int8", photos)
    assert len(out) == len(ref) == 2 and sum(len(r) for r in out) > 0  # scores survived quantization


@pytest.mark.slow
def test_whole_graph_quantization_is_different(tiny_bundle_copy: Path, calib_dir: Path) -> None:
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8

    art = quantize_int8(
        tiny_bundle_copy, calib_dir, options=Int8Options(search=False, float_head=False, tag="all")
    )
    assert art.name == "onnx-int8-all" and art.details["float_head"]["nodes"] == 0


def test_openvino_int8_artifact(tiny_bundle_copy: Path, calib_dir: Path, photos: list[np.ndarray]) -> None:
    pytest.importorskip("nncf")
    from cvdeploy.optimize.int8 import quantize_int8

    art = quantize_int8(tiny_bundle_copy, calib_dir, runtime="openvino")
    assert art.name == "openvino-int8" and art.runtime == "openvino"
    assert set(art.sha256) == {"openvino-int8/model.xml", "openvino-int8/model.bin"}
    # quantized ops run INT8 and everything else FP32 (never the plugin's BF16 default), read back
    assert art.execution is not None and art.execution["precision"] == "int8"
    assert art.execution["settings"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert art.details["float_head"]["openvino_ops"] > 0
    assert len(_run(tiny_bundle_copy, "openvino-int8", photos)) == 2


def test_fp16_artifact(tiny_bundle_copy: Path, photos: list[np.ndarray]) -> None:
    from cvdeploy.optimize.fp16 import to_fp16

    art = to_fp16(tiny_bundle_copy)
    b = Bundle.load(tiny_bundle_copy)
    model = onnx.load(str(b.file(art)))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float I/O kept
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert art.parity is not None and art.parity.cosine > 0.999
    assert len(_run(tiny_bundle_copy, "onnx-fp16", photos)) == 2


def test_failure_leaves_the_bundle_unchanged(tiny_bundle_copy: Path, calib_dir: Path) -> None:
    from cvdeploy.errors import ImageError
    from cvdeploy.optimize.int8 import quantize_int8

    (calib_dir / "broken.png").write_bytes(b"\x89PNG nope")
    before = manifest_bytes(tiny_bundle_copy)
    files = sorted(p.name for p in tiny_bundle_copy.iterdir())
    with pytest.raises(ImageError, match=r"broken\.png"):
        quantize_int8(tiny_bundle_copy, calib_dir)
    assert manifest_bytes(tiny_bundle_copy) == before
    assert sorted(p.name for p in tiny_bundle_copy.iterdir()) == files
