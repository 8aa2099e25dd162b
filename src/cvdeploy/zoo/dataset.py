"""Deterministic synthetic "shapes" detection dataset in YOLO format, and its COCO export.

Every image is drawn from its own random generator seeded with ``(seed, index)``, so the same seed
gives the same bytes whatever the number of worker processes. An image is a randomly cropped,
scaled, flipped and colour-jittered photograph (see :mod:`cvdeploy.zoo.backgrounds`) with 0-10
shapes drawn on it by OpenCV: varied colour, texture (solid, stripes, gradient, noise), rotation,
aspect, scale (2.5 %-50 % of the image side) and overlap. Labels stay honest: a box is the tight
box of the shape's pixels that are still visible in the final image, a shape is never placed where
it would hide more than half of an earlier one, and at least 60 % of every shape lies inside the
image.

Layout written by :func:`generate_dataset` (the one Ultralytics reads)::

    out_dir/data.yaml
    out_dir/images/{train,val,test}/000000.jpg
    out_dir/labels/{train,val,test}/000000.txt     # "class cx cy w h", normalised to 0-1

Run ``python -m cvdeploy.zoo.dataset -o DIR --images N --seed S`` to generate one from a shell.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from cvdeploy.zoo.backgrounds import random_background
from cvdeploy.zoo.classes import CLASS_NAMES, IMGSZ

__all__ = [
    "CLASS_NAMES",
    "SPLITS",
    "generate_dataset",
    "generate_image",
    "list_split",
    "read_labels",
    "to_coco",
    "write_coco",
]

#: Split names, in the order their images are numbered.
SPLITS: tuple[str, str, str] = ("train", "val", "test")

_MAX_OBJECTS = 10
_EMPTY_PROB = 0.06
_MIN_FRAC, _MAX_FRAC = 0.025, 0.5  # object size as a fraction of the image side (log-uniform)
_MIN_OWN_VISIBLE = 0.5  # a new shape may not leave an earlier one with less than this share visible
_MIN_INSIDE = 0.6  # share of a shape's pixels that must lie inside the image
_JPEG_QUALITY = 90


# ----------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------


def _unit_polygons(cls: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline (and optional hole) of class ``cls`` as ``(k, 2)`` points around the origin, radius ~1."""
    name = CLASS_NAMES[cls]
    if name in ("circle", "ring"):
        t = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], 1)
        hole = outer * rng.uniform(0.45, 0.7) if name == "ring" else None
        return outer, hole
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.8, None
    if name == "triangle":
        t = np.deg2rad(np.array([-90.0, 30.0, 150.0]) + rng.uniform(-12, 12, 3))
        return np.stack([np.cos(t), np.sin(t)], 1), None
    if name == "star":
        t = np.linspace(-math.pi / 2, 1.5 * math.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.55))
        return np.stack([r * np.cos(t), r * np.sin(t)], 1), None
    if name == "cross":
        a = rng.uniform(0.28, 0.42)
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a)]
        return np.array([*pts, (-1, -a), (-a, -a)], np.float64), None
    raise ValueError(f"no renderer for class {name!r}")


def _shape_mask(cls: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased ``(h, w)`` uint8 mask (0-255) of one rotated, stretched shape ``size`` px across."""
    outer, hole = _unit_polygons(cls, rng)
    aspect = math.sqrt(rng.uniform(0.7, 1.43))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    transform = np.array([[c, -s], [s, c]]) @ np.diag([aspect, 1.0 / aspect]) * (size / 2.0)
    outer = outer @ transform.T
    half = math.ceil(np.abs(outer).max()) + 2
    mask = np.zeros((2 * half, 2 * half), np.uint8)
    # 4 fractional bits: sub-pixel vertex placement keeps small shapes faithful
    cv2.fillPoly(mask, [np.round((outer + half) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    if hole is not None:
        hole = hole @ transform.T
        cv2.fillPoly(mask, [np.round((hole + half) * 16).astype(np.int32)], 0, cv2.LINE_AA, shift=4)
    return mask


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` float32 fill around colour ``base`` (BGR): solid, stripes, gradient or noise."""
    kind = rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])
    if kind == 0:
        return np.broadcast_to(base.astype(np.float32), (h, w, 3))
    other = np.clip(base + rng.uniform(-110, 110, 3), 0, 255).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 3:
        cells = int(rng.integers(2, 7))
        grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        t = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:
        theta = rng.uniform(0, math.pi)
        proj = xx * math.cos(theta) + yy * math.sin(theta)
        if kind == 1:
            period = rng.uniform(4.0, max(5.0, max(h, w) / 3))
            t = (np.mod(proj, period) < period / 2).astype(np.float32)
        else:
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    return base.astype(np.float32) * (1 - t[..., None]) + other * t[..., None]


