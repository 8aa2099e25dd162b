"""The ASGI application: server state, routers, error answers and the start/stop life cycle.

    create_app(bundles, config)  →  FastAPI app
        RequestContext middleware        request id, principal, body limit, metrics, plain 500
        protocols.v2                     Open Inference Protocol v2 (+ repository, statistics)
        protocols.image                  /v1/models/{name}/detect | classify | predict
        protocols.cloud                  SageMaker /ping, /invocations; Vertex AI routes
        GET /metrics                     Prometheus

Bundles are loaded (and verified) synchronously when the app is created, so a bad bundle fails
before the server listens; batchers start with the app's lifespan on uvicorn's loop.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy import __version__
from cvdeploy.errors import ConfigError, InputError
from cvdeploy.serve.batching import BatcherClosed, ClientGone
from cvdeploy.serve.config import Platform, ServeConfig, resolve_platform
from cvdeploy.serve.errors import ServeError
from cvdeploy.serve.logs import run_with_context
from cvdeploy.serve.metrics import MetricsEventSink, ServeMetrics
from cvdeploy.serve.middleware import RequestContext
from cvdeploy.serve.protocols import cloud, image, v2
from cvdeploy.serve.protocols.common import authorize, json_response
from cvdeploy.serve.repository import ModelRepository
from cvdeploy.serve.security import FanoutEventSink, Security

log = logging.getLogger("cvdeploy.serve")
T = TypeVar("T")


class ServerState:
    """Everything a request handler needs: config, platform, repository, metrics, security, workers."""

    def __init__(
        self, config: ServeConfig, platform: Platform, security: Security, metrics: ServeMetrics
    ) -> None:
        self.config = config
        self.platform = platform
        self.security = security
        self.metrics = metrics
        self.repository = ModelRepository(config, security, metrics)
        self.workers: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self.workers = ThreadPoolExecutor(
            max_workers=self.config.server.workers, thread_name_prefix="cvdeploy-cpu"
        )
        await self.repository.start()

    async def stop(self) -> None:
        await self.repository.stop()
        if self.workers is not None:
            self.workers.shutdown(wait=False)

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (image decode, preprocess, decode, big JSON) in a worker thread, off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, run_with_context(fn, *args))


def create_app(
    bundles: Sequence[str | Path] = (),
    config: ServeConfig | None = None,
    *,
    platform: Platform | None = None,
    security: Security | None = None,
    artifact: str | None = None,
) -> FastAPI:
    """Load ``bundles`` (plus any ``models.NAME.path`` of the config) and build the app serving them.

    ``artifact`` overrides every model's artifact; ``security`` plugs authentication, authorization
    and the event sink in (default: anonymous, allow all, JSON log lines).
    """
    cfg = config or ServeConfig()
    if artifact:
        cfg = cfg.with_overrides(artifact=artifact)
    plat = platform or resolve_platform(None, cfg.server)
    metrics = ServeMetrics()
    base = security or Security()  # the caller's object is left as it is: the metrics sink joins a copy
    sec = dataclasses.replace(base, events=FanoutEventSink([base.events, MetricsEventSink(metrics)]))
    state = ServerState(cfg, plat, sec, metrics)
    specs = list(bundles) + [m.path for m in cfg.models.values() if m.path]
    if not specs:
        raise ConfigError(
            "no bundle to serve: name at least one bundle folder (or zoo:n), or models.NAME.path"
        )
    for spec in specs:
        state.repository.add(spec)
    unknown = sorted(set(cfg.models) - set(state.repository.models))
    if unknown:
        raise ConfigError(
            f"the config sets up model {unknown[0]!r} but no bundle of that name is served "
            f"(served: {', '.join(sorted(state.repository.models))}); a model's name is its bundle's name"
        )
    if cfg.server.default_model and cfg.server.default_model not in state.repository.models:
        raise ConfigError(f"server.default_model {cfg.server.default_model!r} is not among the served models")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        log.info("serving %s", ", ".join(f"{n} v{e.serving}" for n, e in state.repository.models.items()))
        try:
            yield
        finally:
            await state.stop()

    docs = cfg.server.docs
    app = FastAPI(
        title="cvdeploy",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.server = state
    _install_error_handlers(app)
    app.include_router(v2.router)
    app.include_router(image.router)
    app.include_router(cloud.router)
    if plat.kind == "vertex" and plat.predict_route and plat.health_route:
        cloud.mount_vertex(app, plat.predict_route, plat.health_route)
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    app.add_middleware(RequestContext, server=state)
    return app


async def _metrics(request: Request) -> Response:
    authorize(request, "metrics", "server")
    m = request.app.state.server.metrics
    return Response(m.render(), media_type=m.content_type)


def _install_error_handlers(app: FastAPI) -> None:
    """4xx answers carry the user's mistake (``ServeError``, ``InputError``); anything else reaches the
    middleware, which logs it and answers a plain 500."""

    async def serve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServeError)
        return json_response({"error": exc.message}, exc.status, exc.headers)

    async def user_error(request: Request, exc: Exception) -> Response:
        return json_response({"error": str(exc)}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return json_response({"error": detail}, exc.status_code, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return json_response({"error": f"invalid request: {where}: {first.get('msg', 'invalid')}"}, 400)

    async def closed(request: Request, exc: Exception) -> Response:
        msg = "the model version was unloaded while this request waited; retry"
        return json_response({"error": msg}, 503,
                             {"Retry-After": "1"})  # fmt: skip

    async def gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    app.add_exception_handler(ServeError, serve_error)
    app.add_exception_handler(InputError, user_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(BatcherClosed, closed)
    app.add_exception_handler(ClientGone, gone)
