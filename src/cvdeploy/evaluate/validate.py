"""Accuracy of one artifact of a bundle on a labelled dataset: COCO mAP for detectors, top-1/top-5 for classifiers.

Images go through the bundle's one pipeline (the production preprocessing and decoding), with the
standard evaluation thresholds (conf 0.001, max_det 300) set on a copy of the contract. Segmentation,
pose and oriented-box models are scored on their boxes and on what they predict besides: mask mAP,
keypoint (OKS) mAP, rotated-box mAP. Results are fractions (0–1) as COCO tools give them; the CLI
shows points (0–100).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.contract import BOX_TASKS
from cvdeploy.errors import InputError
from cvdeploy.evaluate.datasets import (
    ClassificationDataset,
    DetectionDataset,
    open_detection_dataset,
    read_classify_folder,
)
from cvdeploy.evaluate.metrics import coco_map, task_map, topk_accuracy
from cvdeploy.evaluate.runner import (
    EVAL_CONF,
    EVAL_MAX_DET,
    check_batch,
    chunks,
    eval_pipeline,
    open_bundle,
    progress_bar,
    require_task,
    save_bundle,
)
from cvdeploy.pipeline import Pipeline
from cvdeploy.results import Classification, Detections

__all__ = ["class_mapping", "validate", "write_metrics"]

log = logging.getLogger(__name__)


def class_mapping(dataset_names: list[str], model_names: list[str]) -> tuple[np.ndarray | None, str | None]:
    """How dataset class ids map to model class ids, and a warning when only by position.

    Returns ``(lookup, warning)``: ``lookup[k]`` is the model id of dataset class ``k`` (None: the
    same id). Names that match exactly (in any order, or a subset) map by name; otherwise ids
    are compared as they are, which is right for a model trained on this dataset under other names.
    """
    if not model_names or dataset_names == model_names[: len(dataset_names)]:
        return None, None
    index = {n: k for k, n in enumerate(model_names)}
    if all(n in index for n in dataset_names):
        return np.asarray([index[n] for n in dataset_names], np.int64), None
    missing = [n for n in dataset_names if n not in index][:3]
    return None, (
        f"the dataset's class names ({', '.join(missing)} ...) are not the model's; comparing class ids as they are"
    )


@dataclass(frozen=True)
class _Run:
    """How to run the pipeline: which artifact, batch size, threads, device, progress bar."""

    artifact: str | None
    batch: int
    threads: int | None
    device: str
    progress: bool


def validate(
    bundle: Bundle | str | Path,
    data: str | os.PathLike[str],
    artifact: str | None = None,
    split: str = "val",
    images: str | os.PathLike[str] | None = None,
    batch: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    conf: float = EVAL_CONF,
    max_det: int = EVAL_MAX_DET,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``artifact`` (default: the bundle's default) of ``bundle`` on the ``split`` of ``data``.

    Detectors: ``data`` is a ``data.yaml``, a COCO json (with ``images``, the image folder, when it
    cannot be guessed) or a folder holding one; the result has ``mAP50-95``, ``mAP50`` and
    ``per_class`` (class name → ``{"mAP50-95", "mAP50", "instances"}``). Classifiers: ``data`` is
    a folder ``root/<class_name>/*.jpg``; the result has ``top1``, ``top5`` and ``per_class``
    (class name → ``{"top1", "images"}``). Both carry ``bundle``, ``artifact``, ``task``,
    ``dataset``, ``split``, ``images``, ``seconds`` and ``warnings``. ``limit`` scores only the
    first images.
    """
    b = open_bundle(bundle)
    task = require_task(b, "val", ("classify", *BOX_TASKS))
    check_batch(batch)
    b.artifact(artifact)  # an unknown name fails before any work
    t0 = time.perf_counter()
    run = _Run(artifact, batch, threads, device, progress)
    if task == "classify":
        result = _validate_classifier(b, read_classify_folder(data, b.contract.classes, split), limit, run)
    else:
        dset = open_detection_dataset(data, images, split, task, b.contract.output.kpt_shape).head(limit)
        result = _validate_detector(b, dset, conf, max_det, run)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _validate_classifier(
    b: Bundle, ds: ClassificationDataset, limit: int | None, run: _Run
) -> dict[str, Any]:
    items = ds.items[:limit] if limit is not None else ds.items
    pipe = eval_pipeline(b, run.artifact, run.threads, run.device)
    name = pipe.artifact.name if pipe.artifact else str(run.artifact)
    probs: list[np.ndarray] = []
    with progress_bar(len(items), f"val {name}", run.progress) as advance:
        for chunk in chunks(items, run.batch):
            for res in pipe.predict([it.image for it in chunk], batch_size=len(chunk)):
                assert isinstance(res, Classification)
                probs.append(res.probs)
            advance(len(chunk))
    labels = np.asarray([it.class_id for it in items], np.int64)
    scores = np.stack(probs)
    top1 = np.argmax(scores, axis=1) == labels
    per_class = {
        ds.class_names[k]: {"top1": float(top1[labels == k].mean()), "images": int((labels == k).sum())}
        for k in sorted(set(labels.tolist()))
    }
    return {"bundle": b.name, "artifact": name, "task": "classify", "dataset": str(ds.source), "split": ds.split,
            "images": len(items), **topk_accuracy(labels, scores), "per_class": per_class,
            "warnings": []}  # fmt: skip


