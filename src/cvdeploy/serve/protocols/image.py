"""The image API: an encoded image in, results in original-image pixels out, through the one pipeline.

    POST /v1/models/{name}[/versions/{v}]/detect     detections   (task detect)
    POST /v1/models/{name}[/versions/{v}]/classify   top classes  (task classify)
    POST /v1/models/{name}[/versions/{v}]/predict    whatever the model's task gives (raw tensors too)
    GET  /v1/models                                  the models and their serving versions

The image comes as the multipart file field ``image`` (``curl -F image=@street.jpg``) or as the
raw body (``Content-Type: image/jpeg``, ``image/png``, ``image/webp`` or
``application/octet-stream``). Optional ``conf``, ``iou`` and ``max_det`` come as query or form
fields. Flow: header check (format, pixel count) → decode + ``Pipeline.preprocess`` in a worker
thread → the model's batcher (``Pipeline.infer``) → ``Pipeline.decode`` in a worker thread.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.decode import Decoder
from cvdeploy.images import decode_image
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.results import Classification, Detections, RawOutput, Result
from cvdeploy.serve.config import LimitsConfig
from cvdeploy.serve.errors import BadRequest
from cvdeploy.serve.limits import ImageInfo, check_content_type, check_image, media_type
from cvdeploy.serve.protocols.common import authorize, json_response, server, version_param, watch_disconnect
from cvdeploy.serve.repository import ModelVersion

router = APIRouter()

TASKS = {"detect": "detect", "classify": "classify", "predict": None}
_OVERRIDES = {"conf": (float, 0.0, 1.0), "iou": (float, 0.0, 1.0), "max_det": (int, 1, 100_000)}


@dataclass
class ImagePrediction:
    result: Result
    info: ImageInfo
    timings: dict[str, float]


def parse_overrides(values: Mapping[str, Any]) -> dict[str, float | int]:
    """``conf``/``iou`` in [0, 1] and ``max_det`` ≥ 1 from query or form values; 400 when out of range."""
    out: dict[str, float | int] = {}
    for key, (kind, lo, hi) in _OVERRIDES.items():
        raw = values.get(key)
        if raw is None or raw == "":
            continue
        try:
            val = kind(raw)
        except (TypeError, ValueError):
            raise BadRequest(
                f"{key} must be a {'number' if kind is float else 'whole number'}, got {raw!r}"
            ) from None
        if not lo <= val <= hi or val != val:
            raise BadRequest(f"{key} must be between {lo} and {hi}, got {raw!r}")
        out[key] = val
    return out


def _preprocess(mv: ModelVersion, data: bytes) -> tuple[np.ndarray, list[Geometry]]:
    img = decode_image(data, source="image")
    return mv.pipeline.preprocess([img])


def _decode(mv: ModelVersion, outputs: list[np.ndarray], geoms: list[Geometry],
            overrides: Mapping[str, float | int]) -> Result:  # fmt: skip
    if not overrides:
        return mv.pipeline.decode(outputs, geoms)[0]
    contract = mv.contract.model_copy(deep=True)
    for key, value in overrides.items():
        setattr(contract.output, key, value)
    return Decoder(contract, mv.pipeline.decoder.output_names)(outputs, geoms)[0]


async def predict_image(request: Request, mv: ModelVersion, data: bytes, limits: LimitsConfig,
                        overrides: Mapping[str, float | int],
                        gone: asyncio.Future[Any] | None = None) -> ImagePrediction:  # fmt: skip
    """Header check, preprocess, batched inference, decode: one image through the one pipeline.

    ``gone`` completes when the client disconnects (default: watched here).
    """
    srv = server(request)
    info = check_image(data, limits)
    if len(mv.inputs) != 1:
        raise BadRequest(
            f"model {mv.name!r} takes {len(mv.inputs)} inputs; send tensors to the v2 infer endpoint"
        )
    clock = time.perf_counter
    t0 = clock()
    tensor, geoms = await srv.run_cpu(_preprocess, mv, data)
    t1 = clock()
    watcher = watch_disconnect(request) if gone is None else None
    try:
        batch = await mv.batcher.infer({mv.pipeline.input_name: tensor}, gone=gone or watcher)
    finally:
        if watcher is not None:
            watcher.cancel()
    t2 = clock()
    result = await srv.run_cpu(_decode, mv, batch.outputs, geoms, overrides)
    t3 = clock()
    srv.metrics.observe_stage(mv.name, "preprocess", t1 - t0)
    srv.metrics.observe_stage(mv.name, "postprocess", t3 - t2)
    timings = {
        "preprocess": t1 - t0,
        "queue": batch.queue_s,
        "inference": batch.inference_s,
        "postprocess": t3 - t2,
    }
    return ImagePrediction(result, info, timings)


def result_document(mv: ModelVersion, pred: ImagePrediction) -> dict[str, Any]:
    """The JSON answer: model, image size and the task's results in original-image pixels."""
    doc: dict[str, Any] = {
        "model": mv.name, "version": str(mv.version), "artifact": mv.artifact.name, "task": mv.contract.task,
        "image": {"width": pred.info.width, "height": pred.info.height, "format": pred.info.format},
    }  # fmt: skip
    res = pred.result
    if isinstance(res, Detections):
        doc["detections"] = res.to_list()
    elif isinstance(res, Classification):
        doc["classification"] = res.to_list()
    elif isinstance(res, RawOutput):
        doc["outputs"] = res.to_list()
    doc["timings_ms"] = {k: round(v * 1000, 3) for k, v in pred.timings.items()}
    return doc


