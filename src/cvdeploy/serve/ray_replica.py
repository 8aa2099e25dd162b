"""What one Ray Serve replica runs — the regular app — and the deployment's options; no Ray import here.

    RayAppArgs                 what every replica is built from (the ``args:`` of a Serve config)
    replica_app(args, id)      the app of :func:`cvdeploy.serve.app.create_app`, adapted to replication
    deployment_options(args)   replicas or autoscaling, CPUs per replica, request bounds

A replica runs the same routes, request middleware (request id, Host check, limits, authentication),
InferenceService (validation, RBAC, rate limits, audit) and pipeline as the single-process server,
with one instance per model version by default: Ray's replicas replace the in-process ``instances``.
What changes, and why:

- batching: each model version's batcher is a :class:`~cvdeploy.serve.ray_batching.ServeBatcher`,
  whose batches Ray's ``@serve.batch`` forms; one batcher, never two stacked;
- run-time model changes (``/v2/repository/models/NAME/load|unload|rollback``) are answered 409: one
  replica would change and the others would not. Models change by redeploying, which Ray rolls out
  replica by replica (:class:`ReplicatedModels`);
- monitoring: each replica records into the security database (``--db``) like the single server, so
  every replica's ``/v1/models/NAME/monitor`` and ``/ui`` read the same data; without a database each
  replica keeps its own throwaway one;
- security objects are built in each replica from the same settings as the server's flags (database
  URL — ``args.db`` or ``$CVDEPLOY_DB_URL`` like ``--db`` —, JWT settings, key files), so every replica
  authenticates, authorizes and audits alike (the audit log's writers serialize in the database);
  rate limits are counted per replica;
- every response carries ``X-CVD-Replica``: which replica answered (tracing, and the test that
  requests spread).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from cvdeploy.serve.config import Platform, ServeConfig, parse_config
from cvdeploy.serve.errors import Conflict
from cvdeploy.serve.security import STATE_CHANGES, Authorizer, Principal, Security

if TYPE_CHECKING:
    from cvdeploy.security.setup import SecuritySetup

__all__ = [
    "DEPLOYMENT",
    "REPLICA_HEADER",
    "RayAppArgs",
    "ReplicaHeader",
    "ReplicatedModels",
    "config_args",
    "deployment_options",
    "replica_app",
]

#: The deployment's name (``deployments: - name:`` in a Serve config).
DEPLOYMENT = "cvdeploy"
#: The response header naming the replica that answered.
REPLICA_HEADER = "x-cvd-replica"
#: The answer (409) to a run-time model change on Ray.
STATE_CHANGE_REFUSED = (
    "this server runs as Ray Serve replicas, and a {action} here would change one replica only; change "
    "models by redeploying (cvdeploy serve --engine ray with the new bundles, or serve deploy with an "
    "updated config), which Ray rolls out replica by replica"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class RayAppArgs(BaseModel):
    """What every replica is built from (the ``args:`` of a Serve config); paths must exist on each node."""

    model_config = ConfigDict(extra="forbid")

    bundles: list[str] = Field(min_length=1)  # bundle folders (absolute) or zoo:n / zoo:s
    config: dict[str, Any] = Field(default_factory=dict)  # the serve.yaml mapping
    host: str = "127.0.0.1"  # where Ray's proxy listens: the Host names answered follow from it
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1, le=10_000)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas: Ray's autoscaler decides
    threads: int = Field(1, ge=1, le=256)  # intra-op threads per replica = the CPUs it asks Ray for
    db: str | None = None  # security database URL (SQLite file on a shared path, or postgresql://)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks: str | None = None
    secrets_dir: str | None = None  # the server keys (audit signing, MFA wrap); None: the node's default
    decrypt_key: str | None = None  # --decrypt-key file
    trust_key: str | None = None  # --trust-key file


class ReplicatedModels:
    """An authorizer that answers run-time model changes 409 once the inner authorizer allowed them: on
    Ray, a load/unload/rollback would reach one replica of many. Anonymous callers without
    ``allow_anonymous_admin`` are left to :meth:`Security.authorize`, which answers them 401 as always."""

    def __init__(self, inner: Authorizer, allow_anonymous_admin: bool = False) -> None:
        self.inner = inner
        self.allow_anonymous_admin = allow_anonymous_admin

    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        self.inner.authorize(principal, action, resource)
        if action in STATE_CHANGES and not (principal.is_anonymous and not self.allow_anonymous_admin):
            raise Conflict(STATE_CHANGE_REFUSED.format(action=action))


class ReplicaHeader:
    """Adds ``X-CVD-Replica: <id>`` to every HTTP response of the wrapped app."""

    def __init__(self, app: ASGI, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, tagged)


def replica_app(args: RayAppArgs, replica: str) -> tuple[Any, SecuritySetup | None]:
    """The regular app for one replica (see the module docstring), and its security setup to close."""
    from cvdeploy.security.bundlekeys import BundleKeys, using_keys
    from cvdeploy.serve.app import create_app
    from cvdeploy.serve.logs import configure_logging
    from cvdeploy.serve.ray_batching import ServeBatcher

    cfg = parse_config(args.config, source="the Ray application's config")
    if cfg.defaults.threads is None:  # never "every CPU of the node" in each of several replicas
        cfg.defaults.threads = args.threads
    configure_logging(cfg.server.log_level, cfg.server.log_format)
    setup = None
    db = args.db or os.environ.get("CVDEPLOY_DB_URL") or None  # the rule of --db
    if db is not None:
        from cvdeploy.security.ratelimit import Rate
        from cvdeploy.security.setup import SecuritySetup

        sec = cfg.security
        setup = SecuritySetup.build(
            db, args.jwt_issuer, args.jwt_audience, args.jwt_jwks, secrets_dir=args.secrets_dir,
            per_principal=Rate.parse(sec.rate_limit_principal) if sec.rate_limit_principal else None,
            per_source=Rate.parse(sec.rate_limit_source) if sec.rate_limit_source else None,
        )  # fmt: skip
    seams = setup.security() if setup is not None else Security()
    seams.authorizer = ReplicatedModels(seams.authorizer, cfg.security.allow_anonymous_admin)
    keys = BundleKeys(args.decrypt_key, args.trust_key) if (args.decrypt_key or args.trust_key) else None
    monitor = None
    try:
        from cvdeploy.monitor.monitor import Monitor

        # with a database every replica records into it (one view of the whole deployment); without one,
        # each replica keeps its own throwaway database, as a single server does
        monitor = Monitor.open(db, cfg.monitor)
        with using_keys(keys):
            app = create_app(
                args.bundles, cfg, platform=Platform("local", args.host, args.port), security=seams,
                monitor=monitor,
            )  # fmt: skip
    except BaseException:
        if monitor is not None:
            monitor.stop()
        if setup is not None:
            setup.close()
        raise
    for entry in app.state.service.repository.models.values():
        for mv in entry.versions.values():
            mv.batcher = ServeBatcher.like(mv.batcher)
    return ReplicaHeader(app, replica), setup


def config_args(config: ServeConfig) -> dict[str, Any]:
    """``config`` as the ``args.config`` mapping that :func:`parse_config` turns back into it: every section
    whole (flags may have changed any of them), each ``models.NAME`` with only the keys it sets (an unset
    key must keep following ``defaults``)."""
    raw = config.model_dump(mode="json", exclude={"models"})
    raw["models"] = {name: m.model_dump(mode="json", exclude_unset=True) for name, m in config.models.items()}
    return raw


def deployment_options(args: RayAppArgs, config: ServeConfig) -> dict[str, Any]:
    """Ray's options for the deployment: replicas or autoscaling, CPUs per replica, request bounds.

    A replica takes up to ``max_ongoing_requests`` at once (two full batches of its largest model, so
    one can fill while the other runs; at least 16); Ray's proxy queues at most ``max_queued_requests``
    more (the largest ``queue_size``) and answers 503 beyond. The autoscaler adds replicas when a
    replica holds more than one full batch's worth of requests on average.
    """
    models = [config.defaults, *(config.model(n) for n in config.models)]
    batch = max(max(1, m.max_batch_size) * m.instances for m in models)
    opts: dict[str, Any] = {
        "max_ongoing_requests": max(16, 2 * batch),
        "max_queued_requests": max(m.queue_size for m in models),
        "ray_actor_options": {"num_cpus": args.threads},
    }
    if args.autoscale is not None:
        lo, hi = args.autoscale
        opts["autoscaling_config"] = {
            "min_replicas": lo, "initial_replicas": lo, "max_replicas": hi, "target_ongoing_requests": batch,
        }  # fmt: skip
    else:
        opts["num_replicas"] = args.replicas
    return opts
