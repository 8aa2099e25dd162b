"""The Ray Serve application of ``cvdeploy serve --engine ray`` and ``cvdeploy package --target ray``.

build_app(args) → Application     Ray's "application builder": a Serve config names it as
                                  ``import_path: cvdeploy.serve.ray_app:build_app`` with ``args:``
CvdeployReplica                   the one deployment (an ingress); each replica builds its app with
                                  :func:`cvdeploy.serve.ray_replica.replica_app` in its own process

Ray's proxy (HTTP, TLS) ─▶ replica 1..N: the regular app (routes, security, pipeline, @serve.batch)
"""

from __future__ import annotations

from cvdeploy._deps import require

require("ray", "serve --engine ray")  # one-line install hint instead of an ImportError

from typing import TYPE_CHECKING, Any

from ray import serve

from cvdeploy.serve.config import parse_config
from cvdeploy.serve.ray_replica import DEPLOYMENT, RayAppArgs, deployment_options, replica_app

if TYPE_CHECKING:
    from ray.serve import Application

    from cvdeploy.security.setup import SecuritySetup

__all__ = ["CvdeployReplica", "build_app"]


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class CvdeployReplica:
    """One replica: the regular app, built in the replica's own process from :class:`RayAppArgs`."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = RayAppArgs.model_validate(args)
        self.setup: SecuritySetup | None = None

    def __serve_build_asgi_app__(self) -> Any:
        replica = serve.get_replica_context().replica_id.unique_id
        app, self.setup = replica_app(self.args, replica)
        return app

    def __del__(self) -> None:
        if self.setup is not None:
            self.setup.close()  # writes what is queued for the audit log


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for ``args`` (a :class:`RayAppArgs` mapping), with its deployment options."""
    parsed = RayAppArgs.model_validate(args)
    config = parse_config(parsed.config, source="the Ray application's config")
    app: Application = CvdeployReplica.options(**deployment_options(parsed, config)).bind(  # type: ignore[attr-defined]
        parsed.model_dump(mode="json")
    )
    return app
