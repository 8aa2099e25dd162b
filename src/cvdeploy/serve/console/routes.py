"""The console's routes and pages (see the package docstring)."""

from __future__ import annotations

from cvdeploy._deps import require

require("fastapi", "the inference server")  # one-line install hint instead of an ImportError

import base64
import datetime as _dt
import importlib.resources
import logging
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from cvdeploy.serve.console import charts
from cvdeploy.serve.errors import NotFound, ServeError
from cvdeploy.serve.protocols.http import call_of, query_document
from cvdeploy.serve.protocols.monitor import MonitorQuery, window_seconds
from cvdeploy.serve.security import AnonymousAuthenticator
from cvdeploy.serve.service import Call, InferenceService

log = logging.getLogger("cvdeploy.serve.console")

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
WINDOWS = ("5m", "15m", "1h", "24h")
REFRESH_S = 10


def _env() -> Any:
    jinja2 = require("jinja2", "the web console")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cvdeploy.serve.console", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["ms"] = lambda v: "–" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}g}"
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f} %"
    env.filters["clock"] = lambda t: _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%H:%M:%S")
    return env


class Console:
    """Renders the pages; data comes from the service (models) and the monitor (windows, samples)."""

    def __init__(self, service: InferenceService, monitor: Any) -> None:
        self.service = service
        self.monitor = monitor
        self._env: Any = None
        self._static: dict[str, bytes] = {}

    def page(self, template: str, **context: Any) -> Response:
        if self._env is None:
            self._env = _env()
        html = self._env.get_template(template).render(refresh_s=REFRESH_S, windows=WINDOWS, **context)
        return Response(html, 200, HEADERS, media_type="text/html")

    def static(self, name: str) -> Response:
        if name not in STATIC:
            raise NotFound(f"no console file {name[:60]!r}")
        if name not in self._static:
            self._static[name] = (
                importlib.resources.files("cvdeploy.serve.console") / "static" / name
            ).read_bytes()
        headers = {**HEADERS, "Cache-Control": "public, max-age=300"}
        return Response(self._static[name], 200, headers, media_type=STATIC[name])

    # ---- data ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any] | None:
        m = self.monitor
        if m is None:
            return None
        from cvdeploy.monitor.settings import format_duration
        from cvdeploy.security.db import redact

        return {"database": "temporary (pass --db to keep it)" if m.temporary else redact(m.store.db.url),
                "sample": m.config.sample, "retention": format_duration(m.config.retention_s),
                "redact": m.config.redact, "dropped": m.writer.dropped, "written": m.writer.written}  # fmt: skip

    def overview(self, call: Call, window_s: float) -> dict[str, Any]:
        rows = []
        for e in self.service.models(call):
            mv = e.versions.get(e.serving) if e.serving is not None else None
            s = self.monitor.summary(e.name, None, window_s) if self.monitor is not None else None
            rows.append({"name": e.name, "serving": e.serving, "versions": sorted(e.versions),
                         "artifact": mv.artifact.name if mv else None, "task": mv.contract.task if mv else None,
                         "summary": s})  # fmt: skip
        return {"models": rows}

    def model(self, call: Call, name: str, window_s: float) -> dict[str, Any]:
        versions = self.service.versions(call, name)
        entry = self.service.repository.models[name]
        ctx: dict[str, Any] = {"name": name, "serving": entry.serving, "versions": versions}
        if self.monitor is None:
            return ctx
        s = self.monitor.summary(name, None, window_s)
        drift = []
        for d in s.drift:
            block = (s.inputs if d.group == "input" else s.outputs).get(d.feature) or {}
            drift.append({"row": d, "chart": charts.histogram(block.get("histogram") or {})})
        ref_share = s.outputs.get("reference_class_share", {})
        classes = [{"name": c, "share": v, "reference": ref_share.get(c)} for c, v in s.class_share.items()]
        classes += [
            {"name": c, "share": 0.0, "reference": v} for c, v in ref_share.items() if c not in s.class_share
        ]
        ctx.update({"summary": s, "latency": charts.latency(s.latency_ms), "drift": drift, "classes": classes[:30],
                    "traffic": charts.timeline(s.timeline), "samples": self.monitor.samples(name, 12),
                    "alpha": self.monitor.config.alpha, "min_effect": self.monitor.config.min_effect,
                    "min_requests": self.monitor.config.min_requests})  # fmt: skip
        return ctx

    def audit(self, call: Call) -> dict[str, Any] | None:
        """The audit tail when authentication is on (None when it is off)."""
        if isinstance(self.service.security.authenticator, AnonymousAuthenticator):
            return None
        try:
            self.service.authorize(call, "read", "audit")
        except ServeError:
            return {"allowed": False, "rows": []}
        if self.monitor is None:
            return {"allowed": True, "rows": [], "problem": "no database"}
        try:
            from cvdeploy.security.audit import AuditLog
            from cvdeploy.security.serverkeys import ServerKeys

            return {
                "allowed": True,
                "rows": list(reversed(AuditLog(self.monitor.store.db, ServerKeys()).tail(15))),
            }
        except Exception as exc:  # the log is absent from this database: say so, do not fail the page
            log.warning("console: cannot read the audit log: %s", exc)
            return {"allowed": True, "rows": [], "problem": "the audit log cannot be read from this database"}

    def thumbnail(self, call: Call, sample_id: str) -> Response:
        if self.monitor is None or len(sample_id) > 64 or not sample_id.isalnum():
            raise NotFound("no such sample")
        s = self.monitor.store.sample(sample_id)
        if s is None:
            raise NotFound("no such sample")
        self.service.authorize(call, "read", f"model:{s.model}")
        return Response(annotated(s), 200, {**HEADERS, "Cache-Control": "private, max-age=3600"},
                        media_type="image/jpeg")  # fmt: skip