def _validate_detector(
    b: Bundle, dset: DetectionDataset, conf: float, max_det: int, run: _Run
) -> dict[str, Any]:
    if dset.instances == 0:
        where = f"the {dset.split!r} split" if dset.split else "it"
        raise InputError(
            f"{dset.source}: no labelled objects in {len(dset)} images of {where} — mAP is undefined; check that "
            "the labels/ folder sits next to images/ (YOLO) or that the json has annotations"
        )
    lookup, warning = class_mapping(dset.class_names, b.contract.classes)
    if warning:
        log.warning(warning)
    pipe = eval_pipeline(b, run.artifact, run.threads, run.device, conf=conf, max_det=max_det)
    name = pipe.artifact.name if pipe.artifact else str(run.artifact)
    preds = _detect(pipe, dset, run.batch, run.progress, f"val {name}")
    gt = [(it.boxes, it.class_ids if lookup is None else lookup[it.class_ids]) for it in dset.items]
    nc = max(b.contract.num_classes, len(dset.class_names) if lookup is None else 0)
    task = b.contract.task
    names = b.contract.classes or dset.class_names
    extra: dict[str, Any] = {}
    if task in ("segment", "pose", "obb"):
        items = [it._replace(class_ids=g[1]) for it, g in zip(dset.items, gt, strict=True)]
        t = task_map(task, items, dset.sizes, preds, nc)
        key = {"segment": "mask", "pose": "pose", "obb": "rbox"}[task]
        extra = {f"{key}_mAP50-95": t["mAP50-95"], f"{key}_mAP50": t["mAP50"],
                 f"{key}_per_class": {(names[k] if k < len(names) else str(k)): v for k, v in t["per_class"].items()}}  # fmt: skip
    scores = coco_map(gt, preds, num_classes=nc)
    per_class = {(names[k] if k < len(names) else str(k)): v for k, v in scores["per_class"].items()}
    return {
        **extra,
        "bundle": b.name,
        "artifact": name,
        "task": task,
        "dataset": str(dset.source),
        "format": dset.format,
        "split": dset.split,
        "images": len(dset),
        "instances": scores["instances"],
        "mAP50-95": scores["mAP50-95"],
        "mAP50": scores["mAP50"],
        "per_class": per_class,
        "conf": conf,
        "warnings": [warning] if warning else [],
    }


def _detect(
    pipe: Pipeline, dset: DetectionDataset, batch: int, progress: bool, what: str
) -> list[Detections]:
    """Run every image of ``dset`` through ``pipe``; detections in original-image pixels."""
    out: list[Detections] = []
    with progress_bar(len(dset), what, progress) as advance:
        for chunk in chunks(dset.items, batch):
            for res in pipe.predict([it.image for it in chunk], batch_size=len(chunk)):
                assert isinstance(res, Detections)
                out.append(res)
            advance(len(chunk))
    return out


def write_metrics(bundle: Bundle, result: dict[str, Any]) -> Artifact:
    """Record a :func:`validate` result in the artifact's ``metrics`` and save the manifest.

    Detectors get ``dataset``, ``split``, ``mAP50-95``, ``mAP50``, ``images``; classifiers ``top1``
    and ``top5`` instead of the mAPs. Other metrics already recorded (latency, ...) are kept.
    """
    art = bundle.artifact(result["artifact"])
    keys: tuple[str, ...] = ("mAP50-95", "mAP50") if "mAP50" in result else ("top1", "top5")
    keys += tuple(k for k in result if k.endswith(("_mAP50-95", "_mAP50")))
    entry = {"dataset": result["dataset"], "split": result["split"], **{k: round(float(result[k]), 5) for k in keys},
             "images": result["images"]}  # fmt: skip
    art.metrics.update(entry)
    save_bundle(bundle)
    return art
