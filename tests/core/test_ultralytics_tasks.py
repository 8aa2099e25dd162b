"""Every Ultralytics task and export variant through cvdeploy, compared with Ultralytics' own predict.

The matrix: YOLOv8n, YOLO11n and YOLO26n × detect, segment, pose, obb, classify, and YOLOv5u (``yolov5n``,
Ultralytics' anchor-free YOLOv5; detect is the only task it has) × the ``.pt`` checkpoint and
Ultralytics' ONNX exports (plain, ``nms=True``, dynamic), all built from yaml offline and planted
(see ``ultralytics_farm``). For each, cvdeploy makes a bundle from the file (no flags) and predicts
on real photographs; Ultralytics predicts on the *same file* with the same thresholds. Boxes agree
within 1 px, keypoints within 1 px, masks at IoU ≥ 0.95, rotated boxes within 1 px and 0.01 rad,
classes exactly, classifier probabilities to 1e-4.

Ultralytics runs with ``rect=False`` (a square letterbox, as a fixed-size bundle uses) and
``retina_masks=True`` (masks at the original resolution, as cvdeploy gives them). Each image's
threshold is put in a gap of Ultralytics' own scores so ~12 detections are compared per image and
no detection sits on the threshold — a comparison of zero boxes with zero boxes would assert nothing,
so every case also checks that detections were compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ultralytics_farm import IMGSZ, VARIANTS, Farm

pytest.importorskip("ultralytics")
pytestmark = [pytest.mark.ultralytics, pytest.mark.slow]

ARCHS = ("yolov8n", "yolo11n", "yolo26n")
TASKS = ("detect", "segment", "pose", "obb", "classify")
PER_IMAGE = 12  # detections compared per image
CASES = [
    (arch, task, variant)
    for arch in ARCHS
    for task in TASKS
    for variant in VARIANTS
    if not (task == "classify" and variant == "onnx-nms")
] + [("yolov5n", "detect", variant) for variant in VARIANTS]


@pytest.fixture(scope="module")
def images(photos: list[np.ndarray]) -> list[np.ndarray]:
    """Three photographs of different aspect ratios (square, landscape, portrait-ish crops)."""
    return [photos[0], photos[1], np.ascontiguousarray(photos[2][:, : photos[2].shape[1] // 2])]


def _threshold(scores: np.ndarray) -> float:
    """A confidence threshold that keeps about ``PER_IMAGE`` detections, in the widest gap between scores
    nearby (so that runtime rounding, ~1e-5, cannot move a detection across it)."""
    s = np.sort(scores)[::-1]
    if len(s) <= PER_IMAGE:
        return float(s[-1] - 1e-3) if len(s) else 0.5
    ks = np.arange(max(1, PER_IMAGE - 6), min(len(s), PER_IMAGE + 20))
    gaps = s[ks - 1] - s[ks]
    k = int(ks[np.argmax(gaps)])
    assert s[k - 1] - s[k] > 2e-4, "no clear gap between scores to put the threshold in"
    return float((s[k - 1] + s[k]) / 2)


def _theirs(model: Any, img: np.ndarray, conf: float, task: str, masks: bool = True) -> Any:
    kwargs = {"retina_masks": masks} if task == "segment" else {}
    return model.predict(
        img, imgsz=IMGSZ, conf=conf, iou=0.7, max_det=300, rect=False, verbose=False, **kwargs
    )[0]


def _match(ours: Any, theirs: Any) -> np.ndarray:
    """For each of Ultralytics' detections (best first), cvdeploy's unused same-class detection overlapping it most."""
    from cvdeploy.ops.boxes import box_iou

    iou = box_iou(theirs.xyxy, ours.xyxy)
    iou[theirs.class_id[:, None] != ours.class_id[None, :]] = -1.0
    j = np.full(len(theirs), -1)
    for i in np.argsort(-theirs.confidence, kind="stable"):
        row = iou[i].copy()
        row[j[j >= 0]] = -1.0
        j[i] = int(row.argmax())
        assert row[j[i]] > 0.9, "an Ultralytics detection has no counterpart in cvdeploy's"
    return j


def _compare(ours: Any, theirs: Any, task: str) -> int:
    """Assert agreement of one image's results; returns the number of detections compared."""
    from cvdeploy.results import Detections

    t = Detections.from_ultralytics(theirs)
    assert len(ours) == len(t), f"cvdeploy found {len(ours)}, Ultralytics {len(t)}"
    if len(t) == 0:
        return 0
    if task == "obb":
        # oriented boxes: match on centres, then compare centre, size and angle
        d = np.linalg.norm(t.rboxes[:, None, :2] - ours.rboxes[None, :, :2], axis=2)
        j = d.argmin(1)
        assert len(set(j.tolist())) == len(j)
        np.testing.assert_allclose(ours.rboxes[j, :4], t.rboxes[:, :4], atol=1.0)
        np.testing.assert_allclose(ours.rboxes[j, 4], t.rboxes[:, 4], atol=0.01)
        assert (ours.class_id[j] == t.class_id).all()
        np.testing.assert_allclose(ours.confidence[j], t.confidence, atol=1e-3)
        return len(t)
    j = _match(ours, t)
    assert np.abs(ours.xyxy[j] - t.xyxy).max() <= 1.0
    np.testing.assert_allclose(ours.confidence[j], t.confidence, atol=1e-3)
    if task == "segment":
        assert ours.masks is not None and t.masks is not None
        a, b = ours.masks[j], t.masks
        inter = (a & b).sum((1, 2))
        union = (a | b).sum((1, 2))
        iou = inter / np.maximum(union, 1)
        assert iou.min() >= 0.95, f"mask IoU {np.round(iou, 3).tolist()}"
    if task == "pose":
        assert ours.keypoints is not None and t.keypoints is not None
        assert np.abs(ours.keypoints[j, :, :2] - t.keypoints[:, :, :2]).max() <= 1.0
        np.testing.assert_allclose(ours.keypoints[j, :, 2], t.keypoints[:, :, 2], atol=1e-3)
    return len(t)


