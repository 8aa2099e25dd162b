"""The security seam: who is asking, may they, and what happened — each answered in one place.

Every request is resolved to a :class:`Principal` by the app's :class:`Authenticator` *before*
routing (in :class:`cvdeploy.serve.middleware.RequestContext`, for HTTP), and handed to the
transport-neutral :class:`cvdeploy.serve.service.InferenceService` inside a ``Call``. The service
calls ``Security.authorize(principal, action, resource)`` before doing anything — whatever the
transport, and once per action and resource of a request, however often the adapters ask (so rate
limits and the audit log count a request once). Every state-changing action (load, unload, rollback
of a model version) is reported with ``Security.emit(Event(...))`` from
:class:`cvdeploy.serve.repository.ModelRepository`, the one place model state changes, and every
inference with a summary (principal, model, outcome, counts — never the payload) from the service.

Policy that holds whatever authorizer is plugged in (:meth:`Security.authorize`): anonymous callers
never change model state unless ``security.allow_anonymous_admin`` (``--allow-anonymous-admin``)
says so. :func:`build_security` is the one factory that turns the ``security:`` section of the
configuration (plus any seams a caller plugs in) into the app's :class:`Security`.

Without ``--db`` the seams are :class:`AnonymousAuthenticator`, :class:`AllowAll` and
:class:`LogEventSink`. With it, :class:`cvdeploy.security.setup.SecuritySetup` plugs in the real
ones behind the same three seams, without touching protocols, the service or the repository:

- **TLS** terminates in uvicorn (:mod:`cvdeploy.serve.server`, TLS ≥ 1.2); the verified client
  certificate of mutual TLS reaches the authenticator as ``Connection.tls`` (:func:`tls_extension`).
- **Authentication** (``cvdeploy.security.authn``): ``Authorization: Bearer`` API keys or JWTs, or
  the client certificate; a TOTP code in ``X-CVD-OTP``; credentials in ``Connection.query`` are
  refused. It returns a ``Principal`` (role, model scope, second factor) or raises ``Unauthorized``.
- **RBAC + rate limits** (``cvdeploy.security.authz``): an ``Authorizer`` over ``principal.roles`` ×
  :data:`ACTIONS` × resource that raises ``Unauthorized`` (401: anonymous, second factor missing),
  ``Forbidden`` (403: the role does not allow it), ``NotFound`` (404: a model outside
  ``principal.models``, answered exactly like a missing one) or ``TooManyRequests`` (429).
- **Audit** (``cvdeploy.security.audit``): an ``EventSink`` writing each :class:`Event` to an
  append-only, hash-chained, signed log.

Actions (the ``action`` argument of ``authorize`` and ``Event.action``):

    health    liveness / readiness probes          read      metadata, config, statistics, index
    infer     any inference endpoint               metrics   Prometheus /metrics
    load      load or reload a model version       unload    unload a model version
    rollback  serve the previously serving version
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from cvdeploy.serve.config import Platform, SecurityConfig
from cvdeploy.serve.errors import Forbidden, Unauthorized
from cvdeploy.serve.logs import request_id_var

__all__ = [
    "ACTIONS",
    "LOOPBACK_HOSTS",
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
    "build_security",
    "exposure",
    "tls_extension",
]

Action = Literal["health", "read", "infer", "metrics", "load", "unload", "rollback"]
ACTIONS: tuple[str, ...] = ("health", "read", "infer", "metrics", "load", "unload", "rollback")
STATE_CHANGES: tuple[str, ...] = ("load", "unload", "rollback")

LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")

events_log = logging.getLogger("cvdeploy.serve.events")
log = logging.getLogger("cvdeploy.serve")


@dataclass(frozen=True)
class Principal:
    """Who made a request. ``kind`` says how they were identified (``anonymous``, ``system``, ``api-key``,
    ``jwt``, ``mtls``); ``models`` the models they are limited to (None: every model); ``mfa`` how a
    second factor was shown for this request (``totp``, ``jwt-amr``; None: not shown); ``attributes``
    anything else the authenticator knows (``source``: the peer address the rate limits count)."""

    id: str
    kind: str = "anonymous"
    roles: frozenset[str] = frozenset()
    attributes: Mapping[str, str] = field(default_factory=dict)
    models: frozenset[str] | None = None
    mfa: str | None = None

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

    def may_see(self, model: str) -> bool:
        """Whether ``model`` is inside this principal's scope (what indexes and listings show it)."""
        return self.models is None or model in self.models


