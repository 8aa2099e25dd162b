"""The security seam: who is asking, may they, and what changed — each answered in one place.

Every request is resolved to a :class:`Principal` by the app's :class:`Authenticator` *before*
routing (in :class:`cvdeploy.serve.middleware.RequestContext`), and stored on the ASGI scope as
``scope["state"]["principal"]``. Every handler then calls
``Security.authorize(principal, action, resource)`` before doing anything, and every
state-changing action (load, unload, rollback of a model version) is reported with
``Security.emit(Event(...))`` from :class:`cvdeploy.serve.repository.ModelRepository` — the one
place model state changes.

Today the server is anonymous and permissive: :class:`AnonymousAuthenticator`, :class:`AllowAll`
and :class:`LogEventSink`. The next round plugs in behind the same three seams, without touching
handlers or the repository:

- **TLS** terminates in uvicorn (``ssl_certfile``/``ssl_keyfile``/``ssl_ca_certs``); the client
  certificate, when mutual TLS is used, reaches the authenticator as ``Connection.tls``.
- **Authentication**: an ``Authenticator`` reading ``Connection.headers`` (``Authorization: Bearer``,
  API keys) or the client certificate; it returns a ``Principal`` or raises ``Unauthorized``.
- **RBAC**: an ``Authorizer`` mapping ``principal.roles`` × :data:`ACTIONS` × resource to allow,
  or raising ``Forbidden``.
- **Audit**: an ``EventSink`` writing each :class:`Event` to an append-only, tamper-evident log.

Actions (the ``action`` argument of ``authorize`` and ``Event.action``):

    health    liveness / readiness probes          read      metadata, config, statistics, index
    infer     any inference endpoint               metrics   Prometheus /metrics
    load      load or reload a model version       unload    unload a model version
    rollback  serve the previously serving version
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from cvdeploy.serve.errors import Forbidden

__all__ = [
    "ACTIONS",
    "STATE_CHANGES",
    "AllowAll",
    "AnonymousAuthenticator",
    "Authenticator",
    "Authorizer",
    "Connection",
    "DenyActions",
    "Event",
    "EventSink",
    "FanoutEventSink",
    "LogEventSink",
    "Principal",
    "RecordingEventSink",
    "Security",
]

Action = Literal["health", "read", "infer", "metrics", "load", "unload", "rollback"]
ACTIONS: tuple[str, ...] = ("health", "read", "infer", "metrics", "load", "unload", "rollback")
STATE_CHANGES: tuple[str, ...] = ("load", "unload", "rollback")

events_log = logging.getLogger("cvdeploy.serve.events")


@dataclass(frozen=True)
class Principal:
    """Who made a request. ``kind`` says how they were identified (``anonymous``, ``system``, ...)."""

    id: str
    kind: str = "anonymous"
    roles: frozenset[str] = frozenset()
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def anonymous(cls) -> Principal:
        return cls("anonymous", "anonymous")

    @classmethod
    def system(cls) -> Principal:
        """The server itself, e.g. loading the models named on the command line at start-up."""
        return cls("system", "system", frozenset({"admin"}))

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"


@dataclass(frozen=True)
class Connection:
    """What an authenticator may look at: lower-cased headers, the peer address and the TLS details."""

    headers: Mapping[str, str]
    client: tuple[str, int] | None = None
    scheme: str = "http"
    tls: Mapping[str, Any] | None = None  # the ASGI "tls" extension (client certificate chain) when present

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Connection:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        client = scope.get("client")
        tls = (scope.get("extensions") or {}).get("tls")
        return cls(headers, tuple(client) if client else None, scope.get("scheme", "http"), tls)


@runtime_checkable
class Authenticator(Protocol):
    """Resolves a connection to a principal, or raises :class:`cvdeploy.serve.errors.Unauthorized`."""

    async def authenticate(self, conn: Connection) -> Principal: ...


@runtime_checkable
class Authorizer(Protocol):
    """Allows an action on a resource (``model:NAME[:VERSION]``, ``server``, ...) or raises Forbidden."""

    def authorize(self, principal: Principal, action: str, resource: str) -> None: ...


@dataclass(frozen=True)
class Event:
    """One state change (or attempt): who, what, on which resource, and whether it worked."""

    action: str
    resource: str
    principal: str
    outcome: Literal["success", "failure"]
    details: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    time: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class EventSink(Protocol):
    """Receives every state-changing event. Must not raise and must return quickly."""

    def emit(self, event: Event) -> None: ...


class AnonymousAuthenticator:
    """Everyone is :meth:`Principal.anonymous` — the behaviour until authentication is configured."""

    async def authenticate(self, conn: Connection) -> Principal:
        return Principal.anonymous()


class AllowAll:
    """Permits every action — the behaviour until RBAC is configured."""

    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        return None


class DenyActions:
    """Refuses the listed actions to everyone (e.g. a read-only server that may not load models)."""

    def __init__(self, actions: Sequence[str]) -> None:
        self.actions = frozenset(actions)

    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        if action in self.actions:
            raise Forbidden(f"{principal.id} may not {action} {resource}")


class LogEventSink:
    """Writes each event as one JSON line on the ``cvdeploy.serve.events`` logger."""

    def emit(self, event: Event) -> None:
        level = logging.INFO if event.outcome == "success" else logging.WARNING
        events_log.log(
            level, "%s %s %s", event.action, event.resource, event.outcome, extra={"fields": event.to_dict()}
        )


class RecordingEventSink:
    """Keeps events in memory (tests, and a place to look from a debugger)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


class FanoutEventSink:
    """Sends each event to several sinks; one failing sink does not stop the others."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # an audit sink must never break serving
                events_log.exception("event sink %s failed", type(sink).__name__)


@dataclass
class Security:
    """The three seams together; the app holds one and every request goes through it."""

    authenticator: Authenticator = field(default_factory=AnonymousAuthenticator)
    authorizer: Authorizer = field(default_factory=AllowAll)
    events: EventSink = field(default_factory=LogEventSink)

    async def authenticate(self, conn: Connection) -> Principal:
        return await self.authenticator.authenticate(conn)

    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        """Raise ``Forbidden`` unless ``principal`` may do ``action`` on ``resource``."""
        self.authorizer.authorize(principal, action, resource)

    def emit(self, event: Event) -> None:
        """The one place every state change is reported."""
        self.events.emit(event)