@pytest.mark.parametrize(("arch", "task", "variant"), CASES, ids=["-".join(c) for c in CASES])
def test_same_results_as_ultralytics_predict(
    farm: Farm, images: list[np.ndarray], tmp_path: Path, arch: str, task: str, variant: str
) -> None:
    from ultralytics import YOLO

    from cvdeploy.export import ExportOptions, export
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.results import Classification

    source = farm.file(arch, task, variant)
    size = (IMGSZ, IMGSZ) if variant == "pt" else None  # a checkpoint's own size is 640; its exports say 256
    bundle = export(str(source), tmp_path / "b.cvd", ExportOptions(imgsz=size, parity_count=2))
    c = bundle.contract
    assert c.task == task
    assert c.output.format == (
        "classify" if task == "classify" else "end2end" if variant == "onnx-nms" else "yolov8"
    )
    if task == "pose":
        assert c.output.kpt_shape == [17, 3]
    parity = bundle.artifact().parity
    assert parity is not None and parity.passed
    if variant != "pt":
        assert parity.max_abs_diff == 0.0  # an imported ONNX file is the artifact itself
    theirs_model = YOLO(str(source), task=task)
    pipe = Pipeline.from_bundle(bundle)
    if task == "classify":
        for img in images:
            sq = np.ascontiguousarray(img[: min(img.shape[:2]), : min(img.shape[:2])])
            sq = __import__("cv2").resize(sq, (IMGSZ, IMGSZ))  # already at size: both sides skip resizing
            (ours,) = pipe.predict([sq])
            res = theirs_model.predict(sq, imgsz=IMGSZ, verbose=False)[0]
            assert isinstance(ours, Classification)
            probs = res.probs.data.cpu().numpy()
            np.testing.assert_allclose(ours.probs, probs, atol=1e-4)
            assert ours.top == [int(k) for k in np.argsort(-probs, kind="stable")[:5]]
        return
    compared = 0
    for img in images:
        low = _theirs(theirs_model, img, 0.3 if variant == "onnx-nms" else 0.05, task, masks=False)
        scores = (low.obb if task == "obb" else low.boxes).conf.cpu().numpy()
        conf = _threshold(scores)
        pipe.contract.output.conf = conf
        (ours,) = pipe.predict([img])
        compared += _compare(ours, _theirs(theirs_model, img, conf, task), task)
    assert compared >= 10, "too few detections were compared for the test to mean anything"
