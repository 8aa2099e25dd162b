"""The shapes dataset generator: determinism, honest labels, YOLO layout and the COCO export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cvdeploy.zoo.classes import CLASS_NAMES
from cvdeploy.zoo.dataset import (
    _split_counts,
    generate_dataset,
    generate_image,
    list_split,
    read_labels,
    to_coco,
    write_coco,
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "data.yaml"}  # fmt: skip


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 images at 160 px, seed 7, drawn in this process."""
    return generate_dataset(
        tmp_path_factory.mktemp("a"), images=6, seed=7, imgsz=160, progress=False, workers=1
    )


def test_same_seed_same_bytes_whatever_the_workers(small_set: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path, images=6, seed=7, imgsz=160, progress=False, workers=2)
    first, second = _tree_bytes(small_set.parent), _tree_bytes(again.parent)
    assert len(first) == 12  # 6 images + 6 label files
    assert first == second


def test_other_seed_other_images(small_set: Path, tmp_path: Path) -> None:
    other = generate_dataset(tmp_path, images=6, seed=8, imgsz=160, progress=False, workers=1)
    a, b = _tree_bytes(small_set.parent), _tree_bytes(other.parent)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith(".jpg"))


def test_data_yaml_has_the_ultralytics_layout(small_set: Path) -> None:
    data = yaml.safe_load(small_set.read_text())
    assert Path(data["path"]) == small_set.parent
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert data["names"] == dict(enumerate(CLASS_NAMES))
    assert data["nc"] == len(CLASS_NAMES) >= 6
    counts = {s: len(list_split(small_set, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 1, "test": 0}


@pytest.mark.parametrize(
    ("images", "splits", "expected"),
    [
        (100, (0.8, 0.1, 0.1), [80, 10, 10]),
        (10, (1.0, 0.0, 0.0), [10, 0, 0]),
        (7, (0, 1, 0), [0, 7, 0]),
        (3, (1, 1, 1), [1, 1, 1]),
    ],
)
def test_split_counts(images: int, splits: tuple[float, float, float], expected: list[int]) -> None:
    assert _split_counts(images, splits) == expected


@pytest.mark.parametrize(
    ("splits", "error"), [((0.5, 0.5), ValueError), ((-1, 1, 1), ValueError), ((0, 0, 0), ValueError)]
)
def test_split_counts_rejects_bad_fractions(splits: tuple[float, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        _split_counts(10, splits)


def test_labels_are_sane_over_many_images() -> None:
    imgsz, n_images = 160, 150
    counts = []
    for index in range(n_images):
        image, classes, boxes = generate_image(seed=11, index=index, imgsz=imgsz)
        assert image.shape == (imgsz, imgsz, 3) and image.dtype == np.uint8
        assert classes.shape == (len(boxes),) and boxes.shape == (len(classes), 4)
        assert np.all((classes >= 0) & (classes < len(CLASS_NAMES)))
        assert np.all(boxes >= 0) and np.all(boxes <= imgsz)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        counts.append(len(classes))
    counts_arr = np.asarray(counts)
    assert counts_arr.max() <= 10
    assert (counts_arr == 0).any(), "some images must have no object"
    assert (counts_arr >= 5).any(), "some images must be crowded"
    assert len({c for i in range(20) for c in generate_image(11, i, imgsz)[1].tolist()}) == len(CLASS_NAMES)


def test_label_file_matches_generated_boxes(small_set: Path) -> None:
    img_path, label_path = list_split(small_set, "train")[0]
    _, classes, boxes = generate_image(seed=7, index=int(img_path.stem), imgsz=160)
    got_cls, cxcywh = read_labels(label_path)
    np.testing.assert_array_equal(got_cls, classes)
    expected = np.column_stack([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]]) / 160
    np.testing.assert_allclose(cxcywh, expected, atol=1e-6)


def test_read_labels_of_missing_or_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    for path in (tmp_path / "empty.txt", tmp_path / "missing.txt"):
        classes, boxes = read_labels(path)
        assert classes.shape == (0,) and boxes.shape == (0, 4)


def test_coco_round_trip_gives_the_same_boxes(small_set: Path) -> None:
    coco = to_coco(small_set, "train")
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(CLASS_NAMES) + 1))
    assert [im["id"] for im in coco["images"]] == list(range(1, len(coco["images"]) + 1))
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) > 0
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for im, (_, label_path) in zip(coco["images"], list_split(small_set, "train"), strict=True):
        classes, cxcywh = read_labels(label_path)
        anns = by_image.get(im["id"], [])
        back_cls = np.array([a["category_id"] - 1 for a in anns], np.int64)
        x, y, w, h = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4).T
        back = np.column_stack([(x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"],
                                h / im["height"]])  # fmt: skip
        np.testing.assert_array_equal(back_cls, classes)
        np.testing.assert_allclose(back, cxcywh, rtol=1e-6)


def test_write_coco_is_readable_by_the_coco_api(small_set: Path, tmp_path: Path) -> None:
    path = write_coco(small_set, "train", tmp_path / "train.json")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(to_coco(small_set, "train")))
    coco_api = pytest.importorskip("faster_coco_eval")
    gt = coco_api.COCO(str(path))
    assert len(gt.getImgIds()) == 5
    assert len(gt.getAnnIds()) == len(data["annotations"])