@dataclass
class _Placed:
    """A drawn shape: class, its bounds in image pixels and its pixel counts."""

    cls: int
    x0: int
    y0: int
    x1: int
    y1: int
    area: int  # mask pixels (>= 128) of the whole shape, inside the image or not
    visible: int  # mask pixels still visible in the image


def generate_image(seed: int, index: int, imgsz: int = IMGSZ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw image ``index`` of the dataset with ``seed``.

    Returns ``(image, classes, boxes)``: ``(imgsz, imgsz, 3)`` uint8 BGR, ``(n,)`` int64 class ids and
    ``(n, 4)`` float64 xyxy pixel boxes that tightly enclose each shape's visible pixels.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    img = random_background(rng, imgsz).astype(np.float32)
    owner = np.zeros((imgsz, imgsz), np.int16)  # 1-based index of the shape that owns each pixel
    placed: list[_Placed] = []
    n_obj = 0 if rng.random() < _EMPTY_PROB else int(rng.integers(1, _MAX_OBJECTS + 1))
    min_size = max(6.0, _MIN_FRAC * imgsz)
    for _ in range(n_obj):
        cls = int(rng.integers(len(CLASS_NAMES)))
        size = math.exp(rng.uniform(math.log(min_size), math.log(_MAX_FRAC * imgsz)))
        mask = _shape_mask(cls, size, rng)
        for _attempt in range(12):
            ok = _try_place(rng, img, owner, placed, cls, mask, imgsz)
            if ok:
                break
    if rng.random() < 0.3:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0)), np.float32)
    if rng.random() < 0.3:
        img += rng.normal(0.0, rng.uniform(2.0, 7.0), img.shape).astype(np.float32)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    boxes, classes = [], []
    for k, p in enumerate(placed, start=1):
        ys, xs = np.nonzero(owner[p.y0 : p.y1, p.x0 : p.x1] == k)
        if ys.size == 0:
            continue
        boxes.append([p.x0 + xs.min(), p.y0 + ys.min(), p.x0 + xs.max() + 1, p.y0 + ys.max() + 1])
        classes.append(p.cls)
    return image, np.asarray(classes, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def _try_place(
    rng: np.random.Generator,
    img: np.ndarray,
    owner: np.ndarray,
    placed: list[_Placed],
    cls: int,
    mask: np.ndarray,
    imgsz: int,
) -> bool:
    """Try one random position for ``mask``; draw it into ``img``/``owner`` and return True if it fits."""
    mh, mw = mask.shape
    solid = mask >= 128
    area = int(solid.sum())
    if area == 0:
        return False
    ox = int(rng.integers(-mw // 3, imgsz - 2 * mw // 3 + 1))
    oy = int(rng.integers(-mh // 3, imgsz - 2 * mh // 3 + 1))
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + mw, imgsz), min(oy + mh, imgsz)
    if x1 <= x0 or y1 <= y0:
        return False
    local = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
    m_in = solid[local]
    inside = int(m_in.sum())
    if inside < _MIN_INSIDE * area:
        return False
    region = owner[y0:y1, x0:x1]
    hidden = np.bincount(region[m_in], minlength=len(placed) + 1)
    for k in np.nonzero(hidden[1:])[0]:
        p = placed[k]
        if p.visible - hidden[k + 1] < _MIN_OWN_VISIBLE * p.area:
            return False

    # colour with enough contrast to the background under the shape
    bg = img[y0:y1, x0:x1][m_in].mean(0)
    base = rng.uniform(0, 255, 3)
    for _ in range(4):
        if np.abs(base - bg).sum() >= 90:
            break
        base = rng.uniform(0, 255, 3)
    else:
        base = np.where(bg > 127, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3))
    tex = _texture(rng, y1 - y0, x1 - x0, base)
    alpha = mask[local].astype(np.float32)[..., None] * (1.0 / 255.0)
    roi = img[y0:y1, x0:x1]
    roi *= 1.0 - alpha
    roi += alpha * tex

    for k in np.nonzero(hidden[1:])[0]:
        placed[k].visible -= int(hidden[k + 1])
    region[m_in] = len(placed) + 1
    placed.append(_Placed(cls, x0, y0, x1, y1, area, inside))
    return True


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------


def _yolo_lines(classes: np.ndarray, boxes: np.ndarray, imgsz: int) -> str:
    """YOLO label text: one ``class cx cy w h`` line per box, normalised by ``imgsz``."""
    lines = []
    for c, (x0, y0, x1, y1) in zip(classes.tolist(), boxes.tolist(), strict=True):
        cx, cy, w, h = (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz, (x1 - x0) / imgsz, (y1 - y0) / imgsz
        lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def _work(job: tuple[int, int, int, str, str]) -> int:
    """Draw and write one image with its label file; returns its number of objects."""
    seed, index, imgsz, image_path, label_path = job
    image, classes, boxes = generate_image(seed, index, imgsz)
    if not cv2.imwrite(image_path, image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
        raise OSError(f"could not write {image_path}")
    Path(label_path).write_text(_yolo_lines(classes, boxes, imgsz))
    return len(classes)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _split_counts(images: int, splits: Sequence[float]) -> list[int]:
    if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {splits}")
    total = float(sum(splits))
    n_train = round(images * splits[0] / total)
    n_val = min(images - n_train, round(images * splits[1] / total))
    return [n_train, n_val, images - n_train - n_val]


def generate_dataset(
    out_dir: str | os.PathLike[str],
    images: int = 2000,
    seed: int = 0,
    imgsz: int = IMGSZ,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate the shapes dataset in YOLO format under ``out_dir`` and return the path of ``data.yaml``.

    Images are numbered ``0 .. images-1`` (train first, then val, then test; ``splits`` are the three
    fractions). The same ``seed`` and ``imgsz`` always give the same bytes, for any ``workers``
    (default: all CPU cores; 1 draws in this process).
    """
    if images < 0 or imgsz < 32:
        raise ValueError(f"need images >= 0 and imgsz >= 32, got images={images}, imgsz={imgsz}")
    out = Path(out_dir).resolve()
    jobs: list[tuple[int, int, int, str, str]] = []
    start = 0
    for split, count in zip(SPLITS, _split_counts(images, splits), strict=True):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(start, start + count):
            name = f"{index:06d}"
            jobs.append(
                (seed, index, imgsz, str(out / "images" / split / f"{name}.jpg"),
                 str(out / "labels" / split / f"{name}.txt"))
            )  # fmt: skip
        start += count

    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    bar = _progress_bar(len(jobs), "shapes dataset", enabled=progress)
    if workers == 1:
        for job in jobs:
            _work(job)
            bar.update(1)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_work, jobs, chunksize=8):
                bar.update(1)
    bar.close()

    data = {
        "path": str(out),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "nc": len(CLASS_NAMES),
        "names": dict(enumerate(CLASS_NAMES)),
        "generator": {"name": "cvdeploy.zoo.dataset", "seed": int(seed), "images": int(images),
                      "imgsz": int(imgsz)},
    }  # fmt: skip
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return yaml_path


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img")


# ----------------------------------------------------------------------------------------------------
# reading and COCO export
# ----------------------------------------------------------------------------------------------------


def _load_yaml(data_yaml: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    path = Path(data_yaml)
    data = yaml.safe_load(path.read_text())
    root = Path(data.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    return root, data


def list_split(data_yaml: str | os.PathLike[str], split: str) -> list[tuple[Path, Path]]:
    """``(image, label)`` path pairs of one split of a YOLO dataset, sorted by file name.

    The label path follows the Ultralytics rule (``/images/`` replaced by ``/labels/``, ``.txt``
    suffix); it may not exist, which means "no objects".
    """
    root, data = _load_yaml(data_yaml)
    if split not in data:
        raise KeyError(f"split {split!r} not in {data_yaml}")
    img_dir = root / data[split]
    pairs = []
    for img in sorted(img_dir.iterdir()):
        if img.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp"):
            continue
        parts = list(img.parts)
        idx = len(parts) - 1 - parts[::-1].index("images")
        parts[idx] = "labels"
        pairs.append((img, Path(*parts).with_suffix(".txt")))
    return pairs


def read_labels(label_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a YOLO label file: ``(n,)`` int64 class ids and ``(n, 4)`` float64 normalised cxcywh."""
    path = Path(label_path)
    if not path.is_file():
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float64)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float64)
    arr = np.asarray([r[:5] for r in rows], np.float64)
    return arr[:, 0].astype(np.int64), arr[:, 1:5].copy()


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header when Pillow is installed."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except ImportError:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise OSError(f"cannot read image {path}") from None
        return int(img.shape[1]), int(img.shape[0])


def to_coco(data_yaml: str | os.PathLike[str], split: str = "val") -> dict[str, Any]:
    """COCO detection json (as a dict) of one split of a YOLO dataset.

    Image ids are ``1..n`` in file-name order, ``file_name`` is relative to the split's image folder,
    ``category_id`` is the YOLO class id **+ 1** (COCO reserves 0), and ``bbox`` is ``[x, y, w, h]``
    in pixels.
    """
    _, data = _load_yaml(data_yaml)
    names = data.get("names", {})
    if isinstance(names, list):
        names = dict(enumerate(names))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (img, label) in enumerate(list_split(data_yaml, split), start=1):
        width, height = _image_size(img)
        images.append({"id": image_id, "file_name": img.name, "width": width, "height": height})
        classes, cxcywh = read_labels(label)
        for c, (cx, cy, w, h) in zip(classes.tolist(), cxcywh.tolist(), strict=True):
            bw, bh = w * width, h * height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c) + 1,
                    "bbox": [cx * width - bw / 2, cy * height - bh / 2, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": int(k) + 1, "name": str(v), "supercategory": "shape"} for k, v in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(
    data_yaml: str | os.PathLike[str], split: str = "val", out_path: str | os.PathLike[str] | None = None
) -> Path:
    """Write :func:`to_coco` of ``split`` to ``out_path`` (default ``<root>/annotations/<split>.json``)."""
    root, _ = _load_yaml(data_yaml)
    path = Path(out_path) if out_path is not None else root / "annotations" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_coco(data_yaml, split)))
    return path


def iter_images(
    data_yaml: str | os.PathLike[str], split: str
) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    """Yield ``(image path, (n,) class ids, (n, 4) normalised cxcywh)`` for every image of ``split``."""
    for img, label in list_split(data_yaml, split):
        yield (img, *read_labels(label))


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m cvdeploy.zoo.dataset -o DIR --images N --seed S``."""
    ap = argparse.ArgumentParser(prog="python -m cvdeploy.zoo.dataset", description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True, help="output folder")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imgsz", type=int, default=IMGSZ)
    ap.add_argument(
        "--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST")
    )
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--coco", action="store_true", help="also write annotations/<split>.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    yaml_path = generate_dataset(
        args.out, args.images, args.seed, args.imgsz, args.splits, True, args.workers
    )
    if args.coco:
        for split in SPLITS:
            write_coco(yaml_path, split)
    print(f"{yaml_path}  ({args.images} images in {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
