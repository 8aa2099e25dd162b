"""fidelity(): an artifact scored against another artifact's outputs, without labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import BundleError, ConfigError
from cvdeploy.evaluate.fidelity import fidelity, write_fidelity

# The untrained tiny detector scores every box about 0.002: at conf 0.001 it gives ~20 boxes per image
# (nothing at its contract's 0.01), so both the pseudo-labels and the predictions use 0.001 here.
LOW = {"conf": 1e-3, "reference_conf": 1e-3, "progress": False}


def add_perturbed_artifact(bundle_path: Path, std: float = 0.3) -> str:
    """Copy the bundle's ONNX with noise added to the box-regression bias and record it as an artifact.

    (Scaling a weight does not do it for this untrained network: its head features are ~0, so its
    outputs come from the biases. Its box biases are all equal, so scaling them changes nothing either.)
    """
    import onnx
    from onnx import numpy_helper

    bundle = Bundle.load(bundle_path)
    model = onnx.load(str(bundle.file("onnx-fp32")))
    inits = {i.name: i for i in model.graph.initializer}
    box_convs = [
        n for n in model.graph.node if n.op_type == "Conv" and ".box." in n.input[1] and len(n.input) > 2
    ]
    bias = inits[box_convs[-1].input[2]]
    values = numpy_helper.to_array(bias)
    noisy = values + np.random.default_rng(0).normal(0, std, values.shape).astype(values.dtype)
    bias.CopyFrom(numpy_helper.from_array(noisy, bias.name))
    onnx.save(model, str(bundle_path / "onnx-fp32-perturbed.onnx"))
    bundle.add_artifact(Artifact(name="onnx-fp32-perturbed", file="onnx-fp32-perturbed.onnx",
                                 runtime="onnxruntime", dynamic_batch=True, made_by="test"))  # fmt: skip
    return "onnx-fp32-perturbed"


@pytest.mark.slow
def test_an_artifact_against_itself_is_exactly_one(tiny_bundle_path: Path, photo_dir: Path) -> None:
    r = fidelity(tiny_bundle_path, photo_dir, "onnx-fp32", "onnx-fp32", batch=2, **LOW)
    assert r["reference_detections"] > 0
    assert (r["mAP50-95"], r["mAP50"], r["box_agreement"], r["max_abs_diff"]) == (1.0, 1.0, 1.0, 0.0)
    assert (r["images"], r["artifact"], r["against"], r["dataset"]) == (
        4,
        "onnx-fp32",
        "onnx-fp32",
        str(photo_dir),
    )
    json.dumps(r)


@pytest.mark.slow
def test_a_perturbed_copy_scores_lower(tiny_bundle_copy: Path, photo_dir: Path) -> None:
    name = add_perturbed_artifact(tiny_bundle_copy)
    r = fidelity(tiny_bundle_copy, photo_dir, name, "onnx-fp32", **LOW)
    assert r["reference_detections"] > 0
    assert r["mAP50-95"] < 0.95 and r["box_agreement"] < 0.95
    assert r["max_abs_diff"] > 1.0  # box coordinates moved by pixels
    write_fidelity(Bundle.load(tiny_bundle_copy), r)
    recorded = Bundle.load(tiny_bundle_copy).artifact(name).metrics["fidelity"]
    assert recorded["against"] == "onnx-fp32" and recorded["mAP50-95"] == r["mAP50-95"]


@pytest.mark.slow
def test_openvino_reproduces_onnx_on_a_data_yaml(tiny_bundle_path: Path, shapes_yaml: Path) -> None:
    r = fidelity(tiny_bundle_path, shapes_yaml, "openvino-fp32", "onnx-fp32", **LOW)
    assert r["images"] == 6 and r["dataset"] == str(shapes_yaml)  # the val split; its labels are ignored
    assert r["mAP50"] > 0.95 and r["box_agreement"] > 0.95 and r["max_abs_diff"] < 1e-2


@pytest.mark.slow
def test_reference_that_finds_nothing_has_nothing_to_agree_on(
    tiny_bundle_path: Path, photo_dir: Path
) -> None:
    # pseudo-labels at the contract's conf (0.01): the untrained reference finds nothing
    r = fidelity(tiny_bundle_path, photo_dir, "openvino-fp32", "onnx-fp32", limit=2, progress=False)
    assert r["reference_conf"] == 0.01 and r["reference_detections"] == 0 and r["images"] == 2
    assert (r["mAP50-95"], r["mAP50"], r["box_agreement"]) == (None, None, None)
    assert r["max_abs_diff"] is not None


@pytest.mark.slow
def test_unknown_reference_artifact(tiny_bundle_path: Path, photo_dir: Path) -> None:
    with pytest.raises(ConfigError, match="has no artifact 'onnx-int8'"):
        fidelity(tiny_bundle_path, photo_dir, None, "onnx-int8", progress=False)


def test_classifier_fidelity_is_top1_agreement(classify_bundle: Path, colour_folder: Path) -> None:
    r = fidelity(classify_bundle, colour_folder / "val", None, "onnx-fp32", progress=False)
    assert (r["top1_agreement"], r["top5_agreement"], r["max_abs_diff"], r["images"]) == (1.0, 1.0, 0.0, 7)
    assert "mAP50-95" not in r


def test_raw_bundle_is_refused(raw_bundle: Path, colour_folder: Path) -> None:
    with pytest.raises(BundleError, match="'raw' contract"):
        fidelity(raw_bundle, colour_folder, None, "onnx-fp32", progress=False)
