"""What the user hands ``doctor``, read and matched to the images by file name (stem).

- images: a folder (searched recursively) or files; two images with the same stem are refused,
  since observations, tensors and labels could not be matched to them.
- observations (``--observed``): ``cvdeploy predict --json`` output, or a folder of Ultralytics
  ``save_txt`` files (``class cx cy w h [conf]``, normalised; an image without a file found nothing).
- tensors (``--inputs``): one ``.npy`` per image stem, NCHW/CHW (or NHWC/HWC for NHWC contracts).
- labels (``--labels``): a YOLO ``data.yaml`` (every split it lists) or a COCO json.

Every mistake is an :class:`~cvdeploy.errors.InputError` with one line saying what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.contract import Contract
from cvdeploy.errors import InputError
from cvdeploy.images import find_images
from cvdeploy.results import Detections


@dataclass(frozen=True)
class ImageSet:
    """The images the deployment saw: paths and their stems (unique)."""

    paths: list[Path]
    source: str

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)


def image_set(sources: str | Path | Sequence[str | Path]) -> ImageSet:
    """Find the images under ``sources``; refuse none, or two with the same stem."""
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    paths = find_images(items)
    where = ", ".join(str(s) for s in items)
    if not paths:
        raise InputError(f"no images found in {where} (looked for .jpg .png .bmp .webp .tif)")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise InputError(
                f"two images share the name {p.stem!r} ({seen[p.stem]} and {p}); doctor matches observations, "
                "tensors and labels by file name, so give it images with unique names"
            )
        seen[p.stem] = p
    return ImageSet(paths, where)


def _unknown(what: str, names: list[str], images: ImageSet) -> InputError:
    shown = ", ".join(repr(n) for n in names[:3]) + (" ..." if len(names) > 3 else "")
    return InputError(
        f"{what} name(s) {shown} match none of the {len(images)} images in {images.source}; "
        "they are matched by file name — pass the images the deployment saw"
    )


# ---- observations ------------------------------------------------------------------------------


def read_observed(path: str | Path, images: ImageSet, contract: Contract, sizes: dict[str, tuple[int, int]]) -> dict[str, Detections]:  # fmt: skip
    """What the deployment returned, per image stem (boxes in original-image pixels).

    ``sizes``: ``stem → (width, height)`` of each image, to turn normalised Ultralytics boxes into pixels.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"--observed: no such file or folder: {p}")
    if p.is_dir():
        return _read_txt_folder(p, images, contract, sizes)
    return _read_predict_json(p, images, contract)


def _read_predict_json(path: Path, images: ImageSet, contract: Contract) -> dict[str, Detections]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--observed {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, list) or not all(isinstance(d, dict) and "image" in d for d in doc):
        raise InputError(
            f"--observed {path}: expected 'cvdeploy predict --json' output, a list of "
            '{"image": ..., "detections": [...]} objects'
        )
    wanted = set(images.stems)
    out: dict[str, Detections] = {}
    unknown: list[str] = []
    for entry in doc:
        stem = Path(str(entry["image"])).stem
        if stem not in wanted:
            unknown.append(str(entry["image"]))
            continue
        if stem in out:
            raise InputError(f"--observed {path}: image {stem!r} appears twice")
        out[stem] = _detections(entry.get("detections"), contract, f"--observed {path}, image {stem!r}")
    if unknown:
        raise _unknown(f"--observed {path}: image", unknown, images)
    missing = [s for s in images.stems if s not in out]
    if missing:
        raise InputError(
            f"--observed {path} has results for {len(out)} of the {len(images)} images (none for "
            f"{', '.join(repr(m) for m in missing[:3])}{' ...' if len(missing) > 3 else ''}); give results for "
            "every image, or only the images that have results"
        )
    return out