async def read_image_request(request: Request, limits: LimitsConfig) -> tuple[bytes, dict[str, Any]]:
    """The image bytes (multipart field ``image`` or raw body) and the parameters sent with it."""
    params: dict[str, Any] = dict(request.query_params)
    mt = media_type(request.headers.get("content-type"))
    if mt == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except HTTPException as exc:  # the multipart parser's own errors
            raise BadRequest(f"malformed multipart body: {exc.detail}") from None
        image = form.get("image")
        for key in _OVERRIDES:
            value = form.get(key)
            if isinstance(value, str):
                params[key] = value
        if image is None:
            raise BadRequest("multipart body has no field 'image': send the file as -F image=@photo.jpg")
        if not isinstance(image, UploadFile):
            raise BadRequest("field 'image' must be a file upload, not text")
        data = await image.read()
        await form.close()
        return data, params
    check_content_type(request.headers.get("content-type"), limits.allowed_content_types)
    return await request.body(), params


async def image_endpoint(request: Request) -> Response:
    name, version = request.path_params["name"], version_param(request)
    task = request.url.path.rsplit("/", 1)[-1]
    authorize(request, "infer", f"model:{name}")
    srv = server(request)
    data, params = await read_image_request(request, srv.config.limits)
    overrides = parse_overrides(params)
    with srv.repository.use(name, version) as mv:
        want = TASKS[task]
        if want is not None and mv.contract.task != want:
            raise BadRequest(
                f"model {name!r} is a {mv.contract.task} model, not {want}; "
                f"use /v1/models/{name}/{'predict' if mv.contract.task == 'raw' else mv.contract.task}"
            )
        pred = await predict_image(request, mv, data, srv.config.limits, overrides)
        return json_response(result_document(mv, pred))


for _task in TASKS:
    for _path in (f"/v1/models/{{name}}/{_task}", f"/v1/models/{{name}}/versions/{{version}}/{_task}"):
        router.add_api_route(_path, image_endpoint, methods=["POST"])


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    authorize(request, "read", "repository")
    repo = server(request).repository
    rows = []
    for name in sorted(repo.models):
        e = repo.models[name]
        mv = e.versions.get(e.serving) if e.serving is not None else None
        rows.append({
            "name": name, "serving_version": str(e.serving) if e.serving is not None else None,
            "versions": [str(v) for v in sorted(e.versions)], "task": mv.contract.task if mv else None,
            "artifact": mv.artifact.name if mv else None, "classes": mv.contract.classes if mv else [],
        })  # fmt: skip
    return json_response({"models": rows})
