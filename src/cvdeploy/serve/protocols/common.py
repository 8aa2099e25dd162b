"""Helpers every protocol handler uses: the server state, the principal, authorization, JSON answers."""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import asyncio
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.errors import BadRequest
from cvdeploy.serve.security import Principal

if TYPE_CHECKING:
    from cvdeploy.serve.app import ServerState


def server(request: Request) -> ServerState:
    return request.app.state.server


def principal(request: Request) -> Principal:
    p = request.scope.get("state", {}).get("principal")
    return p if isinstance(p, Principal) else Principal.anonymous()


def request_id(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def authorize(request: Request, action: str, resource: str) -> Principal:
    """Check the request's principal may do ``action`` on ``resource``; returns the principal."""
    p = principal(request)
    server(request).security.authorize(p, action, resource)
    return p


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc).encode(), status, headers, media_type="application/json")


def parse_json(data: bytes | str, what: str = "request body") -> Any:
    """Parse JSON or answer 400 saying where it broke."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON ({exc})") from None


def watch_disconnect(request: Request) -> asyncio.Task[bool]:
    """A task that completes when the client disconnects; start it only after the body has been read."""

    async def wait() -> bool:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return True

    return asyncio.ensure_future(wait())


def version_param(request: Request) -> str | None:
    v = request.path_params.get("version")
    return v if isinstance(v, str) and v != "" else None
