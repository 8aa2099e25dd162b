"""Mask, keypoint (OKS) and rotated-box mAP against hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeploy.evaluate.datasets import LabelledImage, parse_task_labels
from cvdeploy.evaluate.metrics import COCO_KPT_SIGMAS, KPT_AREA_FROM_BOX, task_map
from cvdeploy.results import Detections, rbox_corners

pytest.importorskip("faster_coco_eval")
W, H = 200, 100
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _expected(iou: float) -> tuple[float, float]:
    """(mAP50-95, mAP50) of one detection matching one object at ``iou``: 1 per threshold it clears."""
    return float(np.mean(iou >= IOU_THRESHOLDS - 1e-9)), float(iou >= 0.5)


def _rect(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    return np.asarray([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


def _mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


@pytest.mark.parametrize("shift", [0, 4, 10, 30])
def test_mask_map_follows_mask_iou(shift: int) -> None:
    gt = LabelledImage(
        Path("a.jpg"), np.asarray([[20, 20, 80, 80]], float), np.asarray([0]), [_rect(20, 20, 80, 80)]
    )
    pred = Detections(np.asarray([[20 + shift, 20, 80 + shift, 80]], np.float32), np.asarray([0.9], np.float32),
                      np.asarray([0]), masks=_mask(20 + shift, 20, 80 + shift, 80)[None])  # fmt: skip
    r = task_map("segment", [gt], [(W, H)], [pred], 1)
    iou = (60 - shift) * 60 / ((60 + shift) * 60)
    map5095, map50 = _expected(iou)
    assert r["mAP50-95"] == pytest.approx(map5095, abs=0.011) and r["mAP50"] == pytest.approx(map50)
    assert r["instances"] == 1


def test_mask_map_wrong_class_and_missing_detections() -> None:
    gt = LabelledImage(Path("a.jpg"), np.asarray([[20, 20, 80, 80], [120, 10, 190, 90]], float), np.asarray([0, 1]),
                       [_rect(20, 20, 80, 80), _rect(120, 10, 190, 90)])  # fmt: skip
    wrong = Detections(np.asarray([[20, 20, 80, 80]], np.float32), np.asarray([0.9], np.float32), np.asarray([1]),
                       masks=_mask(20, 20, 80, 80)[None])  # fmt: skip
    r = task_map("segment", [gt], [(W, H)], [wrong], 2)
    assert r["mAP50-95"] == 0.0 and set(r["per_class"]) == {0, 1}


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.2])
def test_rotated_box_map_is_one_for_the_same_box_at_any_angle(angle: float) -> None:
    rb = np.asarray([[100, 50, 80, 30, angle]], np.float32)
    corners = rbox_corners(rb)[0]
    gt = LabelledImage(Path("a.jpg"), np.concatenate([corners.min(0), corners.max(0)])[None], np.asarray([0]),
                       [corners])  # fmt: skip
    pred = Detections(gt.boxes.astype(np.float32), np.asarray([0.8], np.float32), np.asarray([0]), rboxes=rb)
    assert task_map("obb", [gt], [(W, H)], [pred], 1)["mAP50-95"] == pytest.approx(1.0)


def test_rotated_box_map_uses_rotated_not_axis_aligned_iou() -> None:
    """A 45° box rotated by 90° has the same axis-aligned box (IoU 1) but a rotated IoU of w·w / (2wh − w·w)."""
    w, h = 80.0, 20.0
    a = np.asarray([[100, 50, w, h, np.pi / 4]], np.float32)
    b = np.asarray([[100, 50, w, h, -np.pi / 4]], np.float32)
    ca, cb = rbox_corners(a)[0], rbox_corners(b)[0]
    gt = LabelledImage(Path("a.jpg"), np.concatenate([ca.min(0), ca.max(0)])[None], np.asarray([0]), [ca])
    pred = Detections(np.concatenate([cb.min(0), cb.max(0)])[None].astype(np.float32), np.asarray([0.8], np.float32),
                      np.asarray([0]), rboxes=b)  # fmt: skip
    r = task_map("obb", [gt], [(W, H)], [pred], 1)
    iou = h * h / (2 * w * h - h * h)  # two perpendicular w x h bars crossing: overlap h x h
    assert iou < 0.5 and r["mAP50"] == 0.0


@pytest.mark.parametrize("offset", [0.0, 2.0, 6.0])
def test_keypoint_map_follows_oks(offset: float) -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform([30, 20], [90, 80], (17, 2))
    kp = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
    box = np.asarray([[20, 10, 100, 90]], float)
    gt = LabelledImage(Path("a.jpg"), box, np.asarray([0]), keypoints=kp[None])
    pk = np.concatenate([xy + offset, np.full((17, 1), 0.9)], 1).astype(np.float32)
    pred = Detections(
        box.astype(np.float32), np.asarray([0.9], np.float32), np.asarray([0]), keypoints=pk[None]
    )
    r = task_map("pose", [gt], [(W, H)], [pred], 1)
    area = 80 * 80 * KPT_AREA_FROM_BOX
    k = 2 * np.asarray(COCO_KPT_SIGMAS)
    oks = float(np.mean(np.exp(-(2 * offset**2) / (2 * area * k**2))))  # COCO's OKS: d² / (2 s κ²), κ = 2σ
    map5095, map50 = _expected(oks)
    assert r["mAP50-95"] == pytest.approx(map5095, abs=0.011) and r["mAP50"] == pytest.approx(map50)


def test_task_labels_are_read_in_pixels(tmp_path: Path) -> None:
    lbl = tmp_path / "a.txt"
    lbl.write_text("0 0.1 0.1 0.5 0.1 0.5 0.9 0.1 0.9\n1 0.6 0.2 0.9 0.2 0.8 0.8\n")
    seg = parse_task_labels(lbl, W, H, 2, "segment")
    assert seg.class_ids.tolist() == [0, 1] and seg.polygons is not None
    np.testing.assert_allclose(seg.polygons[0], [[20, 10], [100, 10], [100, 90], [20, 90]])
    np.testing.assert_allclose(seg.boxes[1], [120, 20, 180, 80])
    lbl.write_text("0 0.5 0.5 0.4 0.6 " + " ".join(["0.5 0.5 2"] * 17) + "\n")
    pose = parse_task_labels(lbl, W, H, 1, "pose", [17, 3])
    assert pose.keypoints is not None and pose.keypoints.shape == (1, 17, 3)
    np.testing.assert_allclose(pose.keypoints[0, 0], [100, 50, 2])
    np.testing.assert_allclose(pose.boxes[0], [60, 20, 140, 80])
    with pytest.raises(Exception, match="a pose label is"):
        parse_task_labels(lbl, W, H, 1, "pose", [5, 3])
    lbl.write_text("0 0.1 0.1 0.5 0.1 0.5 0.9\n")
    with pytest.raises(Exception, match="an obb label is"):
        parse_task_labels(lbl, W, H, 1, "obb")


def test_polygon_rasterisation_matches_cv2_fill() -> None:
    """Ground-truth polygons and predicted masks meet on the same pixel grid (a filled square is IoU 1)."""
    m = np.zeros((H, W), np.uint8)
    cv2.fillPoly(m, [_rect(20, 20, 80, 80).astype(np.int32)], 1)
    gt = LabelledImage(
        Path("a.jpg"), np.asarray([[20, 20, 80, 80]], float), np.asarray([0]), [_rect(20, 20, 80, 80)]
    )
    pred = Detections(np.asarray([[20, 20, 80, 80]], np.float32), np.asarray([0.9], np.float32), np.asarray([0]),
                      masks=_mask(20, 20, 80, 80)[None])  # fmt: skip
    assert task_map("segment", [gt], [(W, H)], [pred], 1)["mAP50-95"] == pytest.approx(1.0)