@dataclass(frozen=True)
class Connection:
    """What an authenticator may look at: lower-cased headers, the peer address, the TLS details and the
    raw URL query string (where credentials are refused: URLs end up in logs and browser histories)."""

    headers: Mapping[str, str]
    client: tuple[str, int] | None = None
    scheme: str = "http"
    tls: Mapping[str, Any] | None = None  # the ASGI "tls" extension (client certificate chain) when present
    query: str = ""

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Connection:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        client = scope.get("client")
        tls = (scope.get("extensions") or {}).get("tls")
        query = scope.get("query_string") or b""
        return cls(
            headers, tuple(client) if client else None, scope.get("scheme", "http"), tls,
            query.decode("latin-1") if isinstance(query, bytes) else str(query),
        )  # fmt: skip


def tls_extension(ssl_object: Any) -> dict[str, Any] | None:
    """The ASGI ``tls`` extension's client-certificate part from a server-side ``ssl.SSLObject``.

    For transports that do not fill ``scope["extensions"]["tls"]`` themselves (uvicorn does not):
    :mod:`cvdeploy.serve.server` passes ``transport.get_extra_info("ssl_object")`` here once per
    connection. None when the peer presented no (verified) certificate.
    """
    import ssl

    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    return {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)], "tls_version": ssl_object.version()}


@runtime_checkable
class Authenticator(Protocol):
    """Resolves a connection to a principal, or raises :class:`cvdeploy.serve.errors.Unauthorized`."""

    async def authenticate(self, conn: Connection) -> Principal: ...


@runtime_checkable
class Authorizer(Protocol):
    """Allows an action on a resource (``model:NAME[:VERSION]``, ``server``, ``repository``) or raises:
    ``Unauthorized`` (401: who are you? — anonymous, or a second factor missing), ``Forbidden`` (403:
    not allowed), ``NotFound`` (404: a model outside the principal's scope, with the message of
    :func:`cvdeploy.serve.errors.unknown_model`) or ``TooManyRequests`` (429: rate limited)."""

    def authorize(self, principal: Principal, action: str, resource: str) -> None: ...


@dataclass(frozen=True)
class Event:
    """One state change (or attempt), denial, failed authentication or inference summary: who, what, on
    which resource, and whether it worked. ``request_id`` defaults to that of the request being handled."""

    action: str
    resource: str
    principal: str
    outcome: Literal["success", "failure"]
    details: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = field(default_factory=lambda: request_id_var.get())
    time: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class EventSink(Protocol):
    """Receives every event: state changes, denials, failed authentications, inference summaries.
    Must not raise and must return quickly (it is called on the request path)."""

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
    """Writes each event as one JSON line on the ``cvdeploy.serve.events`` logger. Inference summaries
    go at DEBUG: the access log already has a line per request (the audit log keeps every one)."""

    def emit(self, event: Event) -> None:
        if event.action == "infer":
            level = logging.DEBUG
        else:
            level = logging.INFO if event.outcome == "success" else logging.WARNING
        if not events_log.isEnabledFor(level):
            return
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
    """The three seams and the policy around them; the app holds one and every request goes through it.

    ``allowed_hosts`` holds lower-case host names (no port); ``"*"`` allows any ``Host``.
    """

    authenticator: Authenticator = field(default_factory=AnonymousAuthenticator)
    authorizer: Authorizer = field(default_factory=AllowAll)
    events: EventSink = field(default_factory=LogEventSink)
    allow_anonymous_admin: bool = False
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS

    async def authenticate(self, conn: Connection) -> Principal:
        return await self.authenticator.authenticate(conn)

    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        """Raise ``Forbidden`` unless ``principal`` may do ``action`` on ``resource``; ``Unauthorized``
        when an anonymous caller would change model state and that is not explicitly allowed."""
        self.authorizer.authorize(principal, action, resource)
        if action in STATE_CHANGES and principal.is_anonymous and not self.allow_anonymous_admin:
            raise Unauthorized(
                f"anonymous callers may not {action} models; authenticate, or start the server with "
                "--allow-anonymous-admin (security.allow_anonymous_admin) for local experiments"
            )

    def visible(self, principal: Principal, models: Iterable[str]) -> list[str]:
        """The models of ``models`` that ``principal`` may know of (indexes, listings), sorted."""
        return sorted(m for m in models if principal.may_see(m))

    def host_allowed(self, host: str | None) -> bool:
        """Whether a ``Host`` header value (``name[:port]``, ``[v6]:port``) names this server."""
        if "*" in self.allowed_hosts:
            return True
        name = host_name(host)
        return name is not None and name in self.allowed_hosts

    def emit(self, event: Event) -> None:
        """The one place every state change is reported."""
        self.events.emit(event)


