"""Open Inference Protocol v2 (KServe / Triton) over HTTP/REST, with the binary tensor data extension.

    GET  /v2                                         server metadata
    GET  /v2/health/live | /v2/health/ready          liveness, readiness
    GET  /v2/models/{name}[/versions/{v}]            model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready      model readiness
    GET  /v2/models/{name}[/versions/{v}]/config     Triton-shaped model configuration
    GET  /v2/models[/{name}[/versions/{v}]]/stats    Triton-shaped inference statistics
    POST /v2/models/{name}[/versions/{v}]/infer      inference: JSON and/or binary tensors
    POST /v2/repository/index                        every known model version and its state
    POST /v2/repository/models/{name}/load           load a version (body may name path, version, artifact)
    POST /v2/repository/models/{name}/unload         unload a version (or all)
    POST /v2/repository/models/{name}/rollback       serve the previous version (cvdeploy extension)

Binary tensors: when the request has an ``Inference-Header-Content-Length: N`` header, its first
N bytes are the JSON header and the rest the inputs' raw little-endian bytes, in input order, each
input saying its ``parameters.binary_data_size``. Outputs requested with
``parameters.binary_data: true`` (or all, with ``parameters.binary_data_output: true``) come back
the same way. Errors are ``{"error": "..."}`` with 400 (bad request), 404 (unknown model or
version), 413, 503 (queue full, with Retry-After) or 504.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy import __version__
from cvdeploy.runtimes import TensorInfo
from cvdeploy.runtimes.registry import engine
from cvdeploy.serve.errors import BadRequest, UnsupportedMedia
from cvdeploy.serve.protocols.common import (
    authorize,
    json_response,
    parse_json,
    request_id,
    server,
    version_param,
    watch_disconnect,
)
from cvdeploy.serve.repository import ModelVersion

router = APIRouter()

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}  # fmt: skip
NUMPY_TO_V2 = {dt.name: name for name, dt in V2_TO_NUMPY.items()}
EXTENSIONS = [
    "binary_tensor_data",
    "model_repository",
    "statistics",
    "cvdeploy_image_api",
    "cvdeploy_rollback",
]
_OFFLOAD_JSON_BYTES = 256 * 1024  # parse/encode larger JSON in a worker thread, off the event loop


def v2_datatype(dtype: str) -> str:
    """``"float32"`` → ``"FP32"``; unknown numpy types keep their name upper-cased."""
    try:
        return NUMPY_TO_V2.get(np.dtype(dtype).name, dtype.upper())
    except TypeError:
        return dtype.upper()


def _dims(shape: Sequence[int | str | None]) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def tensor_metadata(t: TensorInfo) -> dict[str, Any]:
    return {"name": t.name, "datatype": v2_datatype(t.dtype), "shape": _dims(t.shape)}


# ---- requests ------------------------------------------------------------------------------------


@dataclass
class InferInput:
    name: str
    shape: list[int]
    datatype: str
    array: np.ndarray


@dataclass
class InferRequest:
    """A parsed v2 request: input arrays and which outputs to return, and how."""

    id: str | None
    inputs: list[InferInput]
    outputs: list[tuple[str, bool]] | None  # (name, binary); None = all outputs
    binary_default: bool
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The JSON header (and binary tail, when ``Inference-Header-Content-Length`` is given) → arrays."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not a number") from None
        if not 0 < n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
        head, tail = body[:n], memoryview(body)[n:]
    else:
        head, tail = body, memoryview(b"")
    doc = parse_json(head, "inference request header")
    if not isinstance(doc, dict):
        raise BadRequest("inference request must be a JSON object with 'inputs'")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("inference request needs a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    offset = 0
    inputs = []
    for i, spec in enumerate(raw_inputs):
        if not isinstance(spec, dict):
            raise BadRequest(f"inputs[{i}] must be an object")
        inp, used = _parse_input(i, spec, tail, offset)
        inputs.append(inp)
        offset += used
    if offset != len(tail):
        raise BadRequest(f"binary data is {len(tail)} bytes but the inputs declare {offset}")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for j, o in enumerate(doc["outputs"]):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{j}] must be an object with a 'name'")
            op = o.get("parameters") or {}
            binary = op.get("binary_data") if isinstance(op, dict) else None
            outputs.append(
                (o["name"], bool(binary) if binary is not None else bool(params.get("binary_data_output")))
            )
    rid = doc.get("id")
    rid = str(rid) if rid is not None else None
    return InferRequest(rid, inputs, outputs, bool(params.get("binary_data_output")),
                        params)  # fmt: skip


def _parse_input(i: int, spec: dict[str, Any], tail: memoryview, offset: int) -> tuple[InferInput, int]:
    name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{i}] needs a 'name'")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(
            f"input {name!r}: 'shape' must be a list of non-negative whole numbers, got {shape!r}"
        )
    if datatype == "BYTES":
        raise BadRequest(f"input {name!r}: BYTES tensors are not supported by this server")
    if datatype not in V2_TO_NUMPY:
        raise BadRequest(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(V2_TO_NUMPY)}"
        )
    dtype = V2_TO_NUMPY[datatype]
    count = math.prod(shape)
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative whole number")
        if size != count * dtype.itemsize:
            raise BadRequest(
                f"input {name!r}: binary_data_size {size} does not match shape {shape} of {datatype} "
                f"({count * dtype.itemsize} bytes)"
            )
        if offset + size > len(tail):
            raise BadRequest(f"input {name!r}: binary data ends after {len(tail) - offset} of {size} bytes")
        arr = np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape)
        return InferInput(name, shape, datatype, arr), size
    if "data" not in spec:
        raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    try:
        arr = np.asarray(spec["data"], dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"input {name!r}: 'data' is not a list of {datatype} values") from None
    if arr.size != count:
        raise BadRequest(f"input {name!r}: 'data' holds {arr.size} values but shape {shape} needs {count}")
    return InferInput(name, shape, datatype, arr.reshape(shape)), 0


def validate_inputs(req: InferRequest, mv: ModelVersion) -> dict[str, np.ndarray]:
    """Check names, datatypes and shapes against the model's inputs (the contract); → feeds."""
    expected = {t.name: t for t in mv.inputs}
    given = [inp.name for inp in req.inputs]
    unknown = [n for n in given if n not in expected]
    if unknown:
        raise BadRequest(
            f"model {mv.name!r} has no input {unknown[0]!r}; its inputs are: {', '.join(expected)}"
        )
    if len(set(given)) != len(given):
        raise BadRequest("an input is given twice")
    missing = [n for n in expected if n not in given]
    if missing:
        raise BadRequest(
            f"model {mv.name!r} needs input {missing[0]!r} too; its inputs are: {', '.join(expected)}"
        )
    feeds: dict[str, np.ndarray] = {}
    batch: int | None = None
    for inp in req.inputs:
        info = expected[inp.name]
        want_type = v2_datatype(info.dtype)
        if inp.datatype != want_type:
            raise BadRequest(f"input {inp.name!r} must be {want_type}, got {inp.datatype}")
        want = _dims(info.shape)
        if len(inp.shape) != len(want) or any(
            w >= 0 and w != g for w, g in zip(want, inp.shape, strict=True)
        ):
            raise BadRequest(f"input {inp.name!r} must have shape {want} (-1: any), got {inp.shape}")
        if mv.batchable:
            rows = inp.shape[0]
            if rows < 1 or rows > mv.max_batch_size:
                raise BadRequest(
                    f"input {inp.name!r}: batch of {rows} is outside 1..{mv.max_batch_size} "
                    "(this model's max_batch_size)"
                )
            if batch is not None and rows != batch:
                raise BadRequest(f"inputs disagree on the batch size ({batch} vs {rows})")
            batch = rows
        if any(d == 0 for d in inp.shape):
            raise BadRequest(f"input {inp.name!r} is empty (shape {inp.shape})")
        feeds[inp.name] = inp.array
    return feeds


