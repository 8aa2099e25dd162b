"""COCO mAP on hand-computed cases, against a direct COCOeval_faster call, and top-k accuracy.

How the hand values follow from the COCO definition: a detection matches an unmatched ground-truth
box of its class when IoU ≥ t, for t in 0.50, 0.55, ..., 0.95; AP at one t is the mean, over the
101 recall points 0.00, 0.01, ..., 1.00, of the best precision reached at that recall or beyond
(0 where the recall is never reached); mAP50-95 averages the 10 thresholds, then the classes that
have ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.evaluate.datasets import read_yolo
from cvdeploy.evaluate.metrics import coco_map, to_coco_json, topk_accuracy
from cvdeploy.results import Detections

pytest.importorskip("faster_coco_eval")

GT_BOX = [0.0, 0.0, 100.0, 100.0]


def _gt(boxes: list[list[float]], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def _pred(boxes: list[list[float]], scores: list[float], classes: list[int]) -> tuple[np.ndarray, ...]:
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), np.asarray(classes)


def test_perfect_predictions_score_one() -> None:
    gt = [_gt([[10, 10, 50, 60], [70, 5, 90, 40]], [0, 2]), _gt([[0, 0, 30, 30]], [1]), _gt([], [])]
    preds = [_pred(g[0].tolist(), [0.9] * len(g[1]), g[1].tolist()) for g in gt]
    r = coco_map(gt, preds, num_classes=3)
    assert r["mAP50-95"] == pytest.approx(1.0)
    assert r["mAP50"] == pytest.approx(1.0)
    assert r["per_class"] == {k: {"mAP50-95": pytest.approx(1.0), "mAP50": pytest.approx(1.0), "instances": 1}
                              for k in range(3)}  # fmt: skip
    assert (r["images"], r["instances"], r["detections"]) == (3, 3, 3)


# A prediction [0, 0, 100, h] inside the ground truth [0, 0, 100, 100] has IoU h/100 exactly, so it
# matches at the thresholds ≤ h/100. With one box and one prediction AP is 1 at those, 0 above.
# (IoU exactly on a threshold is avoided: 0.6 as a float may fall either side of 0.5 + 2 · 0.05.)
@pytest.mark.parametrize(
    ("height", "map50_95", "map50"),
    [
        (100, 1.0, 1.0),  # IoU 1.00: all 10 thresholds
        (91, 0.9, 1.0),  # IoU 0.91: 0.50 .. 0.90 → 9 of 10
        (76, 0.6, 1.0),  # IoU 0.76: 0.50 .. 0.75 → 6
        (62, 0.3, 1.0),  # IoU 0.62: 0.50, 0.55, 0.60 → 3
        (52, 0.1, 1.0),  # IoU 0.52: 0.50 only
        (49, 0.0, 0.0),  # IoU 0.49: no threshold
    ],
)
def test_single_box_at_known_iou(height: float, map50_95: float, map50: float) -> None:
    r = coco_map([_gt([GT_BOX], [0])], [_pred([[0, 0, 100, height]], [0.8], [0])])
    assert r["mAP50-95"] == pytest.approx(map50_95)
    assert r["mAP50"] == pytest.approx(map50)


def test_wrong_class_scores_zero() -> None:
    r = coco_map([_gt([GT_BOX], [0])], [_pred([GT_BOX], [0.9], [1])], num_classes=2)
    assert r["mAP50-95"] == 0.0 and r["mAP50"] == 0.0
    assert list(r["per_class"]) == [0]  # class 1 has no ground truth: left out of the mean


@pytest.mark.parametrize(
    ("fp_score", "expected"),
    [
        (0.5, 1.0),  # FP ranked after the TP: precision is 1 up to recall 1
        (0.95, 0.5),  # FP ranked first: the TP arrives at precision 1/2, which then holds at every recall
    ],
)
def test_extra_false_positive(fp_score: float, expected: float) -> None:
    preds = [_pred([GT_BOX, [200, 200, 260, 260]], [0.9, fp_score], [0, 0])]
    r = coco_map([_gt([GT_BOX], [0])], preds)
    assert r["mAP50-95"] == pytest.approx(expected)
    assert r["mAP50"] == pytest.approx(expected)


def test_half_recall_is_51_of_101_recall_points() -> None:
    gt = [_gt([GT_BOX, [200, 0, 300, 100]], [0, 0])]
    r = coco_map(gt, [_pred([GT_BOX], [0.9], [0])])
    assert r["mAP50"] == pytest.approx(51 / 101)  # recall points 0.00 .. 0.50 at precision 1


def test_classes_are_averaged_equally() -> None:
    gt = [_gt([GT_BOX, [200, 0, 300, 100], [400, 0, 500, 100]], [0, 1, 1])]
    preds = [_pred([GT_BOX], [0.9], [0])]  # class 0 found, both class-1 boxes missed
    r = coco_map(gt, preds, num_classes=2)
    assert r["per_class"][0]["mAP50-95"] == pytest.approx(1.0)
    assert r["per_class"][1] == {"mAP50-95": 0.0, "mAP50": 0.0, "instances": 2}
    assert r["mAP50-95"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.5, 1.0), (0.95, 0.5)],  # a detection on an image without ground truth is a false positive
)
def test_image_without_ground_truth(score: float, expected: float) -> None:
    gt = [_gt([GT_BOX], [0]), _gt([], [])]
    preds = [_pred([GT_BOX], [0.9], [0]), _pred([[0, 0, 50, 50]], [score], [0])]
    assert coco_map(gt, preds)["mAP50-95"] == pytest.approx(expected)
    # an empty image with no prediction changes nothing
    assert coco_map(gt, [preds[0], _pred([], [], [])])["mAP50-95"] == pytest.approx(1.0)


def test_no_ground_truth_at_all_is_zero_and_says_so() -> None:
    r = coco_map([_gt([], []), _gt([], [])], [_pred([GT_BOX], [0.9], [0]), _pred([], [], [])], num_classes=3)
    assert (r["mAP50-95"], r["mAP50"], r["per_class"], r["instances"]) == (0.0, 0.0, {}, 0)


def test_no_predictions_at_all_is_zero_for_every_class() -> None:
    r = coco_map([_gt([GT_BOX], [0]), _gt([GT_BOX], [1])], [_pred([], [], [])] * 2)
    assert r["mAP50-95"] == 0.0
    assert r["per_class"] == {0: {"mAP50-95": 0.0, "mAP50": 0.0, "instances": 1},
                              1: {"mAP50-95": 0.0, "mAP50": 0.0, "instances": 1}}  # fmt: skip


def test_ground_truth_without_area_is_ignored() -> None:
    gt = [_gt([GT_BOX, [50, 50, 50, 80]], [0, 0])]  # the second box has no width: nothing could match it
    r = coco_map(gt, [_pred([GT_BOX], [0.9], [0])])
    assert r["mAP50-95"] == pytest.approx(1.0) and r["instances"] == 1


def test_max_dets_caps_detections_per_image() -> None:
    boxes = [[10.0 * i, 0, 10.0 * i + 8, 8] for i in range(150)]
    gt = [_gt(boxes, [0] * 150)]
    preds = [_pred(boxes, list(np.linspace(0.9, 0.1, 150)), [0] * 150)]
    # COCO's 100: the 100 best are all correct → recall 2/3 → recall points 0.00 .. 0.66 at precision 1
    assert coco_map(gt, preds)["mAP50"] == pytest.approx(67 / 101)
    assert coco_map(gt, preds, max_dets=300)["mAP50"] == pytest.approx(1.0)


def test_accepts_detections_objects() -> None:
    det = Detections(np.asarray([GT_BOX], np.float32), np.asarray([0.7], np.float32), np.asarray([0]))
    assert coco_map([_gt([GT_BOX], [0])], [det])["mAP50-95"] == pytest.approx(1.0)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 ground-truth images but 1"):
        coco_map([_gt([], []), _gt([], [])], [_pred([], [], [])])


def _jittered_predictions(gt: list[tuple[np.ndarray, np.ndarray]], seed: int) -> list[tuple[np.ndarray, ...]]:
    """Ground truth moved by a few pixels, some boxes dropped or relabelled, plus random false positives."""
    rng = np.random.default_rng(seed)
    preds = []
    for boxes, classes in gt:
        keep = rng.random(len(classes)) > 0.15
        b = boxes[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        c = np.where(rng.random(int(keep.sum())) < 0.1, (classes[keep] + 1) % 6, classes[keep])
        fp = rng.uniform(0, 120, (3, 2))
        b = np.concatenate([b, np.concatenate([fp, fp + rng.uniform(5, 40, (3, 2))], 1)])
        c = np.concatenate([c, rng.integers(0, 6, 3)])
        preds.append((b, rng.uniform(0.01, 1.0, len(c)), c))
    return preds


def test_agrees_with_a_direct_cocoeval_call(shapes_yaml: Path, tmp_path: Path) -> None:
    """Our reader + wrapper vs the zoo's own COCO export scored by COCOeval_faster directly."""
    from faster_coco_eval import COCO, COCOeval_faster

    from cvdeploy.zoo.dataset import to_coco as zoo_to_coco

    ds = read_yolo(shapes_yaml, "val")
    gt = [(it.boxes, it.class_ids) for it in ds]
    preds = _jittered_predictions(gt, seed=3)
    ours = coco_map(gt, preds, num_classes=6)

    gt_json = zoo_to_coco(shapes_yaml, "val")
    id_of = {im["file_name"]: im["id"] for im in gt_json["images"]}
    dets = [{"image_id": id_of[it.image.name], "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": float(s)}
            for it, (b, s_, c_) in zip(ds, preds, strict=True)
            for (x1, y1, x2, y2), s, c in zip(b.tolist(), s_, c_, strict=True)]  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    coco_gt = COCO(str(tmp_path / "gt.json"))

    def direct(cat_ids: list[int] | None = None) -> np.ndarray:
        ev = COCOeval_faster(
            coco_gt, coco_gt.loadRes(dets), iouType="bbox", print_function=lambda *a, **k: None
        )
        if cat_ids:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return np.asarray(ev.stats)

    stats = direct()
    assert 0.1 < stats[0] < 0.95  # a non-trivial case
    assert ours["mAP50-95"] == pytest.approx(stats[0], abs=1e-9)
    assert ours["mAP50"] == pytest.approx(stats[1], abs=1e-9)
    for k in ours["per_class"]:
        one = direct([k + 1])
        assert ours["per_class"][k]["mAP50-95"] == pytest.approx(one[0], abs=1e-9)
        assert ours["per_class"][k]["mAP50"] == pytest.approx(one[1], abs=1e-9)


