"""Structured JSON logs for the server, each line carrying the request id of the request it concerns.

The request id lives in a context variable set by the request middleware, so any log call made
while handling a request (in the event loop, or in a worker thread started with
:func:`run_with_context`) is tagged without passing the id around. Extra structured fields go in
``extra={"fields": {...}}``.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cvdeploy_request_id", default=None
)

log = logging.getLogger("cvdeploy.serve")
T = TypeVar("T")

_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "fields",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, and any structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            doc["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and key not in doc and key != "request_id":
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    level: str = "info", fmt: str = "json", stream: IO[str] | None = None
) -> logging.Handler:
    """Send ``cvdeploy`` and uvicorn's error logs through one handler (JSON by default); returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    lvl = getattr(logging, level.upper(), logging.INFO)
    for name in ("cvdeploy", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(lvl)
        lg.propagate = False
    return handler


def run_with_context(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``fn(*args)`` bound to the current context (request id), for ``loop.run_in_executor``."""
    ctx = contextvars.copy_context()
    return lambda: ctx.run(fn, *args)
