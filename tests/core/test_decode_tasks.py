"""The decoder registry: end-to-end rows, keypoints, oriented boxes, masks, and the decoders' own checks."""

from __future__ import annotations

import numpy as np
import pytest

from cvdeploy.contract import Contract, OutputSpec
from cvdeploy.decode import DECODERS, HEADS, LAYOUTS, Decoder
from cvdeploy.errors import ModelError
from cvdeploy.ops.letterbox import Geometry, letterbox
from cvdeploy.ops.masks import linear_weights, masks_from_protos
from cvdeploy.ops.rotated import probiou, rotated_nms
from cvdeploy.results import Detections, rbox_corners

IDENTITY = Geometry(640, 640, 1.0, 1.0, 0.0, 0.0)


def _contract(task: str, fmt: str, nc: int, **out: object) -> Contract:
    return Contract(task=task, classes=[f"c{i}" for i in range(nc)], output=OutputSpec(format=fmt, **out))  # type: ignore[arg-type]


def test_registries_cover_every_task_and_format() -> None:
    assert set(LAYOUTS) == {"yolov8", "yolov5", "end2end", "boxes_scores"}
    assert set(HEADS) == {"detect", "segment", "pose", "obb"}
    assert set(DECODERS) == {*LAYOUTS, "classify", "raw"}


def test_end2end_rows_are_taken_as_they_are() -> None:
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [10, 20, 110, 220, 0.9, 2]
    rows[0, 1] = [12, 22, 112, 222, 0.8, 2]  # overlaps row 0: NMS already ran in the graph, both stay
    rows[0, 2] = [0, 0, 5, 5, 0.1, 1]  # below conf
    (det,) = Decoder(_contract("detect", "end2end", 3, conf=0.25))([rows], [IDENTITY])
    assert det.class_id.tolist() == [2, 2] and det.confidence.tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_allclose(det.xyxy[0], [10, 20, 110, 220])


@pytest.mark.parametrize(
    ("fmt", "make", "message"),
    [
        # a pose head (4 + 1 + 51 rows) read as a 52-class detector: keypoint pixels pose as class scores
        ("yolov8", lambda: np.concatenate([np.full((4, 50), 100.0), np.full((1, 50), 0.9), np.full((51, 50), 314.0)]),
         r"confidences range .*314.*not 0–1"),
        # end-to-end rows read as YOLOv5 (1 class): the class id (7) poses as a class score
        ("yolov5", lambda: np.tile(np.asarray([[10, 10, 20, 20, 0.9, 7.0]], np.float32), (50, 1)), r"not 0–1"),
    ],
)  # fmt: skip
def test_a_decoder_that_does_not_fit_refuses(fmt: str, make: object, message: str) -> None:
    pred = np.asarray(make(), np.float32)[None]  # type: ignore[operator]
    nc = pred.shape[1] - 4 if fmt == "yolov8" else pred.shape[2] - 5
    with pytest.raises(ModelError, match=message):
        Decoder(_contract("detect", fmt, nc))([pred], [IDENTITY])


def test_end2end_class_ids_must_be_known_classes() -> None:
    rows = np.zeros((1, 10, 6), np.float32)
    rows[0, 0] = [10, 20, 110, 220, 0.9, 7]
    with pytest.raises(ModelError, match=r"class ids .* below 3"):
        Decoder(_contract("detect", "end2end", 3))([rows], [IDENTITY])


def test_output_shape_must_fit_the_class_count() -> None:
    with pytest.raises(ModelError, match=r"expected \(9, N\) rows"):
        Decoder(_contract("detect", "yolov8", 5))([np.zeros((1, 10, 20), np.float32)], [IDENTITY])


def test_pose_keypoints_map_back_to_the_original_image() -> None:
    img = np.zeros((200, 400, 3), np.uint8)
    _, geom = letterbox(img, 320, 320)  # scale 0.8, pad_y 80
    pred = np.zeros((1, 4 + 1 + 2 * 3, 3), np.float32)
    pred[0, :4, 0] = [160, 160, 80, 80]  # one box centred in the input
    pred[0, 4, 0] = 0.9
    pred[0, 5:, 0] = [80, 120, 0.95, 240, 200, 0.2]  # two keypoints (x, y, visibility) in input pixels
    (det,) = Decoder(_contract("pose", "yolov8", 1, kpt_shape=[2, 3]))([pred], [geom])
    assert det.keypoints is not None and det.keypoints.shape == (1, 2, 3)
    np.testing.assert_allclose(det.keypoints[0], [[100, 50, 0.95], [300, 150, 0.2]], atol=1e-4)
    assert det.to_list()[0]["keypoints"] == [[100.0, 50.0, 0.95], [300.0, 150.0, 0.2]]


