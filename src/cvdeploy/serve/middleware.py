"""The request middleware: request id, principal, body limit, metrics, access log, and the plain 500.

It is a pure ASGI middleware (no per-request task or body copy) and runs for every HTTP request
before routing:

1. a request id — the client's ``X-Request-ID`` when it is sane, else a new one — is put in the
   logging context and echoed on the response;
2. the :class:`~cvdeploy.serve.security.Authenticator` resolves the connection to a principal,
   stored as ``scope["state"]["principal"]`` (401 when it refuses);
3. a body over ``limits.max_body_bytes`` is refused with 413, from ``Content-Length`` before it
   is read, or while it streams in;
4. any exception escaping the app is logged with the request id and answered as a plain 500
   that reveals nothing of the cause.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from cvdeploy.serve.errors import PayloadTooLarge, ServeError
from cvdeploy.serve.logs import request_id_var
from cvdeploy.serve.security import Connection

if TYPE_CHECKING:
    from cvdeploy.serve.app import ServerState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("cvdeploy.serve.access")
errlog = logging.getLogger("cvdeploy.serve")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def send_json(send: Send, status: int, doc: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(doc).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    """Wraps the FastAPI app; see the module docstring for what it does, in order."""

    def __init__(self, app: ASGIApp, server: ServerState) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = scope.get("headers") or []
        rid, length = None, None
        for k, v in headers:
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _SANE_ID.match(cand) else None
            elif k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = -1
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        limit = self.server.config.limits.max_body_bytes
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body over the limit of {limit:,} bytes")
            return message

        try:
            if length is not None and length < 0:
                await send_json(send_wrapper, 400, {"error": "invalid Content-Length header"}, [])
                return
            if length is not None and length > limit:
                await send_json(
                    send_wrapper,
                    413,
                    {"error": f"request body of {length:,} bytes is over the limit of {limit:,} bytes"},
                    [(b"connection", b"close")],
                )  # fmt: skip
                return
            try:
                state["principal"] = await self.server.security.authenticate(Connection.from_scope(scope))
            except ServeError as exc:
                hdrs = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
                await send_json(send_wrapper, exc.status, {"error": exc.message}, hdrs)
                return
            await self.app(scope, receive_limited, send_wrapper)
        except Exception:
            errlog.exception(
                "internal error handling %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"request_id": rid},
            )
            if not status["started"]:
                await send_json(send_wrapper, 500, {"error": "internal server error", "request_id": rid}, [])
        finally:
            request_id_var.reset(token)
            self._record(scope, status["code"], time.perf_counter() - start, rid)

    def _record(self, scope: Scope, code: int, seconds: float, rid: str) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        name = (scope.get("path_params") or {}).get("name")
        model = name if name in self.server.repository.models else "-"
        self.server.metrics.observe_request(endpoint, model, code, seconds)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %d", scope.get("method"), scope.get("path"), code,
                extra={"fields": {
                    "request_id": rid, "method": scope.get("method"), "path": scope.get("path"),
                    "status": code,
                    "duration_ms": round(seconds * 1000, 3), "model": model,
                    "principal": getattr((scope.get("state") or {}).get("principal"), "id", None),
                }},
            )  # fmt: skip
