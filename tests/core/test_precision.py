"""What runs is what was checked: every artifact executes the precision its name states, on any CPU.

Tested with the *trained* shipped zoo:n at 640 (small activations of untrained models hide precision
loss): exported to every runtime present, each artifact's detections on real photographs compared with
the PyTorch source; every reduced precision this machine supports forced and checked to be named and
recorded as such (and refused with a reason where it is not supported); a mismatch between what an
artifact states and what the engine would run is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cvdeploy import env
from cvdeploy.bundle import Bundle
from cvdeploy.errors import PrecisionError
from cvdeploy.parity import detection_agreement
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import ENGINES, RuntimeOptions, engine, load_runtime

pytestmark = pytest.mark.slow
EXPORTABLE = [f for f in ("onnx", "openvino") if engine(f).available()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped, trained zoo:n exported from its PyTorch source to every runtime installed here."""
    pytest.importorskip("torch")
    from cvdeploy.export import ExportOptions, export

    out = tmp_path_factory.mktemp("precision") / "n.cvd"
    export("zoo:n", out, ExportOptions(formats=tuple(EXPORTABLE), dynamic_batch=True, parity_count=6))
    return out


@pytest.fixture(scope="module")
def reference(trained: Path, photos: list[np.ndarray]) -> list:
    """The PyTorch source's detections on the real photographs, through the same contract."""
    from cvdeploy.optimize.source import load_source_model
    from cvdeploy.runtimes.torch import TorchRuntime

    b = Bundle.load(trained)
    return Pipeline(b.contract, TorchRuntime(load_source_model(b)), None).predict(photos)


def test_every_artifact_reproduces_the_source_detections_at_its_stated_precision(
    trained: Path, photos: list[np.ndarray], reference: list
) -> None:
    b = Bundle.load(trained)
    assert {a.runtime for a in b.manifest.artifacts} == {engine(f).name for f in EXPORTABLE}
    assert sum(len(r) for r in reference) >= 3, (
        "the trained model must find objects for this test to mean anything"
    )
    for art in b.manifest.artifacts:
        assert art.precision == "fp32"
        assert art.execution is not None and art.execution["precision"] == "fp32", art.execution
        assert art.execution["cpu_capabilities"] == env.cpu_capabilities()
        pipe = Pipeline.from_bundle(b, art.name)
        assert pipe.runtime.execution().precision == "fp32"
        agreement = detection_agreement(reference, pipe.predict(photos))
        assert agreement is not None and agreement >= 0.98, (art.name, agreement)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_each_reduced_precision_is_made_where_native_and_refused_elsewhere(
    trained: Path, tmp_path: Path, precision: str, photos: list[np.ndarray], reference: list
) -> None:
    if not engine("openvino").available():
        pytest.skip("OpenVINO is not installed")
    from cvdeploy.optimize.reduced import reduced_unsupported, to_openvino_precision

    work = tmp_path / "n.cvd"
    shutil.copytree(trained, work)
    b = Bundle.load(work)
    why = reduced_unsupported(precision)
    if why is not None:  # this CPU has no native arithmetic for it: refused before any work, bundle unchanged
        before = (work / "cvdeploy.yaml").read_bytes()
        with pytest.raises(PrecisionError, match=f"--{precision}: .*no native {precision.upper()}"):
            to_openvino_precision(b, precision)
        assert (work / "cvdeploy.yaml").read_bytes() == before
        assert not (work / f"openvino-{precision}").exists()
        return
    art = to_openvino_precision(b, precision)
    assert art.name == f"openvino-{precision}" and art.precision == precision
    assert art.execution is not None and art.execution["precision"] == precision
    reloaded = Bundle.load(work)
    pipe = Pipeline.from_bundle(reloaded, art.name)
    assert pipe.runtime.execution().precision == precision
    # reduced precision moves boxes by pixels but must keep the detections
    agreement = detection_agreement(reference, pipe.predict(photos))
    assert agreement is not None and agreement >= 0.85, agreement


def test_a_runtime_that_would_run_another_precision_is_refused(trained: Path) -> None:
    b = Bundle.load(trained)
    if "openvino-fp32" not in b.artifact_names:
        pytest.skip("OpenVINO is not installed")
    xml = b.file("openvino-fp32")
    # an artifact stating bf16 but compiled for f32: refused on every CPU
    with pytest.raises(PrecisionError, match="would execute fp32, not the bf16"):
        load_runtime("openvino", xml, RuntimeOptions(precision="bf16", extra={"precision_hint": "f32"}))
    # an artifact stating fp32 compiled with a BF16 hint: what OpenVINO does by default on BF16 CPUs
    if env.cpu_capabilities()["bf16"]:
        with pytest.raises(PrecisionError, match="would execute bf16, not the fp32"):
            load_runtime("openvino", xml, RuntimeOptions(precision="fp32", extra={"precision_hint": "bf16"}))


def test_an_int8_graph_is_never_run_as_fp32(trained: Path, tmp_path: Path) -> None:
    """An ONNX file with quantized operators named as FP32 is refused by the read-back."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.UINT8, [], [0])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [x], [y], [scale, zp],
    )  # fmt: skip
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(PrecisionError, match="would execute int8, not the fp32"):
        load_runtime("onnxruntime", path)
    assert load_runtime("onnxruntime", path, RuntimeOptions(precision="int8")).execution().precision == "int8"


def test_inspect_shows_what_each_artifact_executes(trained: Path) -> None:
    from typer.testing import CliRunner

    from cvdeploy.cli.main import app

    result = CliRunner().invoke(app, ["inspect", str(trained)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "runs here" in result.output and "checked as" in result.output
    assert f"fp32 on {env.cpu_info()['model']}" in result.output
    assert env.capabilities_line() in result.output


def test_registry_lists_every_engine_the_manifest_accepts() -> None:
    from cvdeploy.bundle import Artifact

    for name in ENGINES:
        Artifact(name=f"{engine(name).prefix}-fp32", file="x", runtime=name)
    with pytest.raises(ValueError, match="unknown runtime"):
        Artifact(name="x-fp32", file="x", runtime="tensorflow")
    with pytest.raises(ValueError, match="unknown precision"):
        Artifact(name="onnx-fp8", file="x", runtime="onnxruntime", precision="fp8")
