"""``val`` on segmentation, pose and oriented-box models, end to end: YOLO labels → pipeline → mask,
keypoint and rotated-box mAP; FP16 ("half") exports import and run; results draw.

The labels are the planted model's own confident predictions written as YOLO label files (polygons,
keypoints, corners), so a correct reader + pipeline + metric chain must score them near 100 points,
and a broken link (a coordinate in the wrong units, a keypoint order, a corner order) scores low.
The planted segmentation model's masks are fragmented (untrained prototypes), so a one-polygon label
covers only part of a mask: there the figure is checked against the same metric computed in memory
(no label files) and against labels moved by 20 pixels, instead of against 100.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeploy.bundle import Bundle
from cvdeploy.export import ExportOptions, export
from cvdeploy.pipeline import Pipeline

pytest.importorskip("ultralytics")
pytest.importorskip("faster_coco_eval")
pytestmark = [pytest.mark.ultralytics, pytest.mark.slow]


def _dataset(root: Path, bundle: Bundle, photos: list[np.ndarray], task: str, shift: float = 0.0) -> Path:
    """A one-split YOLO dataset whose labels are the model's own predictions above conf 0.5."""
    pipe = Pipeline.from_bundle(bundle)
    pipe.contract.output.conf = 0.5
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for k, img in enumerate(photos[:3]):
        cv2.imwrite(str(root / "images" / "val" / f"{k}.png"), img)
        (det,) = pipe.predict([img])
        h, w = img.shape[:2]
        lines = []
        for i in range(len(det)):
            c = int(det.class_id[i])
            if task == "pose":
                x1, y1, x2, y2 = det.xyxy[i]
                box = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
                assert det.keypoints is not None
                kp = det.keypoints[i]
                pts = [v for x, y, s in kp for v in (x / w, y / h, 2.0 if s > 0.5 else 0.0)]
                lines.append(" ".join(str(v) for v in [c, *box, *pts]))
            else:
                poly = det.polygon(i)
                if len(poly) < 3:
                    continue
                xy = ((poly + shift) / [w, h]).clip(0, 1).reshape(-1)
                lines.append(" ".join(str(v) for v in [c, *xy]))
        (root / "labels" / "val" / f"{k}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: '{n}'" for i, n in enumerate(bundle.contract.classes))
    extra = "kpt_shape: [17, 3]\n" if task == "pose" else ""
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\n{extra}names:\n{names}\n")
    return root / "data.yaml"


@pytest.mark.parametrize(("task", "key"), [("segment", "mask"), ("pose", "pose"), ("obb", "rbox")])
def test_task_map_on_the_models_own_predictions(
    farm: object, photos: list[np.ndarray], tmp_path: Path, task: str, key: str
) -> None:
    from cvdeploy.evaluate.validate import validate, write_metrics

    b = export(str(farm.file("yolo11n", task, "onnx")), tmp_path / "m.cvd", ExportOptions(parity_count=1))  # type: ignore[attr-defined]
    data = _dataset(tmp_path / "data", b, photos, task)
    r = validate(b, data, progress=False)
    assert r["task"] == task and r["instances"] >= 10
    if task == "segment":
        from cvdeploy.evaluate.datasets import read_yolo
        from cvdeploy.evaluate.metrics import task_map
        from cvdeploy.evaluate.runner import eval_pipeline

        ds = read_yolo(data, "val", "segment")
        pipe = eval_pipeline(b, conf=0.001, max_det=300)
        preds = [pipe.predict([it.image])[0] for it in ds.items]
        want = task_map("segment", ds.items, ds.sizes, preds, b.contract.num_classes)  # type: ignore[arg-type]
        assert r["mask_mAP50-95"] == pytest.approx(want["mAP50-95"], abs=1e-6)
        moved = validate(b, _dataset(tmp_path / "moved", b, photos, task, shift=20.0), progress=False)
        assert r["mask_mAP50"] > moved["mask_mAP50"] + 0.05 and r["mask_mAP50"] > 0.25, (r, moved)
    else:
        assert r[f"{key}_mAP50"] >= 0.9, r  # its own predictions, re-found by the same pipeline
        assert r[f"{key}_mAP50-95"] >= 0.6, r
    write_metrics(b, r)
    assert f"{key}_mAP50-95" in Bundle.load(b.path).artifact().metrics


def test_half_exports_import_and_run(farm: object, tmp_path: Path, photos: list[np.ndarray]) -> None:
    """An FP16 ONNX with float16 input and outputs (what Ultralytics' half=True writes on a GPU; made here
    with ONNX Runtime's converter, as this machine has none) imports with no flags and agrees with FP32."""
    onnx = pytest.importorskip("onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = farm.file("yolov8n", "detect", "onnx")  # type: ignore[attr-defined]
    half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=False)
    path = tmp_path / "half.onnx"
    onnx.save(half, str(path))
    b = export(str(path), tmp_path / "half.cvd", ExportOptions(parity_count=2))
    full = export(str(src), tmp_path / "full.cvd", ExportOptions(parity_count=1))
    assert b.contract.input.dtype == "float16" and b.artifact().precision == "fp16"
    pipe, ref = Pipeline.from_bundle(b), Pipeline.from_bundle(full)
    for p in (pipe, ref):
        p.contract.output.conf = 0.8
    (ours,), (want,) = pipe.predict(photos[:1]), ref.predict(photos[:1])
    from cvdeploy.parity import detection_agreement

    assert len(want) > 0 and (detection_agreement([want], [ours], iou=0.8) or 0) >= 0.9


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_results_are_drawn(farm: object, photos: list[np.ndarray], tmp_path: Path, task: str) -> None:
    from cvdeploy.draw import annotate

    b = export(str(farm.file("yolov8n", task, "onnx")), tmp_path / "m.cvd", ExportOptions(parity_count=1))  # type: ignore[attr-defined]
    pipe = Pipeline.from_bundle(b)
    pipe.contract.output.conf = 0.7
    img = photos[1]
    (det,) = pipe.predict([img])
    assert len(det) > 0
    drawn = annotate(img, det)
    changed = np.any(drawn != img, axis=2)
    if task == "segment":
        assert det.masks is not None
        inside = det.masks.any(0)
        assert changed[inside].mean() > 0.9  # the masks are blended in
    elif task == "pose":
        assert det.keypoints is not None
        x, y = (int(round(v)) for v in det.keypoints[0, int(np.argmax(det.keypoints[0, :, 2])), :2])
        assert changed[min(y, img.shape[0] - 1), min(x, img.shape[1] - 1)]
    else:
        assert det.rboxes is not None
        corner = np.round(det.polygon(0)[0]).astype(int)
        y0, x0 = np.clip(corner[::-1], 0, [img.shape[0] - 1, img.shape[1] - 1])
        assert changed[max(0, y0 - 2) : y0 + 3, max(0, x0 - 2) : x0 + 3].any()
