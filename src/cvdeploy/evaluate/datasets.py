"""Labelled datasets for evaluation: YOLO (Ultralytics ``data.yaml``), COCO json, and image folders.

Every detection reader returns a :class:`DetectionDataset` whose items are
``(image_path, boxes (n, 4) float64 xyxy pixels, class_ids (n,) int64)``, whatever the format on
disk, so metrics never see a file format. Classification datasets are ImageNet-style folders,
``root/<class_name>/*.jpg`` (optionally ``root/<split>/<class_name>/*.jpg``).

The YOLO reader follows the Ultralytics layout rules, not only the files cvdeploy generates:
``path`` is the dataset root (relative paths are taken from the yaml's folder, then from the
working directory), a split is a folder searched recursively, a ``.txt`` list of images, or a
list of either, and an image's label file is found by replacing its last ``images`` folder with
``labels`` and its suffix with ``.txt`` (a missing label file means "no objects"). Label lines are
``class cx cy w h`` normalised to 0-1; polygon lines (``class x1 y1 x2 y2 ...``) count as their
enclosing box. For the other tasks (``read_yolo(..., task=...)``) a line also gives what the task
predicts: ``segment`` a polygon (``class x1 y1 x2 y2 ...``), ``pose`` keypoints after the box
(``class cx cy w h x y [v] ...``, ``kpt_shape`` from the data.yaml), ``obb`` four corners
(``class x1 y1 x2 y2 x3 y3 x4 y4``), all normalised to 0-1; they are kept, in pixels, on the items.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml

from cvdeploy.errors import ConfigError, ImageError, InputError
from cvdeploy.images import IMAGE_SUFFIXES, find_images

__all__ = [
    "ClassificationDataset",
    "ClassifiedImage",
    "DetectionDataset",
    "LabelledImage",
    "find_dataset_file",
    "image_size",
    "list_images",
    "open_detection_dataset",
    "read_classify_folder",
    "read_coco",
    "read_yolo",
    "to_coco",
    "yolo_split_images",
]

log = logging.getLogger("cvdeploy")
SPLITS = ("train", "val", "test")
_COORD_TOLERANCE = 1e-3  # normalised coordinates may exceed 0-1 by this much (rounding in exporters)


class LabelledImage(NamedTuple):
    """One image and its ground truth: ``(n, 4)`` float64 xyxy pixel boxes and ``(n,)`` int64 class ids.

    Task datasets add, per object and in pixels: ``polygons`` (segment: ``(p, 2)`` outlines; obb: the
    4 corners) or ``keypoints`` (pose: ``(n, K, 3)`` x, y, visibility 0/1/2).
    """

    image: Path
    boxes: np.ndarray
    class_ids: np.ndarray
    polygons: list[np.ndarray] | None = None
    keypoints: np.ndarray | None = None


@dataclass
class DetectionDataset:
    """Labelled images of one split, with class names indexed by the items' class ids.

    ``sizes[i]`` is ``(width, height)`` of ``items[i]``'s image, in pixels.
    """

    source: Path
    format: Literal["yolo", "coco"]
    split: str | None
    class_names: list[str]
    items: list[LabelledImage]
    sizes: list[tuple[int, int]] = field(default_factory=list)
    task: str = "detect"
    kpt_shape: list[int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[LabelledImage]:
        return iter(self.items)

    @property
    def instances(self) -> int:
        """Number of ground-truth boxes over all images."""
        return int(sum(len(it.class_ids) for it in self.items))

    def head(self, limit: int | None) -> DetectionDataset:
        """The first ``limit`` images (all when ``limit`` is None)."""
        if limit is None:
            return self
        return DetectionDataset(self.source, self.format, self.split, self.class_names, self.items[:limit],
                                self.sizes[:limit], self.task, self.kpt_shape)  # fmt: skip


class ClassifiedImage(NamedTuple):
    """One image and the index of its class."""

    image: Path
    class_id: int


@dataclass
class ClassificationDataset:
    """Images labelled with one class each; ``class_id`` indexes ``class_names``."""

    source: Path
    split: str | None
    class_names: list[str]
    items: list[ClassifiedImage]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ClassifiedImage]:
        return iter(self.items)


# ----------------------------------------------------------------------------------------------------
# image headers
# ----------------------------------------------------------------------------------------------------


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header when Pillow is installed.

    The size is that of the stored pixels (EXIF orientation is not applied), which is what
    :func:`cvdeploy.images.read_image` decodes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        from cvdeploy.images import read_image

        img = read_image(p)
        return int(img.shape[1]), int(img.shape[0])
    try:
        with Image.open(p) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as exc:
        # ImportError: a Pillow plugin registered by another package (e.g. a HEIF opener) may be
        # half-installed; the file is still not readable as an image
        raise ImageError(
            f"{p}: cannot read as an image ({exc.__class__.__name__}); fix or remove the file"
        ) from None


# ----------------------------------------------------------------------------------------------------
# YOLO / Ultralytics data.yaml
# ----------------------------------------------------------------------------------------------------


def _load_data_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"dataset file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a data.yaml must be a mapping with path, train/val/test and names")
    return data


def _yaml_names(data: dict[str, Any], path: Path) -> list[str]:
    """``names`` as a list indexed by class id; a dict may leave gaps (filled with the id)."""
    names = data.get("names")
    if names is None:
        nc = data.get("nc")
        if isinstance(nc, int) and nc > 0:
            return [str(i) for i in range(nc)]
        raise ConfigError(f"{path}: no 'names' (class names, a list or an id → name mapping)")
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: 'names' keys must be class ids (0, 1, ...)") from None
        if not by_id or min(by_id) < 0:
            raise ConfigError(f"{path}: 'names' must map class ids 0, 1, ... to names")
        return [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]
    raise ConfigError(f"{path}: 'names' must be a list or a mapping, not {type(names).__name__}")


def _yaml_root(data: dict[str, Any], path: Path) -> Path:
    raw = data.get("path")
    if not raw:
        return path.parent.resolve()
    root = Path(str(raw)).expanduser()
    if root.is_absolute():
        return root
    for base in (path.parent, Path.cwd()):
        if (base / root).is_dir():
            return (base / root).resolve()
    return (path.parent / root).resolve()


def _split_images(entry: Any, root: Path, path: Path, split: str) -> list[Path]:
    """Images named by one split entry: a folder, a ``.txt`` list of images, or a list of those."""
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for e in entries:
        p = Path(str(e)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images.extend(find_images([p]))
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                q = Path(line)
                if not q.is_absolute():
                    # Ultralytics: "./x.jpg" is relative to the list file's folder, "x.jpg" to the root
                    q = p.parent / line if line.startswith("./") else root / line
                images.append(q)
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            raise InputError(f"{path}: split {split!r} points at {p}, which does not exist")
    return images


def label_path(image: Path) -> Path:
    """The YOLO label file of an image: its last ``images`` folder replaced by ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_yolo_labels(path: Path, width: int, height: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One YOLO label file → ``(n, 4)`` float64 xyxy pixel boxes and ``(n,)`` int64 class ids.

    A missing or empty file means no objects. Every line counts, duplicates included (as in a
    COCO json); boxes without area (after clipping to the image) are left out, as in the COCO reader.
    """
    if not path.is_file():
        return np.zeros((0, 4), np.float64), np.zeros((0,), np.int64)
    boxes: list[list[float]] = []
    classes: list[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {lineno}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise InputError(
                f"{where}: expected numbers 'class cx cy w h', got {line.strip()[:60]!r}"
            ) from None
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise InputError(
                f"{where}: class id {fields[0]} is out of range for the {num_classes} classes in 'names'"
            )
        coords = np.asarray(values[1:], np.float64)
        if len(values) == 5:
            cx, cy, w, h = coords
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            check = coords
        elif len(values) >= 7 and len(values) % 2 == 1:  # polygon: class x1 y1 x2 y2 ...
            xs, ys = coords[0::2], coords[1::2]
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
            check = coords
        else:
            raise InputError(f"{where}: expected 'class cx cy w h' (5 values), got {len(values)} values")
        if check.min() < -_COORD_TOLERANCE or check.max() > 1 + _COORD_TOLERANCE:
            raise InputError(f"{where}: coordinates must be normalised to 0-1 (divide by the image size)")
        box = np.clip([x1 * width, y1 * height, x2 * width, y2 * height], 0, [width, height, width, height])
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # no area: it could never be matched
        boxes.append(box.tolist())
        classes.append(int(cls))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def yolo_split_images(data_yaml: str | os.PathLike[str], split: str = "val") -> tuple[list[str], list[Path]]:
    """Class names and image paths of one split of a YOLO dataset, without reading any label."""
    path = Path(data_yaml)
    data = _load_data_yaml(path)
    names = _yaml_names(data, path)
    if not data.get(split):
        have = [s for s in SPLITS if data.get(s)]
        raise InputError(
            f"{path} has no {split!r} split; it has: {', '.join(have) or 'none'} (choose with --split)"
        )
    images = _split_images(data[split], _yaml_root(data, path), path, split)
    if not images:
        raise InputError(f"{path}: the {split!r} split has no images")
    return names, images


def parse_task_labels(
    path: Path, width: int, height: int, num_classes: int, task: str, kpt_shape: Sequence[int] | None = None
) -> LabelledImage:
    """One YOLO label file of a segment/pose/obb dataset → boxes, classes and the task's own labels (pixels).

    The returned item's ``image`` is the label file (the caller sets the image).
    """
    boxes: list[list[float]] = []
    classes: list[int] = []
    polygons: list[np.ndarray] = []
    kpts: list[np.ndarray] = []
    k, d = (int(kpt_shape[0]), int(kpt_shape[1])) if kpt_shape else (0, 0)
    scale = np.asarray([width, height], np.float64)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {lineno}"
        try:
            values = np.asarray([float(v) for v in fields], np.float64)
        except ValueError:
            raise InputError(f"{where}: expected numbers, got {line.strip()[:60]!r}") from None
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise InputError(
                f"{where}: class id {fields[0]} is out of range for the {num_classes} classes in 'names'"
            )
        coords = values[1:]
        if task == "pose":
            if len(coords) != 4 + k * d:
                raise InputError(f"{where}: a pose label is 'class cx cy w h' + {k}x{d} keypoint values "
                                 f"(kpt_shape {list(kpt_shape or [])}), got {len(coords)} values")  # fmt: skip
            cx, cy, w, h = coords[:4]
            pts = coords[4:].reshape(k, d)
            kp = np.zeros((k, 3), np.float64)
            kp[:, :2] = pts[:, :2] * scale
            kp[:, 2] = pts[:, 2] if d == 3 else np.where((pts[:, :2] > 0).any(1), 2.0, 0.0)
            box = np.asarray([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * np.tile(scale, 2)
        else:
            if len(coords) < 6 or len(coords) % 2:
                want = "4 corners (8 values)" if task == "obb" else "a polygon (at least 3 points)"
                raise InputError(f"{where}: a {task} label is 'class' + {want}, got {len(coords)} values")
            if task == "obb" and len(coords) != 8:
                raise InputError(
                    f"{where}: an obb label is 'class x1 y1 x2 y2 x3 y3 x4 y4', got {len(coords)} values"
                )
            poly = coords.reshape(-1, 2) * scale
            box = np.concatenate([poly.min(0), poly.max(0)])
        if (
            coords.min() < -_COORD_TOLERANCE
            or coords[: 4 if task == "pose" else None].max() > 1 + _COORD_TOLERANCE
        ):
            raise InputError(f"{where}: coordinates must be normalised to 0-1 (divide by the image size)")
        box = np.clip(box, 0, [width, height, width, height])
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        boxes.append(box.tolist())
        classes.append(int(cls))
        if task == "pose":
            kpts.append(kp)
        else:
            polygons.append(poly)
    return LabelledImage(
        path,
        np.asarray(boxes, np.float64).reshape(-1, 4),
        np.asarray(classes, np.int64),
        polygons if task in ("segment", "obb") else None,
        np.asarray(kpts, np.float64).reshape(-1, k, 3) if task == "pose" else None,
    )


def read_yolo(
    data_yaml: str | os.PathLike[str],
    split: str = "val",
    task: str = "detect",
    kpt_shape: Sequence[int] | None = None,
) -> DetectionDataset:
    """Read one split of an Ultralytics-layout dataset described by ``data_yaml``.

    ``task``: ``detect`` (boxes), or ``segment``/``pose``/``obb`` to read polygons, keypoints or
    corners too (``kpt_shape``: the data.yaml's, else this one).
    """
    names, images = yolo_split_images(data_yaml, split)
    if task == "pose":
        stated = _load_data_yaml(Path(data_yaml)).get("kpt_shape")
        kpt_shape = [int(v) for v in stated] if isinstance(stated, list) and len(stated) == 2 else kpt_shape
        if not kpt_shape:
            raise ConfigError(f"{data_yaml}: a pose dataset states its keypoints, e.g. 'kpt_shape: [17, 3]'")
    items, sizes = [], []
    for img in images:
        w, h = image_size(img)
        if task == "detect":
            boxes, classes = parse_yolo_labels(label_path(img), w, h, len(names))
            items.append(LabelledImage(img, boxes, classes))
        else:
            items.append(
                parse_task_labels(label_path(img), w, h, len(names), task, kpt_shape)._replace(image=img)
            )
        sizes.append((w, h))
    return DetectionDataset(Path(data_yaml), "yolo", split, names, items, sizes, task,
                            list(kpt_shape) if kpt_shape else None)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# COCO json
# ----------------------------------------------------------------------------------------------------


def _load_coco_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or "categories" not in doc:
        raise InputError(
            f"{path}: not a COCO detection json (needs 'images', 'annotations' and 'categories')"
        )
    return doc


def _coco_image_dir(path: Path, doc: dict[str, Any]) -> Path:
    """Guess the image folder of a COCO json from the usual layouts; the first one holding its images."""
    first = next((im.get("file_name") for im in doc["images"] if im.get("file_name")), None)
    if first is None:
        return path.parent
    tag = path.stem.split("_")[-1]  # instances_val2017 -> val2017
    bases = (path.parent, path.parent / "images", path.parent.parent, path.parent.parent / "images")
    for base in bases:
        for cand in (base, base / tag):
            if (cand / first).is_file():
                return cand
    raise InputError(f"cannot find the images of {path} (looked for {first} near it); pass --images DIR")


def read_coco(
    annotations: str | os.PathLike[str], images: str | os.PathLike[str] | None = None
) -> DetectionDataset:
    """Read a COCO detection json; ``images`` is the folder its ``file_name`` entries are relative to.

    Categories become class ids ``0..K-1`` in order of their COCO id. Crowd annotations
    (``iscrowd: 1``) and boxes without area are left out, as Ultralytics does.
    """
    path = Path(annotations)
    doc = _load_coco_json(path)
    image_dir = Path(images) if images is not None else _coco_image_dir(path, doc)
    if not image_dir.is_dir():
        raise InputError(f"image folder not found: {image_dir}")
    cats = sorted(doc["categories"], key=lambda c: int(c["id"]))
    cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    per_image: dict[int, tuple[list[list[float]], list[int]]] = {}
    for ann in doc.get("annotations") or []:
        if ann.get("iscrowd", 0):
            continue
        cid = int(ann["category_id"])
        if cid not in cat_index:
            raise InputError(
                f"{path}: annotation {ann.get('id')} has category_id {cid}, which is not in 'categories'"
            )
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            continue
        boxes, classes = per_image.setdefault(int(ann["image_id"]), ([], []))
        boxes.append([x, y, x + w, y + h])
        classes.append(cat_index[cid])
    items, sizes = [], []
    for im in sorted(doc["images"], key=lambda d: int(d["id"])):
        file = image_dir / str(im["file_name"])
        if not file.is_file():
            raise InputError(f"{path}: image {im['file_name']} not found in {image_dir}; pass --images DIR")
        width, height = (int(im["width"]), int(im["height"])) if im.get("width") else image_size(file)
        boxes, classes = per_image.get(int(im["id"]), ([], []))
        items.append(
            LabelledImage(file, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64))
        )
        sizes.append((width, height))
    if not items:
        raise InputError(f"{path} lists no images")
    return DetectionDataset(path, "coco", None, names, items, sizes)


def to_coco(dataset: DetectionDataset, image_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The dataset as a COCO detection json (dict): image ids ``1..n``, category id = class id + 1.

    ``file_name`` is relative to ``image_root`` when given (and the image lies under it), else absolute.
    """
    root = Path(image_root).resolve() if image_root is not None else None
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (item, (w, h)) in enumerate(zip(dataset.items, dataset.sizes, strict=True), start=1):
        file = item.image.resolve()
        name = str(file.relative_to(root)) if root is not None and file.is_relative_to(root) else str(file)
        images.append({"id": image_id, "file_name": name, "width": int(w), "height": int(h)})
        for (x1, y1, x2, y2), c in zip(item.boxes.tolist(), item.class_ids.tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})  # fmt: skip
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(dataset.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


# ----------------------------------------------------------------------------------------------------
# finding a dataset from what the user typed
# ----------------------------------------------------------------------------------------------------


def _pick_json(candidates: Sequence[Path], folder: Path, split: str) -> Path | None:
    if len(candidates) == 1:
        return candidates[0]
    named = [c for c in candidates if split in c.stem]
    if len(named) == 1:
        return named[0]
    if candidates:
        listed = ", ".join(c.name for c in candidates[:4])
        raise InputError(f"{folder} holds several COCO json files ({listed}); pass --data FILE.json")
    return None


def find_dataset_file(data: str | os.PathLike[str], split: str = "val") -> Path:
    """The ``data.yaml`` or COCO json that ``data`` names: the file itself, or the one in a folder."""
    p = Path(data)
    if not p.exists():
        raise InputError(f"dataset not found: {p} (give a data.yaml, a COCO json, or a folder holding one)")
    if p.is_file():
        if p.suffix.lower() in (".yaml", ".yml", ".json"):
            return p
        raise InputError(f"{p}: not a dataset description; give a data.yaml or a COCO .json")
    if (p / "data.yaml").is_file():
        return p / "data.yaml"
    yamls = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
    if len(yamls) == 1:
        return yamls[0]
    found = _pick_json(sorted(p.glob("*.json")) or sorted((p / "annotations").glob("*.json")), p, split)
    if found is not None:
        return found
    raise InputError(
        f"no data.yaml or COCO json in {p}; point --data at a data.yaml, an instances.json (with --images DIR) "
        "or a folder holding one"
    )


def open_detection_dataset(
    data: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    split: str = "val",
    task: str = "detect",
    kpt_shape: Sequence[int] | None = None,
) -> DetectionDataset:
    """A labelled detection dataset from a ``data.yaml``, a COCO json (+ image folder), or a folder holding one.

    ``task`` other than ``detect`` reads masks, keypoints or corners too (YOLO layout).
    """
    file = find_dataset_file(data, split)
    if file.suffix.lower() == ".json":
        if task != "detect":
            raise ConfigError(f"{file}: {task} models are validated on a YOLO data.yaml (polygons, keypoints or "
                              "corners in the label files); a COCO json is read for boxes only")  # fmt: skip
        return read_coco(file, images)
    return read_yolo(file, split, task, kpt_shape)


def list_images(
    data: str | os.PathLike[str], images: str | os.PathLike[str] | None = None, split: str = "val"
) -> tuple[list[Path], str]:
    """Images to compare artifacts on, no label read: an image, a folder of images, or the ``split``
    of a data.yaml / the images of a COCO json (or a folder holding one of those).

    Returns the images and where they came from (the folder, image or dataset file).
    """
    p = Path(data)
    if not p.exists():
        raise InputError(f"no such file or folder: {p}")
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return [p], str(p)
    if p.is_dir() and not (p / "data.yaml").is_file():
        found = find_images([p])
        if found:
            return found, str(p)
        try:
            file = find_dataset_file(p, split)
        except InputError:
            raise InputError(f"no images in {p} (nor a data.yaml or COCO json to take them from)") from None
    else:
        file = find_dataset_file(p, split)
    if file.suffix.lower() != ".json":
        return yolo_split_images(file, split)[1], str(file)
    doc = _load_coco_json(file)
    image_dir = Path(images) if images is not None else _coco_image_dir(file, doc)
    files = [image_dir / str(im["file_name"]) for im in sorted(doc["images"], key=lambda d: int(d["id"]))]
    if not files:
        raise InputError(f"{file} lists no images")
    return files, str(file)


# ----------------------------------------------------------------------------------------------------
# classification folders
# ----------------------------------------------------------------------------------------------------


def _placeholder_names(names: Sequence[str]) -> bool:
    """True for the names given to a model that has none (``class0..``, or ``0..`` as Ultralytics' yaml models)."""
    return all(n in (f"class{k}", str(k)) for k, n in enumerate(names))


def read_classify_folder(
    root: str | os.PathLike[str], class_names: Sequence[str], split: str | None = "val"
) -> ClassificationDataset:
    """An ImageNet-style folder ``root/<class_name>/*.jpg`` (or ``root/<split>/<class_name>/``).

    Class ids follow ``class_names`` (the bundle's order); a folder that names no class is an error.
    """
    base = Path(root)
    if not base.is_dir():
        if base.is_file():
            raise InputError(
                f"{base}: a classifier is validated on a folder root/<class_name>/*.jpg, not a file"
            )
        raise InputError(f"dataset folder not found: {base}")
    used_split: str | None = None
    if split and (base / split).is_dir():
        base, used_split = base / split, split
    folders = sorted(d for d in base.iterdir() if d.is_dir())
    if not folders:
        raise InputError(f"{base} has no class folders; expected {base}/<class_name>/*.jpg")
    index = {n: k for k, n in enumerate(class_names)}
    for d in folders:  # a model without names: folders named by class index (0, 1, ...)
        if d.name not in index and d.name.isdigit() and int(d.name) < len(class_names):
            index[d.name] = int(d.name)
    unknown = [d.name for d in folders if d.name not in index]
    if unknown and not any(d.name in index for d in folders) and _placeholder_names(class_names):
        if len(folders) != len(class_names):
            raise InputError(
                f"{base}: the model has no class names and {len(class_names)} classes, but {len(folders)} class "
                "folders; name the folders by class index (0, 1, ...) or export with --names"
            )
        # torchvision's ImageFolder convention: sorted folder k is class k
        log.warning("the model has no class names: class folders are taken in sorted order as classes 0..%d "
                    "(torchvision's ImageFolder convention)", len(folders) - 1)  # fmt: skip
        index = {d.name: k for k, d in enumerate(folders)}
        unknown = []
    if unknown:
        raise InputError(
            f"{base}: folder(s) {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''} name no class of "
            f"the model (its classes: {', '.join(list(class_names)[:5])}{' ...' if len(class_names) > 5 else ''})"
        )
    items = [ClassifiedImage(f, index[d.name]) for d in folders for f in find_images([d])]
    if not items:
        raise InputError(f"{base}: no images in the class folders")
    return ClassificationDataset(base, used_split, list(class_names), items)
