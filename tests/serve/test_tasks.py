"""Segment, pose and obb models through the image API: their own routes, the same results as in-process.

Each bundle is a planted YOLOv8n of the task exported by Ultralytics (``task_bundles``); the server
must answer exactly what the one pipeline gives in-process — boxes, classes and the task's own fields
(``polygon`` of each mask, ``keypoints``, ``rbox`` with its corner ``polygon``) in original pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvdeploy.bundle import Bundle
from cvdeploy.images import decode_image
from cvdeploy.pipeline import Pipeline
from cvdeploy.results import Detections
from cvdeploy.serve.app import create_app

from .conftest import run, serving

pytestmark = pytest.mark.ultralytics
FIELDS = {"segment": ["polygon"], "pose": ["keypoints"], "obb": ["rbox", "polygon"]}
KEEP = 6  # detections compared per image


def _threshold(scores: np.ndarray) -> float:
    """A confidence between the KEEP-th and the next score, in the widest gap nearby (no detection on it)."""
    s = np.sort(scores)[::-1]
    ks = np.arange(KEEP - 2, min(len(s), KEEP + 8))
    k = int(ks[np.argmax(s[ks - 1] - s[ks])])
    assert s[k - 1] - s[k] > 1e-4
    return float((s[k - 1] + s[k]) / 2)


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_the_task_route_answers_what_the_pipeline_gives_in_process(
    task: str, task_bundles: dict[str, Path], tiny_bundle_path: Path, photo_bytes: list[bytes]
) -> None:
    bundle = task_bundles[task]
    pipe = Pipeline.from_bundle(bundle)
    name = Bundle.load(bundle).name
    data = photo_bytes[1]
    pipe.contract.output.conf, pipe.contract.output.max_det = 0.01, KEEP + 10  # masks only for the best
    conf = _threshold(pipe.predict([decode_image(data)])[0].confidence)
    pipe.contract.output.conf, pipe.contract.output.max_det = conf, 300
    ref = pipe.predict([decode_image(data)])[0]
    assert isinstance(ref, Detections) and len(ref) >= KEEP - 2
    app = create_app([bundle, tiny_bundle_path])
    files = {"image": ("p.jpg", data, "image/jpeg")}

    async def body() -> dict[str, Any]:
        async with serving(app) as c:
            got = {route: await c.post(f"/v1/models/{name}/{route}", params={"conf": conf}, files=files)
                   for route in (task, "predict", "detect")}  # fmt: skip
            got["tiny"] = await c.post(f"/v1/models/tiny/{task}", files=files)
            got["models"] = await c.get("/v1/models")
            return got

    got = run(body())
    assert got[task].status_code == 200, got[task].text
    doc = got[task].json()
    assert doc["task"] == task and got["predict"].json()["detections"] == doc["detections"]
    dets, want = doc["detections"], ref.to_list()
    assert len(dets) == len(ref)
    np.testing.assert_allclose([d["box"] for d in dets], ref.xyxy, atol=0.01)
    assert [d["class_id"] for d in dets] == ref.class_id.tolist()
    for d, w in zip(dets, want, strict=True):
        for key in FIELDS[task]:
            assert key in d
            np.testing.assert_allclose(np.asarray(d[key], float), np.asarray(w[key], float), atol=0.011)
    h, w = decode_image(data).shape[:2]
    if task == "pose":  # keypoints in original pixels, with visibility
        kp = np.asarray([d["keypoints"] for d in dets])
        assert kp.shape[1:] == (17, 3) and (kp[..., 2] >= 0).all() and (kp[..., 2] <= 1).all()
    if task == "segment":  # each mask's outline lies on the image
        pts = np.concatenate([np.asarray(d["polygon"]) for d in dets])
        assert pts.shape[1] == 2 and pts[:, 0].max() <= w and pts[:, 1].max() <= h and pts.min() >= 0
    # a route names a task: the detect route refuses this model, this task's route refuses the detector
    assert (
        got["detect"].status_code == 400 and f"use /v1/models/{name}/{task}" in got["detect"].json()["error"]
    )
    assert got["tiny"].status_code == 400 and "use /v1/models/tiny/detect" in got["tiny"].json()["error"]
    listed = {m["name"]: m["task"] for m in got["models"].json()["models"]}
    assert listed[name] == task