def _detections(items: Any, contract: Contract, where: str) -> Detections:
    if items is None:
        items = []
    if not isinstance(items, list):
        raise InputError(f"{where}: 'detections' must be a list")
    names = {n: k for k, n in enumerate(contract.classes)}
    boxes, confs, classes = [], [], []
    for d in items:
        try:
            box = [float(v) for v in d["box"]]
            conf = float(d.get("confidence", 1.0))
            if "class_id" in d:
                cls = int(d["class_id"])
            else:
                cls = names[str(d["class_name"])]
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f'{where}: each detection needs "box": [x1, y1, x2, y2], "confidence" and "class_id" '
                f"(or a class_name of the model), got {str(d)[:80]}"
            ) from None
        if len(box) != 4:
            raise InputError(f"{where}: a box needs 4 numbers x1, y1, x2, y2, got {len(box)}")
        boxes.append(box)
        confs.append(conf)
        classes.append(cls)
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(confs, np.float32),
        np.asarray(classes, np.int64),
        list(contract.classes),
    )


def _read_txt_folder(
    folder: Path, images: ImageSet, contract: Contract, sizes: dict[str, tuple[int, int]]
) -> dict[str, Detections]:
    files = sorted(folder.rglob("*.txt"))
    if not files:
        raise InputError(
            f"--observed {folder}: no .txt files (expected Ultralytics save_txt output, one per image)"
        )
    wanted = set(images.stems)
    unknown = [f.name for f in files if f.stem not in wanted]
    if unknown:
        raise _unknown(f"--observed {folder}: file", unknown, images)
    out = {s: Detections.empty(list(contract.classes)) for s in images.stems}
    for f in files:
        w, h = sizes[f.stem]
        rows = []
        for lineno, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.split():
                continue
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                values = []
            if len(values) not in (5, 6) or values[0] != int(values[0]):
                raise InputError(
                    f"--observed {f} line {lineno}: expected 'class cx cy w h [conf]' (normalised), got "
                    f"{line.strip()[:60]!r}"
                )
            rows.append(values if len(values) == 6 else [*values, 1.0])
        if not rows:
            continue
        a = np.asarray(rows, np.float64)
        if a[:, 1:5].min() < -1e-3 or a[:, 1:5].max() > 1 + 1e-3:
            raise InputError(f"--observed {f}: coordinates must be normalised to 0-1 (Ultralytics save_txt)")
        cx, cy, bw, bh = a[:, 1] * w, a[:, 2] * h, a[:, 3] * w, a[:, 4] * h
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        out[f.stem] = Detections(
            xyxy.astype(np.float32),
            a[:, 5].astype(np.float32),
            a[:, 0].astype(np.int64),
            list(contract.classes),
        )
    return out


def has_confidence(observed: dict[str, Detections]) -> bool:
    """Whether the observations carry real confidences (Ultralytics txt without ``save_conf`` does not)."""
    confs = [d.confidence for d in observed.values() if len(d)]
    return bool(confs) and not all(np.all(c == 1.0) for c in confs)


# ---- tensors -------------------------------------------------------------------------------------


def read_tensors(folder: str | Path, images: ImageSet, contract: Contract) -> dict[str, np.ndarray]:
    """The tensors the deployment fed its model, per stem, as ``(3, H, W)`` (NCHW contracts) float32."""
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"--inputs: {p} is not a folder of .npy files (one per image stem)")
    files = sorted(p.rglob("*.npy"))
    if not files:
        raise InputError(f"--inputs {p}: no .npy files (one tensor per image, named by the image's stem)")
    wanted = set(images.stems)
    unknown = [f.name for f in files if f.stem not in wanted]
    if unknown:
        raise _unknown(f"--inputs {p}: file", unknown, images)
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--inputs {f}: not a readable .npy array ({exc})") from None
        out[f.stem] = _chw(arr, contract, f)
    missing = [s for s in images.stems if s not in out]
    if missing:
        raise InputError(
            f"--inputs {p} has tensors for {len(out)} of the {len(images)} images (none for "
            f"{', '.join(repr(m) for m in missing[:3])}{' ...' if len(missing) > 3 else ''})"
        )
    return out


