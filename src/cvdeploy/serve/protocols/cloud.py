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

All instances of one request are admitted to the model's queue together or the request is
refused (413 when it could never fit: ``limits.max_instances`` or the queue size), so it is never
half run. ``server.default_model`` picks the model (default: the first one loaded).
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import base64
import binascii
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.errors import BadRequest, PayloadTooLarge, UnsupportedMedia
from cvdeploy.serve.limits import RAW_IMAGE_TYPES, media_type
from cvdeploy.serve.protocols.documents import image_document, tensors_document
from cvdeploy.serve.protocols.http import call_of, calling, json_response, query_document, read_body
from cvdeploy.serve.protocols.v2 import infer_response
from cvdeploy.serve.protocols.v2_codec import BINARY_HEADER
from cvdeploy.serve.schemas import InstancesRequest, Overrides, parse_json, validate_document
from cvdeploy.serve.service import ImagePrediction, InferenceService

_B64_KEYS = ("image", "image_bytes", "bytes")


def _b64_image(inst: Any) -> str | None:
    if isinstance(inst, dict):
        if isinstance(inst.get("b64"), str):
            return inst["b64"]
        for key in _B64_KEYS:
            inner = inst.get(key)
            if isinstance(inner, dict) and isinstance(inner.get("b64"), str):
                return inner["b64"]
    return None


def _instances(doc: InstancesRequest) -> list[bytes | Any]:
    """Instances with their images decoded from base64 (tensors stay nested lists)."""
    out: list[bytes | Any] = []
    for i, inst in enumerate(doc.instances):
        b64 = _b64_image(inst)
        if b64 is None:
            out.append(inst)
            continue
        try:
            out.append(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"instances[{i}]: 'b64' is not valid base64") from None
    return out


async def _health(service: InferenceService, request: Request) -> Response:
    if service.ready(call_of(request)):
        return json_response({"status": "healthy"})
    return json_response({"error": "not ready: no model version is serving yet"}, 503)


async def _json_value(service: InferenceService, body: bytes) -> Any:
    limit = service.config.limits.max_json_bytes
    if len(body) > limit:
        raise PayloadTooLarge(
            f"JSON body of {len(body):,} bytes is over the limit of {limit:,} (limits.max_json_bytes)"
        )
    return await service.run_cpu(parse_json, body) if len(body) > 256 * 1024 else parse_json(body)


async def _predict(service: InferenceService, request: Request, value: Any) -> Response:
    """``{"instances": [...], "parameters": {...}}`` → ``{"predictions": [...]}``."""
    doc = validate_document(InstancesRequest, value, "prediction request")
    limit = service.config.limits.max_instances
    if len(doc.instances) > limit:  # before any base64 is decoded
        raise PayloadTooLarge(
            f"request holds {len(doc.instances)} instances; this server takes at most {limit} per request "
            "(limits.max_instances); split it"
        )
    instances = _instances(doc)
    overrides = doc.parameters.values() if doc.parameters else {}
    async with calling(request) as call:
        res = await service.predict_instances(call, instances, overrides)
    preds = [
        image_document(a, model_fields=False) if isinstance(a, ImagePrediction) else tensors_document(a)
        for a in res.answers
    ]
    return json_response({"predictions": preds, "model": res.model.name, "version": str(res.model.version)})


def router(service: InferenceService) -> APIRouter:
    """SageMaker's routes over ``service``."""
    r = APIRouter()

    async def ping(request: Request) -> Response:
        return await _health(service, request)

    @r.post("/invocations")
    async def invocations(request: Request) -> Response:
        name = service.default_model()
        service.authorize(call_of(request), "infer", f"model:{name}")  # before the body is read
        mt = media_type(request.headers.get("content-type"))
        body = await read_body(request)
        if request.headers.get(BINARY_HEADER) is not None:
            return await infer_response(service, request, name, None, body)
        if mt in ("application/json", ""):
            value = await _json_value(service, body)
            if isinstance(value, dict) and "instances" in value:
                return await _predict(service, request, value)
            if isinstance(value, dict) and "inputs" in value:
                return await infer_response(service, request, name, None, body)
            raise BadRequest(
                "JSON body must hold 'instances' (Vertex style) or 'inputs' (Open Inference Protocol v2)"
            )
        if mt in service.config.limits.allowed_content_types or mt in RAW_IMAGE_TYPES:
            overrides = query_document(request, Overrides, "invocation")
            async with calling(request) as call:
                pred = await service.predict_image(call, name, None, body, overrides.values())
            return json_response(image_document(pred))
        raise UnsupportedMedia(
            f"unsupported content type {mt[:60]!r} for /invocations: "
            "send an image, application/json or a v2 binary request"
        )

    r.add_api_route("/ping", ping, methods=["GET"])
    return r


def mount_vertex(app: FastAPI, service: InferenceService, predict_route: str, health_route: str) -> None:
    """Add the Vertex AI routes at the paths the platform names."""

    async def health(request: Request) -> Response:
        return await _health(service, request)

    async def predict(request: Request) -> Response:
        name = service.default_model()
        service.authorize(call_of(request), "infer", f"model:{name}")
        return await _predict(service, request, await _json_value(service, await read_body(request)))

    app.add_api_route(health_route, health, methods=["GET"])
    app.add_api_route(predict_route, predict, methods=["POST"])