def test_to_coco_json_shapes() -> None:
    gt_json, dets = to_coco_json(
        [_gt([[1, 2, 11, 22]], [3])], [_pred([[0, 0, 5, 5]], [0.5], [2])], num_classes=4
    )
    assert gt_json["annotations"][0]["bbox"] == [1, 2, 10, 20]
    assert gt_json["annotations"][0]["category_id"] == 4
    assert [c["id"] for c in gt_json["categories"]] == [1, 2, 3, 4]
    assert dets == [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5}]


@pytest.mark.parametrize(
    ("labels", "probs", "expected"),
    [
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], {"top1": 1.0, "top5": 1.0}),
        ([2, 0], [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], {"top1": 0.0, "top5": 1.0}),
        # 7 classes: the true class ranked 6th misses top-5, ranked 5th hits
        ([6, 4], [[0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]] * 2, {"top1": 0.0, "top5": 0.5}),
        ([3], [[0.25, 0.25, 0.25, 0.25]], {"top1": 0.0, "top5": 1.0}),  # ties rank the lower id first
        ([9], [[0.5, 0.5]], {"top1": 0.0, "top5": 0.0}),  # a label the model cannot output never counts
    ],
)
def test_topk_accuracy(labels: list[int], probs: list[list[float]], expected: dict[str, float]) -> None:
    assert topk_accuracy(labels, np.asarray(probs)) == pytest.approx(expected)