def test_obb_decode_maps_rotated_boxes_and_gives_polygons() -> None:
    img = np.zeros((200, 400, 3), np.uint8)
    _, geom = letterbox(img, 320, 320)
    pred = np.zeros((1, 4 + 2 + 1, 2), np.float32)
    pred[0, :, 0] = [160, 160, 80, 40, 0.9, 0.0, 0.3]  # cx, cy, w, h, class scores, angle
    pred[0, :, 1] = [165, 160, 80, 40, 0.8, 0.0, 0.3]  # nearly the same box: suppressed by ProbIoU
    (det,) = Decoder(_contract("obb", "yolov8", 2))([pred], [geom])
    assert len(det) == 1 and det.rboxes is not None
    np.testing.assert_allclose(det.rboxes[0], [200, 100, 100, 50, 0.3], atol=1e-4)
    corners = rbox_corners(det.rboxes)[0]
    np.testing.assert_allclose(det.xyxy[0], [*corners.min(0), *corners.max(0)], atol=1e-4)
    doc = det.to_list()[0]
    assert doc["rbox"] == [200.0, 100.0, 100.0, 50.0, 0.3] and len(doc["polygon"]) == 4


def test_probiou_is_one_for_identical_boxes_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a = np.concatenate(
        [rng.uniform(0, 100, (5, 2)), rng.uniform(5, 50, (5, 2)), rng.uniform(-1, 1, (5, 1))], 1
    )
    m = probiou(a, a)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-3)
    np.testing.assert_allclose(m, m.T, atol=1e-9)
    assert ((m >= 0) & (m <= 1 + 1e-6)).all()
    # a square rotated by 90° is the same square
    sq = np.asarray([[50, 50, 20, 20, 0.0]])
    turned = sq + np.asarray([0, 0, 0, 0, np.pi / 2])
    assert probiou(sq, turned)[0, 0] == pytest.approx(1.0, abs=1e-3)


def test_rotated_nms_matches_fast_nms_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    n = 300
    rb = np.concatenate(
        [rng.uniform(0, 200, (n, 2)), rng.uniform(10, 60, (n, 2)), rng.uniform(-1, 2, (n, 1))], 1
    )
    scores = rng.uniform(0, 1, n)
    cls = rng.integers(0, 3, n)
    keep = rotated_nms(rb, scores, cls, 0.5)
    order = np.argsort(-scores, kind="stable")
    iou = probiou(rb[order], rb[order])
    want = [order[j] for j in range(n)
            if not any(iou[i, j] > 0.5 and cls[order[i]] == cls[order[j]] for i in range(j))]  # fmt: skip
    assert keep.tolist() == [int(w) for w in want]


def test_linear_weights_match_cv2_resize() -> None:
    import cv2

    rng = np.random.default_rng(2)
    src = rng.normal(size=(16, 24)).astype(np.float32)
    wy = linear_weights(37, 16, 16 / 37)
    wx = linear_weights(50, 24, 24 / 50)
    ours = wy @ src @ wx.T
    ref = cv2.resize(src, (50, 37), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_masks_are_cropped_to_their_box_in_original_pixels() -> None:
    protos = np.ones((1, 16, 16), np.float32)  # a mask that is "on" everywhere
    geom = Geometry(100, 200, 0.32, 0.32, 0.0, 16.0)  # 200x100 letterboxed into 64x64
    boxes = np.asarray([[10.5, 20, 60, 90]], np.float32)
    m = masks_from_protos(np.ones((1, 1), np.float32), protos, boxes, geom, (64, 64))
    assert m.shape == (1, 100, 200)
    ys, xs = np.nonzero(m[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (11, 59, 20, 89)


def test_detections_filter_keeps_every_field() -> None:
    det = Detections(np.zeros((3, 4), np.float32), np.asarray([0.9, 0.5, 0.7], np.float32), np.asarray([0, 1, 2]),
                     masks=np.zeros((3, 4, 4), bool), keypoints=np.zeros((3, 2, 3), np.float32))  # fmt: skip
    sub = det.filter(det.confidence > 0.6)
    assert len(sub) == 2 and sub.masks is not None and sub.masks.shape == (2, 4, 4)
    assert sub.keypoints is not None and sub.keypoints.shape == (2, 2, 3) and sub.task == "segment"