def annotated(s: Any, side: int = 256) -> bytes:
    """The sample's thumbnail (or, redacted, a gray canvas of the image's shape) with its boxes drawn."""
    from cvdeploy.draw import annotate
    from cvdeploy.results import Detections

    img = None
    if s.thumbnail:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(s.thumbnail), np.uint8), cv2.IMREAD_COLOR)
    w, h = s.width or side, s.height or side
    if img is None:
        scale = side / max(w, h)
        img = np.full((max(1, round(h * scale)), max(1, round(w * scale)), 3), 200, np.uint8)
    scale = img.shape[1] / w
    dets = (s.result or {}).get("detections") or []
    if dets:
        boxes = np.asarray([d["box"] for d in dets], np.float32) * scale
        res = Detections(boxes, np.asarray([d["confidence"] for d in dets], np.float32),
                         np.asarray([d["class_id"] for d in dets], np.int64), _names(dets))  # fmt: skip
        img = annotate(img, res)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else b""


def _names(dets: list[dict[str, Any]]) -> list[str]:
    """class_id → name as stored with the detections."""
    top = max(int(d["class_id"]) for d in dets)
    out = [str(i) for i in range(top + 1)]
    for d in dets:
        out[int(d["class_id"])] = str(d["class_name"])
    return out


def router(service: InferenceService, monitor: Any) -> APIRouter:
    r = APIRouter()
    console = Console(service, monitor)

    def window(request: Request) -> tuple[float, str]:
        q = query_document(request, MonitorQuery, "console request")
        if monitor is None:
            return 900.0, q.window or "15m"
        return window_seconds(q.window, monitor), q.window or monitor.config.window

    @r.get("/ui")
    async def overview(request: Request) -> Response:
        call = call_of(request)
        service.authorize(call, "read", "repository")
        seconds, label = window(request)
        data = await service.run_cpu(console.overview, call, seconds)
        audit = await service.run_cpu(console.audit, call)
        return console.page("overview.html.j2", window=label, status=console.status(), audit=audit, **data)

    @r.get("/ui/models/{name}")
    async def model(request: Request) -> Response:
        name, call = request.path_params["name"], call_of(request)
        service.model(call, name)  # read of model:NAME; 404 for an unknown model
        seconds, label = window(request)
        data = await service.run_cpu(console.model, call, name, seconds)
        return console.page("model.html.j2", window=label, status=console.status(), **data)

    @r.get("/ui/samples/{sample_id}.jpg")
    async def sample(request: Request) -> Response:
        call = call_of(request)
        return await service.run_cpu(console.thumbnail, call, request.path_params["sample_id"])

    @r.get("/ui/static/{file}")
    async def static(request: Request) -> Response:
        return console.static(request.path_params["file"])

    return r