def _chw(arr: np.ndarray, contract: Contract, f: Path) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    nhwc = contract.input.layout == "NHWC"
    if arr.ndim != 3 or (arr.shape[-1] if nhwc else arr.shape[0]) != 3:
        want = "(1, H, W, 3) or (H, W, 3)" if nhwc else "(1, 3, H, W) or (3, H, W)"
        raise InputError(f"--inputs {f}: shape {arr.shape} is not one image tensor {want}")
    if not (np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.uint8):
        raise InputError(f"--inputs {f}: dtype {arr.dtype} is not a float or uint8 image tensor")
    if nhwc:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


# ---- labels --------------------------------------------------------------------------------------


@dataclass
class Labels:
    """Ground truth for some of the images: ``stem → ((n, 4) xyxy pixels, (n,) class ids)``, ids in
    the model's numbering where the dataset's names map to the model's by name."""

    source: Path
    names: list[str]
    boxes: dict[str, tuple[np.ndarray, np.ndarray]]


def read_labels(path: str | Path, images: ImageSet, contract: Contract, sizes: dict[str, tuple[int, int]]) -> Labels:  # fmt: skip
    """Ground truth of the images from a YOLO data.yaml (all its splits) or a COCO json, matched by stem."""
    from cvdeploy.evaluate.validate import class_mapping

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--labels: no such file: {p} (give a YOLO data.yaml or a COCO json)")
    if p.suffix.lower() == ".json":
        names, found = _coco_labels(p, set(images.stems))
    elif p.suffix.lower() in (".yaml", ".yml"):
        names, found = _yolo_labels(p, sizes)
    else:
        raise InputError(f"--labels {p}: expected a YOLO data.yaml or a COCO .json")
    found = {s: v for s, v in found.items() if s in sizes}
    if not found:
        raise InputError(
            f"--labels {p}: none of its images has the name of one of the {len(images)} images in "
            f"{images.source}; labels are matched by file name"
        )
    lookup, _ = class_mapping(names, list(contract.classes))
    if lookup is not None:
        found = {s: (b, lookup[c]) for s, (b, c) in found.items()}
    return Labels(p, names, found)


def _yolo_labels(path: Path, sizes: dict[str, tuple[int, int]]) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:  # fmt: skip
    import yaml

    from cvdeploy.evaluate.datasets import SPLITS, label_path, parse_yolo_labels, yolo_split_images

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"--labels {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not any(data.get(s) for s in SPLITS):
        raise InputError(f"--labels {path}: not a YOLO data.yaml (needs 'names' and a train/val/test split)")
    names: list[str] = []
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        if not data.get(split):
            continue
        try:
            names, files = yolo_split_images(path, split)
        except InputError as exc:
            if "has no images" in str(exc):  # an empty split (e.g. no train images in a test set)
                continue
            raise
        for img in files:
            if img.stem in sizes and img.stem not in found:
                w, h = sizes[img.stem]
                found[img.stem] = parse_yolo_labels(label_path(img), w, h, len(names))
    return names, found


def _coco_labels(path: Path, stems: set[str]) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--labels {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or "categories" not in doc:
        raise InputError(
            f"--labels {path}: not a COCO detection json (needs images, annotations, categories)"
        )
    cats = sorted(doc["categories"], key=lambda c: int(c["id"]))
    index = {int(c["id"]): k for k, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    by_id = {int(im["id"]): Path(str(im["file_name"])).stem for im in doc["images"]}
    rows: dict[str, tuple[list[list[float]], list[int]]] = {s: ([], []) for s in by_id.values() if s in stems}
    for ann in doc.get("annotations") or []:
        stem = by_id.get(int(ann["image_id"]))
        if stem not in rows or ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w > 0 and h > 0 and int(ann["category_id"]) in index:
            rows[stem][0].append([x, y, x + w, y + h])
            rows[stem][1].append(index[int(ann["category_id"])])
    return names, {
        s: (np.asarray(b, np.float64).reshape(-1, 4), np.asarray(c, np.int64)) for s, (b, c) in rows.items()
    }
