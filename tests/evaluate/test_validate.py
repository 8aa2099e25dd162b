"""validate(): detection mAP end to end through the pipeline, classification accuracy, writing metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
import yaml

from cvdeploy.bundle import Bundle
from cvdeploy.errors import BundleError, ConfigError, InputError
from cvdeploy.evaluate.datasets import read_yolo, to_coco
from cvdeploy.evaluate.runner import eval_pipeline
from cvdeploy.evaluate.validate import class_mapping, validate, write_metrics
from cvdeploy.results import Detections

LABEL_CONF = 1e-3  # the untrained tiny detector finds ~20 boxes per image above this, nothing above 0.01


@pytest.fixture(scope="module")
def self_labelled(tiny_bundle_path: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO dataset of real photos labelled with the tiny detector's own detections at conf 0.001:
    the detector must score mAP 1 on it.

    The photos are cropped square at different sizes, so each is scaled differently into the
    model, but never padded: the untrained detector also "finds" boxes in padding, which clip to
    nothing in the image and could never be labelled.
    """
    root = tmp_path_factory.mktemp("self_labelled")
    pipe = eval_pipeline(Bundle.load(tiny_bundle_path, verify=False), conf=LABEL_CONF)
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    images = []
    for i, f in enumerate(sorted(photo_dir.glob("*.jpg"))):
        img = cv2.imread(str(f))
        side = min(*img.shape[:2], 150 + 70 * i)
        images.append(root / "images" / "val" / f.name)
        cv2.imwrite(str(images[-1]), img[:side, :side])
    for f, res in zip(images, pipe.predict(images), strict=True):
        assert isinstance(res, Detections) and len(res) > 0
        h, w = cv2.imread(str(f)).shape[:2]
        lines = [
            f"{c} {(x1 + x2) / 2 / w:.9f} {(y1 + y2) / 2 / h:.9f} {(x2 - x1) / w:.9f} {(y2 - y1) / h:.9f}"
            for (x1, y1, x2, y2), c in zip(res.xyxy.tolist(), res.class_id.tolist(), strict=True)
        ]
        (root / "labels" / "val" / f"{f.stem}.txt").write_text("\n".join(lines) + "\n")
    names = Bundle.load(tiny_bundle_path, verify=False).contract.classes
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "val": "images/val", "names": names}))
    return root / "data.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_detector_scores_one_on_its_own_detections(
    tiny_bundle_path: Path, self_labelled: Path, batch: int
) -> None:
    r = validate(tiny_bundle_path, self_labelled, batch=batch, progress=False)
    assert r["mAP50-95"] == pytest.approx(1.0, abs=1e-9)
    assert r["mAP50"] == pytest.approx(1.0, abs=1e-9)
    assert (r["images"], r["format"], r["split"], r["artifact"], r["task"]) == (
        4,
        "yolo",
        "val",
        "onnx-fp32",
        "detect",
    )
    assert r["instances"] == read_yolo(self_labelled).instances > 0
    assert set(r["per_class"]) <= set(Bundle.load(tiny_bundle_path, verify=False).contract.classes)
    assert r["conf"] == 0.001 and isinstance(r["seconds"], float) and r["warnings"] == []
    json.dumps(r)  # JSON-ready


