"""The image API: an encoded image in, results in original-image pixels out, thin over the service.

    POST /v1/models/{name}[/versions/{v}]/detect     detections: boxes             (task detect)
    POST /v1/models/{name}[/versions/{v}]/segment    + "polygon" of each mask      (task segment)
    POST /v1/models/{name}[/versions/{v}]/pose       + "keypoints" [[x, y, v], …]  (task pose)
    POST /v1/models/{name}[/versions/{v}]/obb        + "rbox" and its "polygon"    (task obb)
    POST /v1/models/{name}[/versions/{v}]/classify   top classes                   (task classify)
    POST /v1/models/{name}[/versions/{v}]/predict    whatever the model's task gives (raw tensors and
                                                     their letterbox "geometry" too)
    GET  /v1/models                                  the models and their serving versions

A route named after a task answers only models of that task (a 400 names the right route);
``predict`` answers any. The image comes as the multipart file field ``image``
(``curl -F image=@street.jpg``) or as the raw body (``Content-Type: image/jpeg``, ``image/png``,
``image/bmp``, ``image/webp``, ``image/tiff`` — the formats ``predict`` reads, narrowed by
``limits.allowed_content_types`` — or ``application/octet-stream``). Optional ``conf``, ``iou``
and ``max_det`` come as query or form fields; any other name is refused with the known ones. The
answer is :func:`~cvdeploy.serve.protocols.documents.image_document`.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

from typing import Any

from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.config import LimitsConfig
from cvdeploy.serve.errors import BadRequest
from cvdeploy.serve.limits import check_content_type, media_type
from cvdeploy.serve.protocols.documents import image_document
from cvdeploy.serve.protocols.http import (
    call_of,
    calling,
    json_response,
    query_document,
    read_body,
    version_param,
)
from cvdeploy.serve.schemas import Overrides
from cvdeploy.serve.service import ROUTED_TASKS, InferenceService

TASKS = {**{t: t for t in ROUTED_TASKS}, "predict": None}
FORM_FIELDS = ("image", *Overrides.model_fields)


async def read_image_request(request: Request, limits: LimitsConfig) -> tuple[bytes, Overrides]:
    """The image bytes (multipart field ``image`` or raw body) and the thresholds sent with it."""
    mt = media_type(request.headers.get("content-type"))
    if mt == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
        except HTTPException as exc:  # the multipart parser's own errors
            raise BadRequest(f"malformed multipart body: {exc.detail}") from None
        try:
            unknown = sorted(k for k in form if k not in FORM_FIELDS)
            if unknown:
                raise BadRequest(f"unknown form field {unknown[0][:40]!r}; known: {', '.join(FORM_FIELDS)}")
            image = form.get("image")
            if image is None:
                raise BadRequest("multipart body has no field 'image': send the file as -F image=@photo.jpg")
            if not isinstance(image, UploadFile):
                raise BadRequest("field 'image' must be a file upload, not text")
            fields: dict[str, str] = {}
            for key in Overrides.model_fields:
                value = form.get(key)
                if isinstance(value, UploadFile):
                    raise BadRequest(f"field {key!r} must be text, not a file")
                if value is not None:
                    fields[key] = value
            overrides = query_document(request, Overrides, "image request", fields)
            return await image.read(), overrides
        finally:
            await form.close()
    overrides = query_document(request, Overrides, "image request")
    check_content_type(request.headers.get("content-type"), limits.allowed_content_types)
    return await read_body(request), overrides


def router(service: InferenceService) -> APIRouter:
    r = APIRouter()

    async def predict(request: Request) -> Response:
        name, version = request.path_params["name"], version_param(request)
        task = TASKS[request.url.path.rsplit("/", 1)[-1]]
        service.authorize(call_of(request), "infer", f"model:{name}")  # before the body is read
        data, overrides = await read_image_request(request, service.config.limits)
        async with calling(request) as call:
            pred = await service.predict_image(call, name, version, data, overrides.values(), task)
        return json_response(image_document(pred))

    for task in TASKS:
        for path in (f"/v1/models/{{name}}/{task}", f"/v1/models/{{name}}/versions/{{version}}/{task}"):
            r.add_api_route(path, predict, methods=["POST"])

    @r.get("/v1/models")
    async def list_models(request: Request) -> Response:
        rows: list[dict[str, Any]] = []
        for e in service.models(call_of(request)):
            mv = e.versions.get(e.serving) if e.serving is not None else None
            rows.append({
                "name": e.name, "serving_version": str(e.serving) if e.serving is not None else None,
                "versions": [str(v) for v in sorted(e.versions)], "task": mv.contract.task if mv else None,
                "artifact": mv.artifact.name if mv else None, "classes": mv.contract.classes if mv else [],
            })  # fmt: skip
        return json_response({"models": rows})

    return r
