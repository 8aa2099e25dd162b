"""The v2 model repository extension (Triton's), plus rollback, thin over the service.

    POST /v2/repository/index                        every known model version and its state
    POST /v2/repository/models/{name}/load           load a version (body may name path, version, artifact)
    POST /v2/repository/models/{name}/unload         unload a version (or all)
    POST /v2/repository/models/{name}/rollback       serve the previous version (cvdeploy extension)

Load, unload and rollback change model state: they need ``Content-Type: application/json`` and a
principal the service lets change models (anonymous callers only with ``--allow-anonymous-admin``).
Bodies are validated (:mod:`cvdeploy.serve.schemas`): unknown keys are refused with the known ones.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.protocols.http import call_of, json_response, read_body, require_json
from cvdeploy.serve.schemas import IndexRequest, LoadRequest, RollbackRequest, UnloadRequest, parse_document
from cvdeploy.serve.service import InferenceService


def router(service: InferenceService) -> APIRouter:
    r = APIRouter()

    @r.post("/v2/repository/index")
    async def index(request: Request) -> Response:
        call = call_of(request)
        service.authorize(call, "read", "repository")
        doc = parse_document(IndexRequest, await read_body(request), "repository index request")
        return json_response(service.index(call, bool(doc.ready)))

    @r.post("/v2/repository/models/{name}/load")
    async def load(request: Request) -> Response:
        name, call = request.path_params["name"], call_of(request)
        service.authorize(call, "load", f"model:{name}")
        require_json(request)
        params = parse_document(LoadRequest, await read_body(request), "load request").merged()
        mv = await service.load(call, name, params)
        return json_response(
            {"name": mv.name, "version": str(mv.version), "state": "READY", "artifact": mv.artifact.name}
        )

    @r.post("/v2/repository/models/{name}/unload")
    async def unload(request: Request) -> Response:
        name, call = request.path_params["name"], call_of(request)
        service.authorize(call, "unload", f"model:{name}")
        require_json(request)
        params = parse_document(UnloadRequest, await read_body(request), "unload request").merged()
        gone, serving = await service.unload(call, name, params.version)
        return json_response({"name": name, "unloaded": [str(v) for v in gone],
                              "serving": str(serving) if serving is not None else None})  # fmt: skip

    @r.post("/v2/repository/models/{name}/rollback")
    async def rollback(request: Request) -> Response:
        name, call = request.path_params["name"], call_of(request)
        service.authorize(call, "rollback", f"model:{name}")
        require_json(request)
        parse_document(RollbackRequest, await read_body(request), "rollback request")
        return json_response({"name": name, "serving": str(await service.rollback(call, name))})

    return r