@pytest.mark.slow
def test_same_score_from_a_coco_json_and_another_runtime(tiny_bundle_path: Path, self_labelled: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    ds = read_yolo(self_labelled)
    image_dir = self_labelled.parent / "images" / "val"
    (tmp_path / "instances.json").write_text(json.dumps(to_coco(ds, image_dir)))
    r = validate(tiny_bundle_path, tmp_path / "instances.json", images=image_dir, progress=False)
    assert r["format"] == "coco" and r["mAP50-95"] == pytest.approx(1.0, abs=1e-9)
    ov = validate(tiny_bundle_path, self_labelled, artifact="openvino-fp32", limit=2, progress=False)
    assert ov["artifact"] == "openvino-fp32" and ov["images"] == 2
    assert ov["mAP50"] > 0.9  # the same network in another runtime finds the same boxes


@pytest.mark.slow
def test_write_records_metrics_but_not_the_evaluation_threshold(
    tiny_bundle_copy: Path, self_labelled: Path
) -> None:
    b = Bundle.load(tiny_bundle_copy)
    conf_before = b.contract.output.conf
    r = validate(b, self_labelled, limit=2, progress=False)
    write_metrics(b, r)
    again = Bundle.load(tiny_bundle_copy)  # sha256 still verifies: only the manifest changed
    assert again.contract.output.conf == conf_before != r["conf"]
    assert again.artifact("onnx-fp32").metrics == {"dataset": str(self_labelled), "split": "val",
                                                   "mAP50-95": 1.0, "mAP50": 1.0, "images": 2}  # fmt: skip


@pytest.mark.slow
def test_unlabelled_split_is_refused(tiny_bundle_path: Path, self_labelled: Path, tmp_path: Path) -> None:
    shutil.copytree(self_labelled.parent, tmp_path / "d")
    shutil.rmtree(tmp_path / "d" / "labels")
    data = yaml.safe_load((tmp_path / "d" / "data.yaml").read_text())
    data["path"] = str(tmp_path / "d")
    (tmp_path / "d" / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="no labelled objects in 4 images"):
        validate(tiny_bundle_path, tmp_path / "d" / "data.yaml", progress=False)


@pytest.mark.slow
def test_unknown_artifact(tiny_bundle_path: Path, self_labelled: Path) -> None:
    with pytest.raises(ConfigError, match="has no artifact 'onnx-int8'; it has: onnx-fp32, openvino-fp32"):
        validate(tiny_bundle_path, self_labelled, artifact="onnx-int8", progress=False)


def test_classifier_top1_top5(classify_bundle: Path, colour_folder: Path) -> None:
    r = validate(classify_bundle, colour_folder, progress=False, batch=2)
    # every image is classified by its colour; one blue image is filed under red
    assert r["top1"] == pytest.approx(6 / 7) and r["top5"] == 1.0
    assert r["per_class"] == {"red": {"top1": pytest.approx(2 / 3), "images": 3},
                              "green": {"top1": 1.0, "images": 2}, "blue": {"top1": 1.0, "images": 2}}  # fmt: skip
    assert (r["task"], r["images"], r["split"]) == ("classify", 7, "val")
    write_metrics(Bundle.load(classify_bundle), r)
    metrics = Bundle.load(classify_bundle).artifact().metrics
    assert metrics["top1"] == round(6 / 7, 5) and metrics["images"] == 7 and "mAP50" not in metrics


def test_classifier_needs_a_class_folder(classify_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("val: images\n")
    with pytest.raises(InputError, match="not a file"):
        validate(classify_bundle, tmp_path / "data.yaml", progress=False)


def test_raw_bundle_is_refused(raw_bundle: Path, colour_folder: Path) -> None:
    with pytest.raises(BundleError, match=r"has a 'raw' contract .* re-export it with --task"):
        validate(raw_bundle, colour_folder, progress=False)


@pytest.mark.parametrize(
    ("dataset", "model", "lookup", "warns"),
    [
        (["a", "b"], ["a", "b"], None, False),
        (["a"], ["a", "b"], None, False),  # a prefix: the same ids
        (["b", "a"], ["a", "b", "c"], [1, 0], False),  # same names in another order
        (["x", "y"], ["a", "b"], None, True),  # other names: ids as they are, with a warning
        (["x", "y"], [], None, False),  # a model without class names
    ],
)
def test_class_mapping(dataset: list[str], model: list[str], lookup: list[int] | None, warns: bool) -> None:
    got, warning = class_mapping(dataset, model)
    assert (got.tolist() if got is not None else None) == lookup
    assert bool(warning) == warns