def encode_response(
    mv: ModelVersion, req: InferRequest, outputs: Sequence[np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """Outputs → JSON header plus binary tail; returns the body and its headers."""
    names = [t.name for t in mv.outputs]
    by_name = dict(zip(names, outputs, strict=False))
    wanted = req.outputs if req.outputs is not None else [(n, req.binary_default) for n in names]
    docs, chunks = [], []
    for name, binary in wanted:
        arr = by_name.get(name)
        if arr is None:
            raise BadRequest(f"model {mv.name!r} has no output {name!r}; its outputs are: {', '.join(names)}")
        arr = np.ascontiguousarray(arr)
        datatype = NUMPY_TO_V2.get(arr.dtype.name, arr.dtype.name.upper())
        doc: dict[str, Any] = {"name": name, "datatype": datatype,
                               "shape": list(arr.shape)}  # fmt: skip
        if binary:
            raw = arr.tobytes()
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = arr.reshape(-1).tolist()
        docs.append(doc)
    head: dict[str, Any] = {"model_name": mv.name, "model_version": str(mv.version), "outputs": docs}
    if req.id is not None:
        head["id"] = req.id
    header = json.dumps(head).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


async def run_infer(request: Request, name: str, version: str | None, body: bytes,
                    header_length: str | None) -> Response:  # fmt: skip
    """The whole v2 inference: parse, check against the model, batch, encode (also used by /invocations)."""
    srv = server(request)
    if header_length is None and len(body) > _OFFLOAD_JSON_BYTES:
        req = await srv.run_cpu(parse_infer_request, body, header_length)
    else:
        req = parse_infer_request(body, header_length)
    if req.outputs is not None:
        for oname, _ in req.outputs:
            if sum(1 for o, _ in req.outputs if o == oname) > 1:
                raise BadRequest(f"output {oname!r} is requested twice")
    with srv.repository.use(name, version) as mv:
        feeds = validate_inputs(req, mv)
        if req.outputs is not None:
            known = {t.name for t in mv.outputs}
            for oname, _ in req.outputs:
                if oname not in known:
                    raise BadRequest(
                        f"model {mv.name!r} has no output {oname!r}; its outputs are: {', '.join(known)}"
                    )
        gone = watch_disconnect(request)
        try:
            result = await mv.batcher.infer(feeds, gone=gone)
        finally:
            gone.cancel()
        big = any(not b for _, b in (req.outputs or [])) or (req.outputs is None and not req.binary_default)
        if big and sum(o.size for o in result.outputs) * 8 > _OFFLOAD_JSON_BYTES:
            content, headers = await srv.run_cpu(encode_response, mv, req, result.outputs)
        else:
            content, headers = encode_response(mv, req, result.outputs)
    media = headers.pop("content-type")
    return Response(content, 200, headers, media_type=media)


# ---- routes --------------------------------------------------------------------------------------


def _both(path: str) -> list[str]:
    return [f"/v2/models/{{name}}{path}", f"/v2/models/{{name}}/versions/{{version}}{path}"]


@router.get("/v2")
async def server_metadata(request: Request) -> Response:
    authorize(request, "read", "server")
    return json_response({"name": "cvdeploy", "version": __version__, "extensions": EXTENSIONS})


@router.get("/v2/health/live")
async def live(request: Request) -> Response:
    authorize(request, "health", "server")
    return json_response({"live": True})


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    authorize(request, "health", "server")
    ok = server(request).repository.ready
    return json_response({"ready": ok}, 200 if ok else 503)


@router.get("/v2/models/stats")
async def all_stats(request: Request) -> Response:
    authorize(request, "read", "server")
    repo = server(request).repository
    rows = [model_stats(mv) for e in repo.models.values() for mv in e.versions.values()]
    return json_response({"model_stats": rows})


async def model_metadata(request: Request) -> Response:
    name, version = request.path_params["name"], version_param(request)
    authorize(request, "read", f"model:{name}")
    repo = server(request).repository
    mv = repo.get(name, version)
    versions = [str(mv.version)] if version else [str(v) for v in sorted(repo.models[name].versions)]
    return json_response({
        "name": mv.name, "versions": versions, "platform": mv.platform,
        "inputs": [tensor_metadata(t) for t in mv.inputs],
        "outputs": [tensor_metadata(t) for t in mv.outputs],
        "parameters": {"task": mv.contract.task, "artifact": mv.artifact.name, "classes": mv.contract.classes,
                       "serving_version": str(repo.models[name].serving)},
    })  # fmt: skip


async def model_ready(request: Request) -> Response:
    name, version = request.path_params["name"], version_param(request)
    authorize(request, "health", f"model:{name}")
    mv = server(request).repository.get(name, version)
    return json_response({"name": mv.name, "version": str(mv.version), "ready": True})


async def model_config(request: Request) -> Response:
    name, version = request.path_params["name"], version_param(request)
    authorize(request, "read", f"model:{name}")
    return json_response(triton_config(server(request).repository.get(name, version)))


async def model_stats_route(request: Request) -> Response:
    name, version = request.path_params["name"], version_param(request)
    authorize(request, "read", f"model:{name}")
    repo = server(request).repository
    if version:
        rows = [model_stats(repo.get(name, version))]
    else:
        repo.get(name)
        rows = [model_stats(mv) for mv in repo.models[name].versions.values()]
    return json_response({"model_stats": rows})


async def infer(request: Request) -> Response:
    name, version = request.path_params["name"], version_param(request)
    authorize(request, "infer", f"model:{name}")
    enc = request.headers.get("content-encoding")
    if enc and enc.lower() != "identity":
        raise UnsupportedMedia(f"Content-Encoding {enc!r} is not supported; send the request uncompressed")
    body = await request.body()
    return await run_infer(
        request, name, version, body, request.headers.get("inference-header-content-length")
    )


for _path, _fn, _methods in (
    ("", model_metadata, ["GET"]),
    ("/ready", model_ready, ["GET"]),
    ("/config", model_config, ["GET"]),
    ("/stats", model_stats_route, ["GET"]),
    ("/infer", infer, ["POST"]),
):
    for _p in _both(_path):
        router.add_api_route(_p, _fn, methods=_methods, include_in_schema=True)


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> Response:
    authorize(request, "read", "repository")
    body = await request.body()
    doc = parse_json(body) if body.strip() else {}
    ready_only = bool(doc.get("ready")) if isinstance(doc, dict) else False
    return json_response(server(request).repository.index(ready_only))


def _repo_params(doc: Any, allowed: set[str]) -> dict[str, Any]:
    """Load/unload bodies: keys at the top level or in ``parameters`` (as tritonclient sends them)."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    params = dict(doc.get("parameters") or {})
    params.update({k: v for k, v in doc.items() if k != "parameters"})
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return params


def _version_arg(params: Mapping[str, Any]) -> int | None:
    v = params.get("version")
    if v is None:
        return None
    try:
        out = int(v)
    except (TypeError, ValueError):
        raise BadRequest(f"version must be a whole number, got {v!r}") from None
    if out < 0:
        raise BadRequest(f"version must not be negative, got {out}")
    return out


async def _body_params(request: Request, allowed: set[str]) -> dict[str, Any]:
    body = await request.body()
    return _repo_params(parse_json(body) if body.strip() else None, allowed)


@router.post("/v2/repository/models/{name}/load")
async def load(request: Request) -> Response:
    name = request.path_params["name"]
    who = authorize(request, "load", f"model:{name}")
    params = await _body_params(request, {"path", "bundle", "version", "artifact"})
    path = params.get("path") or params.get("bundle")
    if path is not None and not isinstance(path, str):
        raise BadRequest("path must be a string")
    artifact = params.get("artifact")
    if artifact is not None and not isinstance(artifact, str):
        raise BadRequest("artifact must be a string")
    mv = await server(request).repository.load(
        name, path, _version_arg(params), artifact, principal=who, request_id=request_id(request)
    )
    return json_response(
        {"name": mv.name, "version": str(mv.version), "state": "READY", "artifact": mv.artifact.name}
    )


@router.post("/v2/repository/models/{name}/unload")
async def unload(request: Request) -> Response:
    name = request.path_params["name"]
    who = authorize(request, "unload", f"model:{name}")
    params = await _body_params(request, {"version", "unload_dependents"})
    gone = await server(request).repository.unload(
        name, _version_arg(params), principal=who, request_id=request_id(request)
    )
    entry = server(request).repository.models.get(name)
    serving = entry.serving if entry else None
    return json_response({"name": name, "unloaded": [str(v) for v in gone],
                          "serving": str(serving) if serving is not None else None})  # fmt: skip


@router.post("/v2/repository/models/{name}/rollback")
async def rollback(request: Request) -> Response:
    name = request.path_params["name"]
    who = authorize(request, "rollback", f"model:{name}")
    await _body_params(request, set())
    target = await server(request).repository.rollback(name, principal=who, request_id=request_id(request))
    return json_response({"name": name, "serving": str(target)})


# ---- Triton-shaped documents ---------------------------------------------------------------------

_TRITON_TYPES = {v: f"TYPE_{'STRING' if v == 'BYTES' else v}" for v in [*V2_TO_NUMPY, "BYTES"]}


def triton_config(mv: ModelVersion) -> dict[str, Any]:
    """The model configuration as Triton returns it (what tritonclient and perf_analyzer read)."""
    mbs = mv.max_batch_size

    def tensor(t: TensorInfo) -> dict[str, Any]:
        dims = _dims(t.shape)[1:] if mbs > 0 else _dims(t.shape)
        return {"name": t.name, "data_type": _TRITON_TYPES.get(v2_datatype(t.dtype), "TYPE_INVALID"),
                "dims": dims, "is_shape_tensor": False}  # fmt: skip

    cfg = mv.config
    doc: dict[str, Any] = {
        "name": mv.name,
        "platform": mv.platform,
        "backend": engine(mv.artifact.runtime).triton_backend,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": mbs,
        "input": [{**tensor(t), "format": "FORMAT_NONE", "allow_ragged_batch": False, "optional": False}
                  for t in mv.inputs],
        "output": [{**tensor(t), "label_filename": ""} for t in mv.outputs],
        "instance_group": [{"name": f"{mv.name}_0", "kind": "KIND_CPU" if cfg.device == "cpu" else "KIND_GPU",
                            "count": len(mv.pipelines), "gpus": []}],
        "model_transaction_policy": {"decoupled": False},
        "parameters": {
            "cvdeploy_artifact": {"string_value": mv.artifact.name},
            "cvdeploy_task": {"string_value": mv.contract.task},
            "cvdeploy_version": {"string_value": str(mv.version)},
        },
    }  # fmt: skip
    if mv.batcher.batching:
        doc["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": int(cfg.max_queue_delay_ms * 1000),
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": int(cfg.timeout_s * 1e6),
                "allow_timeout_override": False,
                "max_queue_size": cfg.queue_size,
            },
        }
    return doc


def model_stats(mv: ModelVersion) -> dict[str, Any]:
    """Inference statistics in Triton's shape, plus cvdeploy's queue counters."""
    st = mv.batcher.stats
    ns = int(st.inference_s * 1e9)
    return {
        "name": mv.name,
        "version": str(mv.version),
        "inference_count": st.rows,
        "execution_count": st.batches,
        "inference_stats": {
            "success": {"count": st.requests - st.dropped - st.timed_out - st.rejected, "ns": 0},
            "fail": {"count": st.timed_out + st.rejected, "ns": 0},
            "compute_infer": {"count": st.batches, "ns": ns},
        },
        "batch_stats": [
            {"batch_size": b, "compute_infer": {"count": c, "ns": 0}}
            for b, c in sorted(st.batch_rows.items())
        ],
        "queue": {"depth": mv.batcher.depth, "rejected": st.rejected, "timed_out": st.timed_out,
                  "dropped": st.dropped, "requests_per_batch": dict(sorted(st.requests_per_batch.items()))},
    }  # fmt: skip
