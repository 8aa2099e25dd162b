"""Ultralytics interop (needs the optional ultralytics package, installed in the dev environment).

A YOLOv8n is built from its yaml (offline, no weights download). An untrained network's activations
vanish, so its batch-norm statistics are first re-estimated on real photographs and its class-score
biases zeroed: the model then produces varied, confident detections that can be compared box by box.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ultralytics")
pytestmark = [pytest.mark.ultralytics, pytest.mark.slow]

os.environ["YOLO_OFFLINE"] = "1"
IMGSZ = 320


def _yolo_with_scores():  # type: ignore[no-untyped-def]
    import torch
    from ultralytics import YOLO

    from cvdeploy.contract import InputSpec
    from cvdeploy.images import sample_images
    from cvdeploy.preprocess import Preprocessor

    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")
    x, _ = Preprocessor(InputSpec(height=IMGSZ, width=IMGSZ))(sample_images(6))
    for m in yolo.model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
            m.reset_running_stats()
    yolo.model.train()
    with torch.no_grad():
        yolo.model(torch.from_numpy(x))
    for seq in yolo.model.model[-1].cv3:
        seq[-1].bias.data.fill_(0.0)
    yolo.model.eval()
    return yolo


@pytest.fixture(scope="module")
def ultralytics_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX file written by Ultralytics' own exporter (carries names/stride/imgsz metadata)."""
    d = tmp_path_factory.mktemp("ul")
    cwd = os.getcwd()
    os.chdir(d)
    try:
        path = _yolo_with_scores().export(
            format="onnx", imgsz=IMGSZ, simplify=False, dynamic=False, verbose=False
        )
    finally:
        os.chdir(cwd)
    return d / Path(path).name


def test_yolov8n_yaml_export_through_cvdeploy(tmp_path: Path) -> None:
    from cvdeploy.export import ExportOptions, export

    bundle = export(
        "yolov8n.yaml",
        tmp_path / "y8.cvd",
        ExportOptions(formats=("onnx", "openvino"), imgsz=(IMGSZ, IMGSZ), dynamic_batch=True),
    )
    c = bundle.contract
    assert c.classes == [str(i) for i in range(80)]  # a yaml-built model's default names
    assert c.input.stride == 32 and (c.input.height, c.input.width) == (IMGSZ, IMGSZ)
    assert c.output.format == "yolov8" and c.task == "detect"
    for name in ("onnx-fp32", "openvino-fp32"):
        parity = bundle.artifact(name).parity
        assert parity is not None and parity.passed
        assert parity.max_abs_diff <= 1e-3, name
        assert parity.cosine > 0.99999


def test_ultralytics_exported_onnx_imports_with_no_flags(ultralytics_onnx: Path, tmp_path: Path) -> None:
    from cvdeploy.export import export

    bundle = export(str(ultralytics_onnx), tmp_path / "imported.cvd")
    c = bundle.contract
    assert c.task == "detect" and c.output.format == "yolov8"
    assert c.classes == [str(i) for i in range(80)]
    assert c.input.stride == 32 and (c.input.height, c.input.width) == (IMGSZ, IMGSZ)
    assert c.input.resize == "letterbox" and c.input.pad_value == 114 and c.input.color == "RGB"
    assert bundle.manifest.provenance.source.kind == "onnx"
    parity = bundle.artifact("onnx-fp32").parity
    assert parity is not None and parity.max_abs_diff == 0.0  # the artifact is the file as given


def test_boxes_agree_with_ultralytics_predict(
    ultralytics_onnx: Path, tmp_path: Path, photos: list[np.ndarray]
) -> None:
    """Same ONNX, same images: cvdeploy's pipeline and Ultralytics' predictor agree within 1 px."""
    from ultralytics import YOLO

    from cvdeploy.export import export
    from cvdeploy.ops.boxes import box_iou
    from cvdeploy.pipeline import Pipeline

    bundle = export(str(ultralytics_onnx), tmp_path / "b.cvd")
    pipe = Pipeline.from_bundle(bundle)
    pipe.contract.output.conf = 0.9
    theirs_model = YOLO(str(ultralytics_onnx), task="detect")
    compared = 0
    for img in photos[:4]:
        (ours,) = pipe.predict([img])
        res = theirs_model.predict(img, imgsz=IMGSZ, conf=0.9, iou=0.7, verbose=False)[0]
        t_xyxy = res.boxes.xyxy.cpu().numpy()
        t_cls = res.boxes.cls.cpu().numpy().astype(int)
        assert len(ours) == len(t_xyxy)
        if len(ours) == 0:
            continue
        ious = box_iou(ours.xyxy, t_xyxy)
        ious[ours.class_id[:, None] != t_cls[None, :]] = -1.0  # match only within the same class
        j = ious.argmax(1)
        assert (ours.class_id == t_cls[j]).all()
        assert np.abs(ours.xyxy - t_xyxy[j]).max() <= 1.0
        compared += len(ours)
    assert compared > 0, "the test model produced no detections to compare"
