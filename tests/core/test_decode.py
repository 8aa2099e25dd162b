"""Decoding YOLO outputs and NMS against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cvdeploy.contract import Contract, InputSpec, OutputSpec
from cvdeploy.decode import Decoder, decode_yolo
from cvdeploy.ops.boxes import box_iou
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.ops.nms import batched_nms, nms
from cvdeploy.results import Classification, Detections

IDENTITY = Geometry(640, 640, 1.0, 1.0, 0.0, 0.0)


def v8(boxes_xywh: list[list[float]], scores: list[list[float]]) -> np.ndarray:
    """Build one image's yolov8 output (4+nc, N) from per-candidate xywh and class scores."""
    return np.concatenate([np.array(boxes_xywh, np.float32).T, np.array(scores, np.float32).T])


def v5(boxes_xywh: list[list[float]], obj: list[float], scores: list[list[float]]) -> np.ndarray:
    return np.concatenate(
        [np.array(boxes_xywh, np.float32), np.array(obj, np.float32)[:, None], np.array(scores, np.float32)],
        1,
    )


# two heavily overlapping boxes (IoU 0.81) and a far one; classes 0, 0, 1
BOXES = [[100, 100, 100, 100], [105, 105, 100, 100], [400, 400, 50, 50]]


@pytest.mark.parametrize(
    ("scores", "agnostic", "expected_classes", "expected_n"),
    [
        ([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]], False, [0, 1], 2),  # overlap suppressed within class 0
        ([[0.9, 0.0], [0.0, 0.8], [0.0, 0.7]], False, [0, 1, 1], 3),  # different classes both kept
        ([[0.9, 0.0], [0.0, 0.8], [0.0, 0.7]], True, [0, 1], 2),  # agnostic suppresses across classes
        ([[0.1, 0.0], [0.2, 0.0], [0.0, 0.24]], False, [], 0),  # all below conf 0.25
    ],
)
def test_yolov8_decode(
    scores: list[list[float]], agnostic: bool, expected_classes: list[int], expected_n: int
) -> None:
    spec = OutputSpec(conf=0.25, iou=0.7, agnostic_nms=agnostic)
    xyxy, score, cls = decode_yolo(v8(BOXES, scores), spec, "yolov8")
    assert len(score) == expected_n
    assert sorted(cls.tolist()) == sorted(expected_classes)
    assert np.all(np.diff(score) <= 0), "best first"
    if expected_n:
        np.testing.assert_allclose(xyxy[0], [50, 50, 150, 150])


def test_yolov5_decode_multiplies_objectness() -> None:
    out = v5(BOXES, [0.9, 0.5, 0.3], [[0.5, 0.1], [0.9, 0.1], [0.1, 0.95]])
    xyxy, score, cls = decode_yolo(out, OutputSpec(conf=0.25, iou=0.7), "yolov5")
    # candidate 0: 0.45 (class 0); candidate 1: 0.45 (class 0) suppressed by 0, candidate 2: 0.285 (class 1)
    np.testing.assert_allclose(score, [0.45, 0.285], rtol=1e-5)
    assert cls.tolist() == [0, 1]
    np.testing.assert_allclose(xyxy[1], [375, 375, 425, 425])


def test_empty_output() -> None:
    empty = np.zeros((4 + 3, 0), np.float32)
    xyxy, score, cls = decode_yolo(empty, OutputSpec(), "yolov8")
    assert xyxy.shape == (0, 4) and score.shape == (0,) and cls.shape == (0,)


def test_max_det_caps_results() -> None:
    rng = np.random.default_rng(0)
    n = 500
    centers = rng.uniform(0, 6400, (n, 2))  # spread so nothing overlaps
    boxes = np.concatenate([centers, np.full((n, 2), 5.0)], 1)
    out = v8(boxes.tolist(), rng.uniform(0.5, 1.0, (n, 1)).tolist())
    _, score, _ = decode_yolo(out, OutputSpec(max_det=17), "yolov8")
    assert len(score) == 17


def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(box_iou(boxes[i : i + 1], boxes[k : k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_brute_force_on_many_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0, 1, n)
    assert nms(boxes, scores, 0.5).tolist() == brute_force_nms(boxes, scores, 0.5)


def test_nms_matches_torchvision() -> None:
    tv = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n = 2000
    xy = rng.uniform(0, 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 120, (n, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    cls = rng.integers(0, 5, n)
    ours = batched_nms(boxes, scores, cls, 0.6)
    theirs = tv.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cls), 0.6)
    assert ours.tolist() == theirs.tolist()


def test_decoder_maps_boxes_to_original_pixels_and_names() -> None:
    contract = Contract(task="detect", classes=["cat", "dog"], input=InputSpec(), output=OutputSpec())
    geom = Geometry(orig_height=320, orig_width=640, scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=160.0)
    out = v8([[320, 320, 100, 100]], [[0.1, 0.9]])[None]
    (det,) = Decoder(contract)([out], [geom])
    assert isinstance(det, Detections)
    np.testing.assert_allclose(det.xyxy[0], [270, 110, 370, 210])
    assert det.to_list() == [
        {"box": [270.0, 110.0, 370.0, 210.0], "confidence": 0.9, "class_id": 1, "class_name": "dog"}
    ]


@pytest.mark.parametrize(
    ("row", "expected_top"),
    [([2.0, 1.0, 0.1], [0, 1, 2]), ([0.1, 0.7, 0.2], [1, 2, 0])],  # logits get softmaxed; probs kept
)
def test_classify_decode(row: list[float], expected_top: list[int]) -> None:
    contract = Contract(
        task="classify", classes=["a", "b", "c"], output=OutputSpec(format="classify", top_k=3)
    )
    (res,) = Decoder(contract)([np.array([row], np.float32)], [IDENTITY])
    assert isinstance(res, Classification)
    assert res.top == expected_top
    assert abs(float(res.probs.sum()) - 1) < 1e-5
