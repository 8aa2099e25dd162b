"""The ASGI application: the inference service, the protocol adapters handed to it, error answers.

    create_app(bundles, config)  →  FastAPI app  (app.state.service: the InferenceService)
        RequestContext middleware        request id, Host check, header limits, principal, body limit
                                         and deadline, metrics, plain 500
        protocols.v2                     Open Inference Protocol v2: inference, metadata, health, stats
        protocols.repository_api         the v2 repository extension: index, load, unload, rollback
        protocols.image                  /v1/models/{name}/detect | segment | pose | obb | classify | predict
        protocols.cloud                  SageMaker /ping, /invocations; Vertex AI routes
        protocols.monitor                /v1/models/{name}/monitor (with a Monitor: drift, latency, errors)
        console                          /ui, the web console
        GET /metrics                     Prometheus

Bundles are loaded (and verified) synchronously when the app is created, so a bad bundle fails
before the server listens; batchers start with the app's lifespan on the server's loop. No route
redirects (a redirect would be built from the client's ``Host``).
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from cvdeploy import __version__
from cvdeploy.errors import ConfigError, CvdeployError
from cvdeploy.serve.batching import BatcherClosed, ClientGone
from cvdeploy.serve.config import Platform, ServeConfig, resolve_platform
from cvdeploy.serve.console import routes as console
from cvdeploy.serve.errors import ServeError
from cvdeploy.serve.metrics import MetricsEventSink, ServeMetrics
from cvdeploy.serve.middleware import RequestContext
from cvdeploy.serve.protocols import cloud, image, repository_api, v2
from cvdeploy.serve.protocols import monitor as monitor_api
from cvdeploy.serve.protocols.http import call_of, json_response
from cvdeploy.serve.security import FanoutEventSink, Security, build_security
from cvdeploy.serve.service import InferenceService

if TYPE_CHECKING:
    from cvdeploy.monitor.monitor import Monitor

log = logging.getLogger("cvdeploy.serve")


def create_app(
    bundles: Sequence[str | Path] = (),
    config: ServeConfig | None = None,
    *,
    platform: Platform | None = None,
    security: Security | None = None,
    artifact: str | None = None,
    monitor: Monitor | None = None,
) -> FastAPI:
    """Load ``bundles`` (plus any ``models.NAME.path`` of the config) and build the app serving them.

    ``artifact`` overrides every model's artifact; ``security`` plugs authentication, authorization
    and the event sink in (default: anonymous, allow all but anonymous state changes, JSON log
    lines); the ``security:`` section of the config sets the policy around them. ``monitor``
    (:meth:`cvdeploy.monitor.Monitor.open`) watches every inference; it starts and stops with the app.
    """
    cfg = config or ServeConfig()
    if artifact:
        cfg = cfg.with_overrides(artifact=artifact)
    plat = platform or resolve_platform(None, cfg.server)
    metrics = ServeMetrics()
    sec = build_security(cfg.security, plat, security)  # the caller's object is left as it is
    service = InferenceService(cfg, plat, sec, metrics)
    sec.events = FanoutEventSink(
        [sec.events, MetricsEventSink(metrics, lambda m: m in service.repository.models)]
    )
    specs = list(bundles) + [m.path for m in cfg.models.values() if m.path]
    if not specs:
        raise ConfigError(
            "no bundle to serve: name at least one bundle folder (or zoo:n), or models.NAME.path"
        )
    for spec in specs:
        service.add(spec)
    served = service.repository.models
    unknown = sorted(set(cfg.models) - set(served))
    if unknown:
        raise ConfigError(
            f"the config sets up model {unknown[0]!r} but no bundle of that name is served "
            f"(served: {', '.join(sorted(served))}); a model's name is its bundle's name"
        )
    if cfg.server.default_model and cfg.server.default_model not in served:
        raise ConfigError(f"server.default_model {cfg.server.default_model!r} is not among the served models")

    if monitor is not None:
        monitor.attach(service.repository, metrics.registry)
        service.observer = monitor

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if monitor is not None:
            monitor.start()
        log.info("serving %s", ", ".join(f"{n} v{e.serving}" for n, e in served.items()))
        try:
            yield
        finally:
            await service.stop()
            if monitor is not None:
                monitor.stop()

    docs = cfg.server.docs
    app = FastAPI(
        title="cvdeploy",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        redirect_slashes=False,
    )
    app.state.service = service
    app.state.monitor = monitor
    _install_error_handlers(app)
    for protocol in (v2, repository_api, image, cloud):
        app.include_router(protocol.router(service))
    app.include_router(monitor_api.router(service, monitor))
    app.include_router(console.router(service, monitor))
    if plat.kind == "vertex" and plat.predict_route and plat.health_route:
        cloud.mount_vertex(app, service, plat.predict_route, plat.health_route)

    async def prometheus(request: Request) -> Response:
        return Response(service.metrics_text(call_of(request)), media_type=metrics.content_type)

    app.add_api_route("/metrics", prometheus, methods=["GET"])
    app.add_middleware(RequestContext, service=service)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """4xx answers carry the user's mistake (``ServeError`` with its status; any other ``CvdeployError``
    is 400); anything else reaches the middleware, which logs it and answers a plain 500."""

    async def serve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServeError)
        headers = dict(exc.headers)
        if exc.status in (408, 413):  # the rest of the body may still be on its way: do not reuse
            headers.setdefault("Connection", "close")
        return json_response({"error": exc.message}, exc.status, headers)

    async def user_error(request: Request, exc: Exception) -> Response:
        return json_response({"error": str(exc)}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path[:200]}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path[:200]}"
        return json_response({"error": detail}, exc.status_code, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return json_response({"error": f"invalid request: {where}: {first.get('msg', 'invalid')}"}, 400)

    async def closed(request: Request, exc: Exception) -> Response:
        msg = "the model version was unloaded while this request waited; retry"
        return json_response({"error": msg}, 503, {"Retry-After": "1"})

    async def gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    app.add_exception_handler(ServeError, serve_error)
    app.add_exception_handler(CvdeployError, user_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(BatcherClosed, closed)
    app.add_exception_handler(ClientGone, gone)
    app.add_exception_handler(ClientDisconnect, gone)
