"""``cvdeploy val``: JSON output, the table, --write, --against, and user errors as one line with exit 2.

Most tests use a hand-made "detector" whose ONNX graph returns the same two boxes for every image,
so labels that match them exactly are easy to write and the expected mAP is exactly 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cvdeploy.bundle import Bundle
from cvdeploy.cli.main import app

runner = CliRunner()

# Two boxes in the 32x32 model input (cx, cy, w, h) with class scores (a, b): a 64x64 image is
# scaled by 0.5 with no padding, so in the image they are twice as large.
MODEL_BOXES = [(8.0, 8.0, 8.0, 8.0, 0.9, 0.0), (24.0, 20.0, 10.0, 6.0, 0.0, 0.8)]
LABELS = "0 0.25 0.25 0.25 0.25\n1 0.75 0.625 0.3125 0.1875\n"  # the same boxes, normalised to the image


def _constant_detector_onnx(path: Path) -> None:
    """ONNX: ``(N, 3, 32, 32)`` → ``(N, 6, 2)`` yolov8 output holding MODEL_BOXES for every image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = np.asarray(MODEL_BOXES, np.float32).T[None]  # (1, 4 + 2, 2)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 6, 2])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),  # (N, 1, 1, 1)
        helper.make_node("Reshape", ["m", "shape"], ["m3"]),  # (N, 1, 1)
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["z", "const"], ["output0"]),  # broadcast to (N, 6, 2)
    ]
    inits = [
        numpy_helper.from_array(np.asarray([-1, 1, 1], np.int64), "shape"),
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(const, "const"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "constant", [x], [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _make_bundle(path: Path, task: str = "detect") -> Path:
    from cvdeploy.bundle import Artifact, Manifest, Provenance, Source, now_iso
    from cvdeploy.contract import Contract, InputSpec, OutputSpec

    contract = Contract(
        task=task,
        classes=["a", "b"],
        input=InputSpec(height=32, width=32, dynamic_batch=True),
        output=OutputSpec(format="yolov8" if task == "detect" else "raw", conf=0.25),
    )
    prov = Provenance(source=Source(kind="onnx"), created=now_iso())
    bundle = Bundle.create(path, Manifest(name=path.stem, contract=contract, provenance=prov))
    _constant_detector_onnx(path / "onnx-fp32.onnx")
    for name in ("onnx-fp32", "onnx-fp32-copy"):
        bundle.add_artifact(
            Artifact(name=name, file="onnx-fp32.onnx", runtime="onnxruntime", dynamic_batch=True)
        )
    return path


@pytest.fixture
def det_bundle(tmp_path: Path) -> Path:
    return _make_bundle(tmp_path / "const.cvd")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """YOLO layout: 3 val images of 64x64 whose labels are exactly the detector's boxes."""
    root = tmp_path / "data"
    for split in ("val",):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), np.full((64, 64, 3), 40 * i, np.uint8))
            (root / "labels" / split / f"{i}.txt").write_text(LABELS)
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": str(root), "val": "images/val", "names": ["a", "b"]})
    )
    return root / "data.yaml"


def _invoke(*args: object) -> tuple[int, str, str]:
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def test_json_has_the_keys_and_exact_scores(det_bundle: Path, dataset: Path) -> None:
    code, out, _ = _invoke("val", det_bundle, "--data", dataset, "--json", "--batch", "2")
    assert code == 0
    doc = json.loads(out)
    assert {"mAP50-95", "mAP50", "per_class", "images", "artifact", "dataset", "seconds"} <= set(doc)
    assert (doc["mAP50-95"], doc["mAP50"], doc["images"], doc["artifact"]) == (100.0, 100.0, 3, "onnx-fp32")
    assert doc["unit"] == "points"
    assert doc["per_class"] == {
        "a": {"mAP50-95": 100.0, "mAP50": 100.0, "instances": 3},
        "b": {"mAP50-95": 100.0, "mAP50": 100.0, "instances": 3},
    }
    assert doc["dataset"] == str(dataset) and doc["split"] == "val"


def test_table_output(det_bundle: Path, dataset: Path) -> None:
    code, out, _ = _invoke("val", det_bundle, "--data", dataset.parent)  # a folder holding data.yaml
    assert code == 0
    assert "mAP50-95 100.0  mAP50 100.0 (points)" in out and "3 images from" in out
    assert all(word in out for word in ("class", "instances", "all"))


