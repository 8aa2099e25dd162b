"""Open Inference Protocol v2 (KServe / Triton) over HTTP/REST: the routes, thin over the service.

    GET  /v2                                         server metadata
    GET  /v2/health/live | /v2/health/ready          liveness, readiness
    GET  /v2/models/{name}[/versions/{v}]            model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready      model readiness
    GET  /v2/models/{name}[/versions/{v}]/config     Triton-shaped model configuration
    GET  /v2/models[/{name}[/versions/{v}]]/stats    Triton-shaped inference statistics
    POST /v2/models/{name}[/versions/{v}]/infer      inference: JSON and/or binary tensors

The wire format is :mod:`~cvdeploy.serve.protocols.v2_codec`, the repository extension
:mod:`~cvdeploy.serve.protocols.repository_api`, the Triton documents
:mod:`~cvdeploy.serve.protocols.triton`. Errors are ``{"error": "..."}`` with 400 (bad request),
404 (unknown model or version), 413 (over a stated limit), 503 (queue full, with Retry-After) or 504.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy import __version__
from cvdeploy.serve.protocols.http import call_of, calling, json_response, read_body, version_param
from cvdeploy.serve.protocols.triton import model_stats, tensor_metadata, triton_config
from cvdeploy.serve.protocols.v2_codec import BINARY_HEADER, decode_request, encode_response
from cvdeploy.serve.service import InferenceService

EXTENSIONS = [
    "binary_tensor_data",
    "model_repository",
    "statistics",
    "cvdeploy_image_api",
    "cvdeploy_rollback",
]
_OFFLOAD_BYTES = 256 * 1024  # parse/encode larger JSON in a worker thread, off the event loop


async def infer_response(service: InferenceService, request: Request, name: str, version: str | None,
                         body: bytes) -> Response:  # fmt: skip
    """A whole v2 inference from a read body (also used by SageMaker's /invocations)."""
    limits = service.config.limits
    header_length = request.headers.get(BINARY_HEADER)
    args = (body, header_length, limits.max_body_bytes, limits.max_json_bytes)
    if header_length is None and len(body) > _OFFLOAD_BYTES:
        req = await service.run_cpu(decode_request, *args)
    else:
        req = decode_request(*args)
    async with calling(request) as call:
        result = await service.infer(call, name, version, req.tensors)
    big = sum(a.size for n, a in result.outputs if not req.binary.get(n, req.binary_default)) * 8
    if big > _OFFLOAD_BYTES:
        content, headers = await service.run_cpu(encode_response, result, req)
    else:
        content, headers = encode_response(result, req)
    media = headers.pop("content-type")
    return Response(content, 200, headers, media_type=media)


def router(service: InferenceService) -> APIRouter:
    """The v2 inference and metadata routes over ``service``."""
    r = APIRouter()

    @r.get("/v2")
    async def server_metadata(request: Request) -> Response:
        service.server_info(call_of(request))
        return json_response({"name": "cvdeploy", "version": __version__, "extensions": EXTENSIONS})

    @r.get("/v2/health/live")
    async def live(request: Request) -> Response:
        return json_response({"live": service.live(call_of(request))})

    @r.get("/v2/health/ready")
    async def ready(request: Request) -> Response:
        ok = service.ready(call_of(request))
        return json_response({"ready": ok}, 200 if ok else 503)

    @r.get("/v2/models/stats")
    async def all_stats(request: Request) -> Response:
        entries = service.models(call_of(request))
        return json_response(
            {"model_stats": [model_stats(mv) for e in entries for mv in e.versions.values()]}
        )

    async def metadata(request: Request) -> Response:
        name, version = request.path_params["name"], version_param(request)
        call = call_of(request)
        mv = service.model(call, name, version)
        versions = [str(mv.version)] if version else [str(v.version) for v in service.versions(call, name)]
        serving = service.repository.models[name].serving
        return json_response({
            "name": mv.name, "versions": versions, "platform": mv.platform,
            "inputs": [tensor_metadata(t) for t in mv.inputs],
            "outputs": [tensor_metadata(t) for t in mv.outputs],
            "parameters": {"task": mv.contract.task, "artifact": mv.artifact.name, "classes": mv.contract.classes,
                           "serving_version": str(serving), "batching": mv.batching.to_dict()},
        })  # fmt: skip

    async def model_ready(request: Request) -> Response:
        name, version = request.path_params["name"], version_param(request)
        mv = service.model(call_of(request), name, version, action="health")
        return json_response({"name": mv.name, "version": str(mv.version), "ready": True})

    async def model_config(request: Request) -> Response:
        name, version = request.path_params["name"], version_param(request)
        return json_response(triton_config(service.model(call_of(request), name, version)))

    async def stats(request: Request) -> Response:
        name, version = request.path_params["name"], version_param(request)
        call = call_of(request)
        rows = [service.model(call, name, version)] if version else service.versions(call, name)
        return json_response({"model_stats": [model_stats(mv) for mv in rows]})

    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], version_param(request)
        service.authorize(call_of(request), "infer", f"model:{name}")  # before the body is read
        return await infer_response(service, request, name, version, await read_body(request))

    for path, fn, methods in (
        ("", metadata, ["GET"]),
        ("/ready", model_ready, ["GET"]),
        ("/config", model_config, ["GET"]),
        ("/stats", stats, ["GET"]),
        ("/infer", infer, ["POST"]),
    ):
        for p in (f"/v2/models/{{name}}{path}", f"/v2/models/{{name}}/versions/{{version}}{path}"):
            r.add_api_route(p, fn, methods=methods)
    return r
