"""Azure ML scoring script for a cvdeploy bundle (written by ``cvdeploy package --target azureml``).

Azure ML's inference server imports this file, calls ``init()`` once, then ``run(raw_data)`` with each
request body. The registered model (the bundle folder) is under ``AZUREML_MODEL_DIR``.

Request:  ``{"image": BASE64}`` or ``{"instances": [{"b64": BASE64}, ...], "parameters": {"conf": 0.25}}``
Answer:   ``{"predictions": [{"detections": [...]}, ...]}`` (``classification`` / ``outputs`` for other tasks);
          a malformed request is answered ``{"error": "..."}`` with status 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

_pipeline: Any = None


def _bundle_dir() -> Path:
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    found = sorted(root.rglob("cvdeploy.yaml"), key=lambda p: len(p.parts))
    if not found:
        raise RuntimeError(f"no cvdeploy bundle (cvdeploy.yaml) under AZUREML_MODEL_DIR={root}")
    return found[0].parent


def init() -> None:
    """Load the bundle once: its default artifact through cvdeploy's one pipeline."""
    global _pipeline
    from cvdeploy.pipeline import Pipeline

    _pipeline = Pipeline.from_bundle(_bundle_dir())


def _bad(message: str) -> Any:
    try:  # the Azure ML server turns an AMLResponse into a status code; elsewhere a plain dict is returned
        from azureml.contrib.services.aml_response import AMLResponse

        return AMLResponse(json.dumps({"error": message}), 400, json_str=True)
    except ImportError:
        return {"error": message}


def run(raw_data: str | bytes | dict[str, Any]) -> Any:
    from cvdeploy.errors import CvdeployError
    from cvdeploy.images import decode_image
    from cvdeploy.results import Classification, Detections

    try:
        doc = json.loads(raw_data) if isinstance(raw_data, str | bytes) else raw_data
    except json.JSONDecodeError as exc:
        return _bad(f"the body is not JSON ({exc.msg})")
    if not isinstance(doc, dict):
        return _bad('send {"image": BASE64} or {"instances": [{"b64": BASE64}, ...]}')
    instances = doc.get("instances", [{"b64": doc.get("image")}])
    if not isinstance(instances, list) or not instances:
        return _bad('"instances" must be a non-empty list')
    params = doc.get("parameters") or {}
    images = []
    for i, inst in enumerate(instances):
        data = inst.get("b64") if isinstance(inst, dict) else None
        if not isinstance(data, str):
            return _bad(f'instance {i}: expected {{"b64": BASE64}} (or "image": BASE64 at the top level)')
        try:
            images.append(decode_image(base64.b64decode(data, validate=True), f"instance {i}"))
        except (binascii.Error, ValueError):
            return _bad(f"instance {i}: not valid base64")
        except CvdeployError as exc:
            return _bad(str(exc))
    spec = _pipeline.contract.output
    saved = spec.conf
    try:
        if "conf" in params:
            spec.conf = float(params["conf"])
        results = _pipeline.predict(images)
    finally:
        spec.conf = saved
    out = []
    for r in results:
        if isinstance(r, Detections):
            out.append({"detections": r.to_list()})
        elif isinstance(r, Classification):
            out.append({"classification": r.to_list()})
        else:
            out.append({"outputs": r.to_list()})
    return {"predictions": out}
