"""Dataset readers: YOLO (Ultralytics layouts), COCO json round trip, image folders, classification folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cvdeploy.errors import ConfigError, CvdeployError, ImageError, InputError
from cvdeploy.evaluate.datasets import (
    label_path,
    list_images,
    open_detection_dataset,
    read_classify_folder,
    read_coco,
    read_yolo,
    to_coco,
)
from cvdeploy.zoo.classes import CLASS_NAMES
from cvdeploy.zoo.dataset import generate_image

from .conftest import CHANNELS, solid_image


def _write_image(path: Path, w: int = 64, h: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return path


def _mini_yolo(root: Path, labels: dict[str, str], names: object = ("a", "b"), **yaml_extra: object) -> Path:
    """``root/images/val/<stem>.jpg`` (64x48) with ``root/labels/val/<stem>.txt`` holding ``labels[stem]``."""
    for stem, text in labels.items():
        _write_image(root / "images" / "val" / f"{stem}.jpg")
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "val" / f"{stem}.txt").write_text(text)
    data = {
        "path": str(root),
        "val": "images/val",
        "names": list(names) if isinstance(names, tuple) else names,
    }
    data.update(yaml_extra)
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_yolo_reader_matches_the_generator(shapes_yaml: Path) -> None:
    ds = read_yolo(shapes_yaml, "val")
    assert ds.format == "yolo" and ds.split == "val"
    assert ds.class_names == list(CLASS_NAMES)
    assert [it.image.name for it in ds] == [f"{i:06d}.jpg" for i in range(2, 8)]
    assert ds.sizes == [(160, 160)] * 6
    for i, item in enumerate(ds, start=2):
        _, classes, boxes = generate_image(11, i, 160)
        assert item.class_ids.tolist() == classes.tolist()
        np.testing.assert_allclose(item.boxes, boxes, atol=1e-3)  # labels keep 6 decimals of 160 px
    assert ds.instances == sum(len(it.class_ids) for it in ds) > 0


def test_yolo_splits_and_limit(shapes_yaml: Path) -> None:
    assert [len(read_yolo(shapes_yaml, s)) for s in ("train", "val", "test")] == [2, 6, 2]
    assert len(read_yolo(shapes_yaml, "val").head(4)) == 4


def test_yolo_pixel_boxes_and_label_forms(tmp_path: Path) -> None:
    text = (
        "0 0.5 0.5 0.5 0.5\n"  # box: 64x48 image → x 16..48, y 12..36
        "\n"
        "1 0.25 0.25 0.75 0.25 0.5 0.75\n"  # polygon → its enclosing box
        "0 0.5 0.5 0.5 0.5\n"  # a duplicate counts, as it would in a COCO json
        "0 0.99 0.5 0.0 0.5\n"  # no area: left out
    )
    ds = read_yolo(_mini_yolo(tmp_path, {"x": text, "empty": ""}, names={0: "a", 1: "b"}))
    by_name = {it.image.stem: it for it in ds}
    np.testing.assert_allclose(by_name["x"].boxes, [[16, 12, 48, 36], [16, 12, 48, 36], [16, 12, 48, 36]])
    assert by_name["x"].class_ids.tolist() == [0, 1, 0]
    assert len(by_name["empty"].class_ids) == 0
    assert ds.class_names == ["a", "b"]


def test_yolo_missing_label_file_means_no_objects(tmp_path: Path) -> None:
    yaml_path = _mini_yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    _write_image(tmp_path / "images" / "val" / "nolabel.jpg")
    ds = read_yolo(yaml_path)
    assert {it.image.stem: len(it.class_ids) for it in ds} == {"nolabel": 0, "x": 1}


def test_yolo_relative_path_txt_lists_and_split_lists(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for sub in ("a", "b"):
        _write_image(root / "images" / sub / f"{sub}.jpg")
        (root / "labels" / sub).mkdir(parents=True)
        (root / "labels" / sub / f"{sub}.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "val.txt").write_text("./images/a/a.jpg\nimages/b/b.jpg\n")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "d.yaml").write_text(yaml.safe_dump({"path": "../ds", "val": "val.txt", "test": ["images/a", "images/b"],
                                                "names": ["a", "b"]}))  # fmt: skip
    for split in ("val", "test"):
        ds = read_yolo(cfg / "d.yaml", split)
        assert [it.image.name for it in ds] == ["a.jpg", "b.jpg"]
        assert [it.class_ids.tolist() for it in ds] == [[1], [1]]


def test_yolo_without_path_uses_the_yaml_folder(tmp_path: Path) -> None:
    _mini_yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    del data["path"]
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    assert len(read_yolo(tmp_path / "data.yaml")) == 1


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("/d/images/val/x.jpg", "/d/labels/val/x.txt"),
        ("/images/d/images/val/sub/x.png", "/images/d/labels/val/sub/x.txt"),  # the last images/ folder
        ("/d/val/x.jpg", "/d/val/x.txt"),
    ],
)
def test_label_path_rule(image: str, expected: str) -> None:
    assert label_path(Path(image)) == Path(expected)


@pytest.mark.parametrize(
    ("label", "error", "match"),
    [
        ("2 0.5 0.5 0.1 0.1\n", InputError, r"x\.txt line 1: class id 2 is out of range for the 2 classes"),
        ("-1 0.5 0.5 0.1 0.1\n", InputError, "class id -1 is out of range"),
        ("0 0.5 0.5 0.1\n", InputError, r"line 1: expected 'class cx cy w h' \(5 values\), got 4"),
        ("0 0.5 0.5 0.1 0.1\nzero 1 2 3 4\n", InputError, "line 2: expected numbers"),
        ("0 32 24 10 10\n", InputError, "normalised to 0-1"),
    ],
)
def test_yolo_bad_labels(tmp_path: Path, label: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        read_yolo(_mini_yolo(tmp_path, {"x": label}))


@pytest.mark.parametrize(
    ("split", "data", "error", "match"),
    [
        ("test", {"val": "images/val", "names": ["a"]}, InputError, "has no 'test' split; it has: val"),
        ("val", {"val": "images/nope", "names": ["a"]}, InputError, "points at .*nope, which does not exist"),
        ("val", {"val": "images/val"}, ConfigError, "no 'names'"),
        ("val", {"val": "images/val", "names": "a"}, ConfigError, "'names' must be a list or a mapping"),
        ("val", ["not", "a", "mapping"], ConfigError, "must be a mapping"),
    ],
)
def test_yolo_bad_data_yaml(
    tmp_path: Path, split: str, data: object, error: type[Exception], match: str
) -> None:
    _write_image(tmp_path / "images" / "val" / "x.jpg")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(error, match=match):
        read_yolo(tmp_path / "data.yaml", split)


def test_yolo_names_from_nc_only(tmp_path: Path) -> None:
    _write_image(tmp_path / "images" / "val" / "x.jpg")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"val": "images/val", "nc": 3}))
    assert read_yolo(tmp_path / "data.yaml").class_names == ["0", "1", "2"]


def test_unreadable_image_names_its_path(tmp_path: Path) -> None:
    yaml_path = _mini_yolo(tmp_path, {"x": ""})
    bad = tmp_path / "images" / "val" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        read_yolo(yaml_path)


def test_missing_dataset_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dataset not found: .*nothing\.yaml"):
        open_detection_dataset(tmp_path / "nothing.yaml")


def test_coco_round_trip(shapes_yaml: Path, tmp_path: Path) -> None:
    ds = read_yolo(shapes_yaml, "val")
    image_root = shapes_yaml.parent / "images" / "val"
    doc = to_coco(ds, image_root)
    assert {im["file_name"] for im in doc["images"]} == {it.image.name for it in ds}
    (tmp_path / "val.json").write_text(json.dumps(doc))
    back = read_coco(tmp_path / "val.json", image_root)
    assert back.format == "coco" and back.class_names == ds.class_names and back.sizes == ds.sizes
    assert [it.image for it in back] == [it.image for it in ds]
    for a, b in zip(ds, back, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert a.class_ids.tolist() == b.class_ids.tolist()


def _coco_doc(file_name: str = "x.jpg") -> dict[str, object]:
    return {
        "images": [{"id": 7, "file_name": file_name, "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [5, 5, 4, 4]},
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "bbox": [0, 0, 60, 40],
                "iscrowd": 1,
            },  # crowd: left out
            {"id": 4, "image_id": 7, "category_id": 3, "bbox": [9, 9, 0, 4]},  # no area: left out
        ],
        "categories": [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}],
    }


def test_coco_categories_map_to_contiguous_ids_in_id_order(tmp_path: Path) -> None:
    _write_image(tmp_path / "x.jpg")
    (tmp_path / "a.json").write_text(json.dumps(_coco_doc()))
    ds = read_coco(tmp_path / "a.json", tmp_path)
    assert ds.class_names == ["car", "zebra"]
    (item,) = ds.items
    assert item.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(item.boxes, [[1, 2, 11, 22], [5, 5, 9, 9]])


@pytest.mark.parametrize(
    ("json_at", "images_at"),
    [
        ("annotations/instances_val2017.json", "val2017"),  # the COCO layout
        ("annotations/instances_val2017.json", "images/val2017"),
        ("labels.json", "images"),
        ("labels.json", "."),
    ],
)
def test_coco_image_folder_is_guessed(tmp_path: Path, json_at: str, images_at: str) -> None:
    _write_image(tmp_path / images_at / "x.jpg")
    (tmp_path / json_at).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / json_at).write_text(json.dumps(_coco_doc()))
    ds = open_detection_dataset(tmp_path / json_at)
    assert ds.items[0].image == tmp_path / images_at / "x.jpg"
    assert open_detection_dataset(tmp_path).items[0].image == ds.items[0].image  # a folder holding the json


@pytest.mark.parametrize(
    ("doc", "make_image", "match"),
    [
        (_coco_doc(), False, r"cannot find the images of .*; pass --images DIR"),
        ({"images": []}, True, "not a COCO detection json"),
        ({**_coco_doc(), "categories": [{"id": 3, "name": "car"}]}, True, "category_id 90, which is not in"),
    ],
)
def test_coco_errors(tmp_path: Path, doc: dict[str, object], make_image: bool, match: str) -> None:
    if make_image:
        _write_image(tmp_path / "x.jpg")
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=match):
        read_coco(tmp_path / "a.json")


def test_folder_holding_a_data_yaml(shapes_yaml: Path) -> None:
    assert open_detection_dataset(shapes_yaml.parent, split="test").split == "test"


def test_folder_without_any_dataset_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no data\.yaml or COCO json"):
        open_detection_dataset(tmp_path)


def test_list_images_ignores_labels(shapes_yaml: Path, photo_dir: Path, tmp_path: Path) -> None:
    files, source = list_images(photo_dir)
    assert [f.name for f in files] == [f"photo{i}.jpg" for i in range(4)] and source == str(photo_dir)
    files, source = list_images(shapes_yaml)
    assert len(files) == 6 and source == str(shapes_yaml)
    assert list_images(shapes_yaml.parent, split="test")[0] == [
        it.image for it in read_yolo(shapes_yaml, "test")
    ]
    assert list_images(files[0])[0] == [files[0]]
    # labels are never read: a broken one does not matter
    broken = _mini_yolo(tmp_path / "y", {"x": "9 9 9 9 9\n"})
    assert [f.name for f in list_images(broken)[0]] == ["x.jpg"]
    _write_image(tmp_path / "c" / "images" / "x.jpg")
    (tmp_path / "c" / "a.json").write_text(json.dumps({**_coco_doc(), "categories": []}))
    assert list_images(tmp_path / "c" / "a.json")[0] == [tmp_path / "c" / "images" / "x.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no images in .*empty"):
        list_images(tmp_path / "empty")


def test_classify_folder(colour_folder: Path) -> None:
    ds = read_classify_folder(colour_folder, CHANNELS, "val")
    assert ds.split == "val" and ds.source == colour_folder / "val"
    counts = {name: sum(it.class_id == k for it in ds) for k, name in enumerate(CHANNELS)}
    assert counts == {"red": 3, "green": 2, "blue": 2}
    # without a split folder the root itself holds the classes
    assert len(read_classify_folder(colour_folder / "val", CHANNELS, "val")) == 7


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("unknown-class", "folder.*purple name no class of the model"),
        ("empty", "has no class folders"),
        ("missing", "dataset folder not found"),
    ],
)
def test_classify_folder_errors(tmp_path: Path, colour_folder: Path, setup: str, match: str) -> None:
    root = colour_folder
    if setup == "unknown-class":
        solid_image(root / "val" / "purple" / "0.png", (128, 0, 128), seed=1)
    elif setup == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    else:
        shutil.rmtree(root)
    with pytest.raises(CvdeployError, match=match):
        read_classify_folder(root, CHANNELS, "val")
