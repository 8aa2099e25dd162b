"""The monitoring API, thin over the service and the :class:`~cvdeploy.monitor.Monitor`.

    GET /v1/models/{name}/monitor[?window=15m]   the model's rolling window: traffic, errors, latency
                                                 percentiles per stage, input and output statistics,
                                                 and drift per feature against the bundle's profile

Reading it is a ``read`` of ``model:NAME`` (the viewer role, when authentication is on). The
window is ``monitor.window`` (15m) unless given; at most the retention (older rows are gone).
"""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.errors import ConfigError
from cvdeploy.serve.errors import BadRequest, NotFound
from cvdeploy.serve.protocols.http import call_of, json_response, query_document
from cvdeploy.serve.service import InferenceService

OFF = "monitoring is off on this server; start it with 'cvdeploy serve ... --db URL' to monitor models"


class MonitorQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Annotated[str, Field(max_length=32)] | None = None


def window_seconds(text: str | None, monitor: Any) -> float:
    """A ``window`` query value → seconds (400 when it is not a duration or longer than the retention)."""
    from cvdeploy.monitor.settings import format_duration, parse_duration

    if text is None:
        return float(monitor.config.window_s)
    try:
        seconds = parse_duration(text, "window")
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    keep = monitor.config.retention_s
    if seconds > keep:
        raise BadRequest(
            f"window {text!r} is longer than the retention ({format_duration(keep)}): nothing older is kept"
        )
    return seconds


def router(service: InferenceService, monitor: Any) -> APIRouter:
    r = APIRouter()

    @r.get("/v1/models/{name}/monitor")
    async def model_monitor(request: Request) -> Response:
        name, call = request.path_params["name"], call_of(request)
        service.model(call, name)  # read of model:NAME; 404 for an unknown model
        q = query_document(request, MonitorQuery, "monitor request")
        if monitor is None:
            raise NotFound(OFF)
        seconds = window_seconds(q.window, monitor)
        summary = await service.run_cpu(monitor.summary, name, None, seconds)
        if seconds == monitor.config.window_s and monitor.gauges is not None:
            monitor.gauges.update(summary)  # the gauges show the rolling window: keep them as fresh
        return json_response(summary.to_dict())

    return r
