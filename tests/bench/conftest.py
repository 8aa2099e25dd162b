"""Fixtures for the bench tests: a fake clock, and tiny bundles with a static batch, metrics or no source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .fakes import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def static_bundle(tiny_bundle_copy: Path) -> Path:
    """The tiny bundle plus an ONNX artifact whose batch is fixed at 1 (``onnx-fp32-static``)."""
    import onnx

    from cvdeploy.bundle import Artifact, Bundle

    b = Bundle.load(tiny_bundle_copy)
    model = onnx.load(str(b.file("onnx-fp32")))
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    onnx.save(model, str(b.path / "onnx-fp32-static.onnx"))
    b.add_artifact(
        Artifact(
            name="onnx-fp32-static",
            file="onnx-fp32-static.onnx",
            runtime="onnxruntime",
            precision="fp32",
            dynamic_batch=False,
        )
    )
    return tiny_bundle_copy


@pytest.fixture
def metrics_bundle(tiny_bundle_copy: Path) -> Path:
    """The tiny bundle with accuracy recorded: onnx-fp32 0.50, openvino-fp32 0.40 mAP50-95."""
    from cvdeploy.bundle import Bundle

    b = Bundle.load(tiny_bundle_copy)
    for art in b.manifest.artifacts:
        art.metrics = {"mAP50-95": 0.50 if art.runtime == "onnxruntime" else 0.40, "mAP50": 0.7}
    b.save()
    return tiny_bundle_copy


@pytest.fixture
def no_source_bundle(tiny_bundle_copy: Path) -> Path:
    """The tiny bundle without its PyTorch source, so a fixed-size artifact cannot be re-exported."""
    from cvdeploy.bundle import Bundle

    b = Bundle.load(tiny_bundle_copy)
    src = b.manifest.provenance.source
    if src.weights:
        shutil.rmtree(b.path / Path(src.weights).parent, ignore_errors=True)
    src.factory = None
    src.weights = None
    b.save()
    return tiny_bundle_copy
