"""The JSON documents that answer an image prediction, shared by the image API and the cloud contracts."""

from __future__ import annotations

from typing import Any

import numpy as np

from cvdeploy.results import Classification, Detections, RawOutput
from cvdeploy.serve.protocols.http import json_safe
from cvdeploy.serve.service import ImagePrediction


def image_document(pred: ImagePrediction, model_fields: bool = True) -> dict[str, Any]:
    """Model, image size and the task's results in original-image pixels, with timings.

    Detections carry ``box``, ``confidence``, ``class_id``, ``class_name`` and, by task, ``polygon``
    (segment: the mask's outline; obb: the rotated box's corners), ``keypoints`` (pose) and ``rbox``
    (obb: ``[cx, cy, w, h, angle_radians]``). Raw models give their ``outputs`` and the letterbox
    ``geometry`` (``model = original · scale + pad``) that maps output coordinates back to the image.

    Non-finite values (a broken model) are sent as null, with ``warnings`` saying how many.
    """
    mv = pred.model
    doc: dict[str, Any] = {}
    if model_fields:
        doc.update({"model": mv.name, "version": str(mv.version), "artifact": mv.artifact.name,
                    "task": mv.contract.task})  # fmt: skip
    doc["image"] = {"width": pred.info.width, "height": pred.info.height, "format": pred.info.format}
    res = pred.result
    if isinstance(res, Detections):
        doc["detections"] = res.to_list()
    elif isinstance(res, Classification):
        doc["classification"] = res.to_list()
    elif isinstance(res, RawOutput):
        doc["outputs"] = res.to_list()
        doc["geometry"] = res.geometry_dict()  # how original pixels map into the model input
    doc["timings_ms"] = {k: round(v * 1000, 3) for k, v in pred.timings.items()}
    if pred.non_finite:
        doc, _ = json_safe(doc)
        doc["warnings"] = [f"the model produced {pred.non_finite} NaN/Inf values; they are sent as null"]
    return doc


def tensors_document(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """``{output name: nested list}``; non-finite values as null with a ``warnings`` entry."""
    doc: dict[str, Any] = {name: arr.tolist() for name, arr in outputs.items()}
    safe, bad = json_safe(doc)
    if bad:
        safe["warnings"] = [f"the model produced {bad} NaN/Inf values; they are sent as null"]
    return safe
