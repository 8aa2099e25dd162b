"""Cloud serving contracts: Amazon SageMaker and Google Vertex AI, both on the default model.

SageMaker (always mounted; the container listens on 0.0.0.0:8080 when ``SM_*``/``SAGEMAKER_*``
variables are set or ``--platform sagemaker`` is given):

    GET  /ping          200 when every model is ready, else 503
    POST /invocations   an image body (image/*, application/x-image, application/octet-stream)
                        → the image API's answer; JSON ``{"instances": [...]}`` → Vertex-style
                        predictions; JSON or binary v2 ``{"inputs": [...]}`` → a v2 inference answer

Vertex AI (mounted on ``AIP_HEALTH_ROUTE`` / ``AIP_PREDICT_ROUTE`` when ``AIP_*`` variables are
set or ``--platform vertex`` is given; port ``AIP_HTTP_PORT``):

    GET  {health}       like /ping
    POST {predict}      ``{"instances": [...], "parameters": {conf, iou, max_det}}`` →
                        ``{"predictions": [...]}``; an instance is an image ``{"b64": ...}`` (or
                        ``{"image": {"b64": ...}}``), a tensor (nested list, one example without the
                        batch dimension), or ``{input name: tensor}`` for several inputs

Instances of one request go through the batcher concurrently, so they are coalesced.
``server.default_model`` picks the model (default: the first one loaded).
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import asyncio
import base64
import binascii
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.errors import BadRequest, UnsupportedMedia
from cvdeploy.serve.limits import RAW_IMAGE_TYPES, media_type
from cvdeploy.serve.protocols.common import authorize, json_response, parse_json, server, watch_disconnect
from cvdeploy.serve.protocols.image import parse_overrides, predict_image, result_document
from cvdeploy.serve.protocols.v2 import run_infer, v2_datatype
from cvdeploy.serve.repository import ModelVersion

router = APIRouter()


async def health(request: Request) -> Response:
    authorize(request, "health", "server")
    if server(request).repository.ready:
        return json_response({"status": "healthy"})
    return json_response({"error": "not ready: no model version is serving yet"}, 503)


router.add_api_route("/ping", health, methods=["GET"])


@router.post("/invocations")
async def invocations(request: Request) -> Response:
    srv = server(request)
    name = srv.repository.default_model()
    authorize(request, "infer", f"model:{name}")
    mt = media_type(request.headers.get("content-type"))
    header_length = request.headers.get("inference-header-content-length")
    body = await request.body()
    if header_length is not None:
        return await run_infer(request, name, None, body, header_length)
    if mt in ("application/json", ""):
        doc = parse_json(body)
        if isinstance(doc, dict) and "instances" in doc:
            return json_response(await predict_instances(request, name, doc))
        if isinstance(doc, dict) and "inputs" in doc:
            return await run_infer(request, name, None, body, None)
        raise BadRequest(
            "JSON body must hold 'instances' (Vertex style) or 'inputs' (Open Inference Protocol v2)"
        )
    if mt in srv.config.limits.allowed_content_types or mt in RAW_IMAGE_TYPES:
        overrides = parse_overrides(dict(request.query_params))
        with srv.repository.use(name) as mv:
            pred = await predict_image(request, mv, body, srv.config.limits, overrides)
            return json_response(result_document(mv, pred))
    raise UnsupportedMedia(
        f"unsupported content type {mt!r} for /invocations: "
        "send an image, application/json or a v2 binary request"
    )


async def vertex_predict(request: Request) -> Response:
    srv = server(request)
    name = srv.repository.default_model()
    authorize(request, "infer", f"model:{name}")
    doc = parse_json(await request.body())
    if not isinstance(doc, dict) or "instances" not in doc:
        raise BadRequest('body must be {"instances": [...]} (Vertex AI prediction request)')
    return json_response(await predict_instances(request, name, doc))


def mount_vertex(app: FastAPI, predict_route: str, health_route: str) -> None:
    """Add the Vertex AI routes at the paths the platform names."""
    app.add_api_route(health_route, health, methods=["GET"])
    app.add_api_route(predict_route, vertex_predict, methods=["POST"])


async def predict_instances(request: Request, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``{"instances": [...], "parameters": {...}}`` → ``{"predictions": [...]}``; instances batch together."""
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    overrides = parse_overrides(params)
    srv = server(request)
    with srv.repository.use(name) as mv:
        gone = watch_disconnect(request)
        try:
            jobs = [_one_instance(request, mv, i, inst, overrides, gone) for i, inst in enumerate(instances)]
            predictions = await asyncio.gather(*jobs)
        finally:
            gone.cancel()
        return {"predictions": list(predictions), "model": mv.name, "version": str(mv.version)}


def _b64_image(inst: Any) -> str | None:
    if isinstance(inst, dict):
        if isinstance(inst.get("b64"), str):
            return inst["b64"]
        for key in ("image", "image_bytes", "bytes"):
            inner = inst.get(key)
            if isinstance(inner, dict) and isinstance(inner.get("b64"), str):
                return inner["b64"]
    return None


async def _one_instance(request: Request, mv: ModelVersion, i: int, inst: Any,
                        overrides: dict[str, float | int], gone: asyncio.Future[Any]) -> Any:  # fmt: skip
    srv = server(request)
    b64 = _b64_image(inst)
    if b64 is not None:
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"instances[{i}]: 'b64' is not valid base64") from None
        try:
            pred = await predict_image(request, mv, data, srv.config.limits, overrides, gone)
        except BadRequest as exc:
            raise BadRequest(f"instances[{i}]: {exc.message}") from None
        doc = result_document(mv, pred)
        return {k: v for k, v in doc.items() if k not in ("model", "version", "artifact", "task")}
    feeds = _instance_tensors(mv, i, inst)
    result = await mv.batcher.infer(feeds, gone=gone)
    outs = [o[0] if mv.batchable else o for o in result.outputs]
    return {t.name: o.tolist() for t, o in zip(mv.outputs, outs, strict=False)}


def _instance_tensors(mv: ModelVersion, i: int, inst: Any) -> dict[str, np.ndarray]:
    """One example (without batch dimension) per input → feeds with a batch of one."""
    if isinstance(inst, dict):
        values = inst
    elif isinstance(inst, list):
        if len(mv.inputs) != 1:
            raise BadRequest(
                f"instances[{i}]: model {mv.name!r} has several inputs; give {{input name: tensor}}"
            )
        values = {mv.inputs[0].name: inst}
    else:
        raise BadRequest(f"instances[{i}] must be an image {{'b64': ...}} or a tensor (nested list)")
    feeds = {}
    for t in mv.inputs:
        if t.name not in values:
            raise BadRequest(f"instances[{i}]: missing input {t.name!r}")
        try:
            arr = np.asarray(values[t.name], dtype=np.dtype(t.dtype))
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(
                f"instances[{i}]: input {t.name!r} is not a {v2_datatype(t.dtype)} tensor"
            ) from None
        want = list(t.shape[1:]) if mv.batchable else list(t.shape)
        if arr.ndim != len(want) or any(
            isinstance(w, int) and w >= 0 and w != g for w, g in zip(want, arr.shape, strict=True)
        ):
            shown = [w if isinstance(w, int) else -1 for w in want]
            raise BadRequest(
                f"instances[{i}]: input {t.name!r} must have shape {shown}, got {list(arr.shape)}"
            )
        feeds[t.name] = arr[None] if mv.batchable else arr
    extra = set(values) - {t.name for t in mv.inputs}
    if extra:
        raise BadRequest(f"instances[{i}]: unknown input {sorted(extra)[0]!r}")
    return feeds
