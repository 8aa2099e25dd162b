"""What every HTTP adapter shares: the Call of a request, body and query reading, JSON answers.

The adapters never look the service up on the app: each protocol's ``router(service)`` is handed
it. The principal was resolved by the request middleware before routing.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.errors import BadRequest, UnsupportedMedia
from cvdeploy.serve.limits import media_type
from cvdeploy.serve.schemas import validate_document
from cvdeploy.serve.security import Principal
from cvdeploy.serve.service import Call

M = TypeVar("M", bound=BaseModel)


def principal(request: Request) -> Principal:
    p = request.scope.get("state", {}).get("principal")
    return p if isinstance(p, Principal) else Principal.anonymous()


def request_id(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def call_of(request: Request, gone: asyncio.Future[Any] | None = None) -> Call:
    """The transport-neutral Call of this request (all its Calls share the request's authorized ledger)."""
    state = request.scope.setdefault("state", {})
    ledger = state.get("authorized")
    if not isinstance(ledger, set):
        ledger = state["authorized"] = set()
    return Call(principal(request), request_id(request), gone, ledger)


@contextlib.asynccontextmanager
async def calling(request: Request) -> AsyncIterator[Call]:
    """A Call whose ``gone`` completes when the client disconnects; enter it only once the body is read."""

    async def wait() -> bool:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return True

    watcher = asyncio.ensure_future(wait())
    try:
        yield call_of(request, watcher)
    finally:
        watcher.cancel()


async def read_body(request: Request) -> bytes:
    """The request body; compressed bodies are refused (their size would not be bounded by the limit)."""
    enc = request.headers.get("content-encoding")
    if enc and enc.strip().lower() != "identity":
        raise UnsupportedMedia(
            f"Content-Encoding {enc[:40]!r} is not supported; send the request uncompressed"
        )
    return await request.body()


def require_json(request: Request) -> None:
    """State-changing routes take ``Content-Type: application/json`` only: a browser cannot send that
    cross-site without a CORS preflight, which this server never grants."""
    mt = media_type(request.headers.get("content-type"))
    if mt != "application/json":
        raise UnsupportedMedia(
            f"this route changes model state and needs Content-Type: application/json, got {mt[:60] or 'none'!r}"
        )


def version_param(request: Request) -> str | None:
    v = request.path_params.get("version")
    return v if isinstance(v, str) and v != "" else None


def query_document(request: Request, model: type[M], what: str, extra: Mapping[str, str] | None = None) -> M:
    """Query parameters (plus ``extra`` form fields) → ``model``; unknown or repeated names are refused."""
    items = list(request.query_params.multi_items()) + list((extra or {}).items())
    values: dict[str, str] = {}
    for key, value in items:
        if key in values:
            raise BadRequest(f"{what}: parameter {key[:40]!r} is given twice")
        values[key] = value
    return validate_document(model, {k: v for k, v in values.items() if v != ""}, what)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Strict JSON: NaN and ±Inf (never valid JSON) are sent as null — callers flag them in the document."""
    try:
        body = json.dumps(doc, allow_nan=False)
    except ValueError:
        body = json.dumps(json_safe(doc)[0], allow_nan=False)
    return Response(body.encode(), status, headers, media_type="application/json")


def json_safe(value: Any) -> tuple[Any, int]:
    """A copy with every non-finite float replaced by None, and how many were replaced."""
    count = 0

    def walk(v: Any) -> Any:
        nonlocal count
        if isinstance(v, float) and not math.isfinite(v):
            count += 1
            return None
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value), count