def test_write_records_in_the_manifest(det_bundle: Path, dataset: Path) -> None:
    code, out, _ = _invoke("val", det_bundle, "--data", dataset, "-a", "onnx-fp32-copy", "--write")
    assert code == 0 and "recorded in the manifest" in out
    b = Bundle.load(det_bundle)
    assert b.artifact("onnx-fp32-copy").metrics == {
        "dataset": str(dataset),
        "split": "val",
        "mAP50-95": 1.0,
        "mAP50": 1.0,
        "images": 3,
    }
    assert b.artifact("onnx-fp32").metrics == {}
    assert b.contract.output.conf == 0.25  # the evaluation threshold never reaches the manifest


def test_against_on_a_plain_image_folder(det_bundle: Path, dataset: Path) -> None:
    folder = dataset.parent / "images" / "val"
    code, out, _ = _invoke(
        "val", det_bundle, "--data", folder, "-a", "onnx-fp32-copy", "--against", "onnx-fp32", "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert {"mAP50-95", "mAP50", "max_abs_diff", "box_agreement", "images", "artifact", "dataset"} <= set(doc)
    assert (doc["mAP50-95"], doc["box_agreement"], doc["max_abs_diff"], doc["images"]) == (100.0, 1.0, 0.0, 3)
    assert doc["reference_detections"] == 6  # both boxes pass the contract's conf 0.25


def test_help_lists_the_options() -> None:
    code, out, _ = _invoke("val", "--help")
    assert code == 0
    assert all(opt in out for opt in ("--data", "--against", "--write", "--json", "--split", "--images"))


def _bad_label(dataset: Path) -> None:
    (dataset.parent / "labels" / "val" / "1.txt").write_text("5 0.5 0.5 0.1 0.1\n")


def _bad_image(dataset: Path) -> None:
    (dataset.parent / "images" / "val" / "2.jpg").write_bytes(b"not an image")


def _no_split(dataset: Path) -> None:
    data = yaml.safe_load(dataset.read_text())
    data["test"] = None
    dataset.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("args", "prepare", "message"),
    [
        (["--data", "{tmp}/missing/data.yaml"], None, "dataset not found: "),
        (["--data", "{data}", "--split", "test"], _no_split, "has no 'test' split; it has: val"),
        (["--data", "{data}"], _bad_label, "1.txt line 1: class id 5 is out of range for the 2 classes"),
        (["--data", "{data}"], _bad_image, "2.jpg: cannot read as an image"),
        (
            ["--data", "{data}", "--against", "onnx-int8"],
            None,
            "has no artifact 'onnx-int8'; it has: onnx-fp32",
        ),
        (["--data", "{data}", "--artifact", "openvino-fp32"], None, "has no artifact 'openvino-fp32'"),
        (["--data", "{data}", "--batch", "0"], None, None),  # typer's own range check, also exit 2
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    det_bundle: Path, dataset: Path, tmp_path: Path, args: list[str], prepare: object, message: str | None
) -> None:
    if callable(prepare):
        prepare(dataset)
    argv = [a.format(tmp=tmp_path, data=dataset) for a in args]
    code, out, err = _invoke("val", det_bundle, *argv)
    assert code == 2 and out == ""
    if message is not None:
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err


def test_raw_bundle_is_refused(tmp_path: Path, dataset: Path) -> None:
    raw = _make_bundle(tmp_path / "raw.cvd", task="raw")
    code, _, err = _invoke("val", raw, "--data", dataset)
    assert code == 2 and err.count("\n") == 1
    assert "has a 'raw' contract" in err


def test_missing_bundle(tmp_path: Path, dataset: Path) -> None:
    code, _, err = _invoke("val", tmp_path / "nope.cvd", "--data", dataset)
    assert code == 2 and "bundle not found" in err and err.count("\n") == 1


@pytest.mark.slow
def test_tiny_detector_against_openvino(tiny_bundle_path: Path, photo_dir: Path) -> None:
    """The real exported detector, both runtimes, through the CLI: untrained, it finds nothing at conf 0.01."""
    code, out, _ = _invoke(
        "val",
        tiny_bundle_path,
        "--data",
        photo_dir,
        "--artifact",
        "openvino-fp32",
        "--against",
        "onnx-fp32",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["reference_detections"] == 0 and doc["mAP50-95"] is None  # nothing above the contract's 0.01
    assert doc["max_abs_diff"] < 1e-2 and doc["images"] == 4
