"""The request middleware: request id, request-head checks, principal, body limits, metrics, the plain 500.

It is a pure ASGI middleware (no per-request task or body copy) and runs for every HTTP request
before routing:

1. a request id — the client's ``X-Request-ID`` when it is sane, else a new one — is put in the
   logging context and echoed on the response;
2. the request head is checked: HTTP/1.0 or 1.1 only (400), at most ``limits.max_headers`` fields
   (431), a ``Host`` in ``security.allowed_hosts`` (421: a DNS-rebinding page in a browser names
   its own host), a sane ``Content-Length`` (400) within ``limits.max_body_bytes`` (413);
3. the :class:`~cvdeploy.serve.security.Authenticator` resolves the connection to a principal,
   stored as ``scope["state"]["principal"]`` (401 when it refuses, 429 while the source address is
   slowed down after failed authentications). Health probes (``GET /v2/health/live|ready``,
   ``/ping``, Vertex AI's health route) are not authenticated at all: they carry no credentials,
   reveal nothing but liveness, and must keep answering an orchestrator whose address shares a NAT
   with a client being slowed down. ``scope["state"]["authorized"]`` is the request's ledger of
   what the service has already authorized (so each is checked, rate limited and audited once);
4. the body is bounded while it streams in: over ``limits.max_body_bytes`` → 413, not complete
   within ``limits.body_timeout_s`` → 408 (the HTTP server bounds the head the same way);
5. any exception escaping the app is logged with the request id and answered as a plain 500
   that reveals nothing of the cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from cvdeploy.serve.errors import (
    BadRequest,
    HeadersTooLarge,
    HTTPVersion,
    MisdirectedHost,
    PayloadTooLarge,
    RequestTimeout,
    ServeError,
)
from cvdeploy.serve.logs import request_id_var
from cvdeploy.serve.security import Connection, Principal

if TYPE_CHECKING:
    from cvdeploy.serve.service import InferenceService

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

    def __init__(self, app: ASGIApp, service: InferenceService) -> None:
        self.app = app
        self.service = service
        health = service.platform.health_route
        self.probes = frozenset(
            {"/v2/health/live", "/v2/health/ready", "/ping", *([health] if health else [])}
        )

    async def principal(self, scope: Scope) -> Principal:
        """The caller of this request (see the module docstring, step 3)."""
        if scope.get("method") in ("GET", "HEAD") and scope.get("path") in self.probes:
            client = scope.get("client")
            return Principal(
                "anonymous", "anonymous", frozenset(), {"source": client[0] if client else "unknown"}
            )
        return await self.service.security.authenticate(Connection.from_scope(scope))

    def check_head(self, scope: Scope) -> int | None:
        """Refuse a request head this server does not take (raises a ServeError); → Content-Length."""
        limits, security = self.service.config.limits, self.service.security
        if scope.get("http_version") not in ("1.0", "1.1"):
            raise HTTPVersion(f"HTTP/{str(scope.get('http_version'))[:8]} is not supported; use HTTP/1.1")
        headers = scope.get("headers") or []
        if len(headers) > limits.max_headers:
            raise HeadersTooLarge(f"{len(headers)} header fields are over the limit of {limits.max_headers}")
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > limits.max_header_bytes:  # h11 bounds a head that arrives in pieces; this, one that did not
            raise HeadersTooLarge(
                f"{size:,} bytes of headers are over the limit of {limits.max_header_bytes:,}"
            )
        host, length, lengths = None, None, 0
        for k, v in headers:
            if k == b"host":
                if host is not None:
                    raise BadRequest("more than one Host header")
                host = v.decode("latin-1")
            elif k == b"content-length":
                lengths += 1
                raw = v.strip()
                if not raw.isdigit() or len(raw) > 18 or lengths > 1:
                    raise BadRequest("invalid Content-Length header")
                length = int(raw)
        if not security.host_allowed(host):
            raise MisdirectedHost(
                f"this server does not answer to Host {str(host)[:80]!r}; "
                "allowed names are set with security.allowed_hosts (--allowed-host)"
            )
        if length is not None and length > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {length:,} bytes is over the limit of {limits.max_body_bytes:,} bytes"
            )
        return length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = None
        for k, v in scope.get("headers") or []:
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _SANE_ID.match(cand) else None
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["authorized"] = set()
        rid_header = (b"x-request-id", rid.encode())
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        limits = self.service.config.limits
        limit = limits.max_body_bytes
        deadline = time.monotonic() + limits.body_timeout_s
        seen, body_done = 0, False

        async def receive_limited() -> Message:
            nonlocal seen, body_done
            if body_done:  # e.g. waiting for a disconnect while the request is served: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within {limits.body_timeout_s:g} s (limits.body_timeout_s)"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body over the limit of {limit:,} bytes")
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        try:
            try:
                self.check_head(scope)
            except ServeError as exc:
                close = [(b"connection", b"close")] if exc.status in (400, 413, 431) else []
                await send_json(send_wrapper, exc.status, {"error": exc.message}, close)
                return
            try:
                state["principal"] = await self.principal(scope)
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
        model = name if isinstance(name, str) and name in self.service.repository.models else "-"
        self.service.metrics.observe_request(endpoint, model, code, seconds)
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