def host_name(host: str | None) -> str | None:
    """``"Example.COM:8000"`` → ``"example.com"``, ``"[::1]:80"`` → ``"::1"``; None when malformed."""
    if not host:
        return None
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end < 0 or (h[end + 1 :] and not h[end + 1 :].startswith(":")):
            return None
        return h[1:end] or None
    name, _, port = h.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure(host: str, platform: str, authenticated: bool, tls: bool, insecure: bool) -> str | None:
    """The secure-defaults rule for where a server listens: None when fine, else a warning to print.

    Binding anything but the loopback without both authentication (``--db``) and TLS is refused
    (``ConfigError``) unless ``insecure``, which always earns a warning. A cloud platform (SageMaker,
    Vertex AI) binds 0.0.0.0 inside its container behind the platform's endpoint, which terminates
    TLS and authenticates callers (IAM): allowed, and said.
    """
    from cvdeploy.errors import ConfigError

    where = host or "all addresses"
    missing = [w for w, ok in (("authentication (--db)", authenticated), ("TLS (--tls-cert/--tls-key)", tls))
               if not ok]  # fmt: skip
    if insecure:
        lacking = f" without {' and '.join(missing)}" if missing else ""
        return f"--insecure: listening on {where}{lacking}; only use it on a network you trust"
    if not missing or is_loopback(host):
        return None
    if platform != "local":
        return (
            f"listening on {where} for {platform} without {' and '.join(missing)}: the platform's endpoint in "
            "front of this container terminates TLS and authenticates callers"
        )
    raise ConfigError(
        f"refusing to listen on {where} without {' and '.join(missing)}: anyone who can reach it could use "
        "it; add them, bind 127.0.0.1, or pass --insecure if this network is trusted"
    )


def build_security(
    config: SecurityConfig | None = None, platform: Platform | None = None, seams: Security | None = None
) -> Security:
    """The one factory: the ``security:`` configuration (and the bind address) plus the seams a caller
    plugs in (authenticator, authorizer, event sink of ``seams``) → the app's ``Security``.

    ``allowed_hosts=None`` means loopback names plus the bind address; a wildcard bind (0.0.0.0, ::)
    or a cloud platform, whose front end names the container however it likes, allows any host.
    """
    cfg = config or SecurityConfig()
    base = seams or Security()
    allowed_hosts = cfg.allowed_hosts
    bind_host = platform.host if platform is not None else "127.0.0.1"
    cloud = platform is not None and platform.kind != "local"
    if allowed_hosts is not None:
        hosts = tuple(sorted({h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}))
    elif cloud or bind_host in _WILDCARD_BINDS:
        hosts = ("*",)
        log.warning(
            "listening on %s: any Host header is answered; set security.allowed_hosts to the names "
            "clients use, to guard against DNS rebinding",
            bind_host or "all addresses",
        )
    else:
        hosts = tuple(sorted({*LOOPBACK_HOSTS, bind_host.lower().strip("[]")}))
    return Security(base.authenticator, base.authorizer, base.events, cfg.allow_anonymous_admin, hosts)
