"""``--target ray``: a Serve config for ``serve deploy`` on an existing Ray cluster.

    serve_config.yaml   one application: ``import_path: cvdeploy.serve.ray_app:build_app`` (the same
                        application ``cvdeploy serve --engine ray`` runs) with its ``args`` (bundle path,
                        serve.yaml settings, threads) and the deployment's replicas or autoscaling
    requirements.txt    what the cluster's Python environment needs (``cvdeploy[ray,serve,...]``), pinned
    model/NAME.cvd/     the bundle, trimmed to the artifact; put it at /models/NAME.cvd on every node
                        (shared volume, or baked into the cluster's image)

The cluster's nodes run cvdeploy from their own environment (``serve deploy`` cannot upload a local
folder); nothing here downloads at run time.
"""

from __future__ import annotations

from typing import Any

from cvdeploy.errors import ConfigError
from cvdeploy.package.base import TLS_DIR, Context, Target
from cvdeploy.package.serveconf import serve_config

#: Where Ray's proxy listens on the head node (Ray Serve's default port).
RAY_PORT = 8000


def write(ctx: Context) -> None:
    import importlib.metadata as md

    from cvdeploy.package.pins import pinned_closure
    from cvdeploy.serve.config import parse_config

    mode = ctx.options.security
    if mode not in ("tls", "ingress"):
        raise ConfigError(
            "--target ray: say how the server is secured: --security tls (Ray's proxy serves HTTPS with "
            f"certificates at {TLS_DIR} on the head node; replicas authenticate against $CVDEPLOY_DB_URL) or "
            "--security ingress (TLS and authentication end at your ingress in front of the cluster)"
        )
    ctx.copy_bundle(f"model/{ctx.bundle.name}.cvd")
    extras = sorted({"ray", *ctx.extras})
    pins, missing = pinned_closure(ctx.extras)
    # ray[serve] itself, from its own metadata (this cvdeploy may have been installed before its ray extra)
    ray_pins, ray_missing = pinned_closure(["serve"], root="ray")
    pins = sorted({*pins, *ray_pins, f"ray=={md.version('ray')}"}, key=str.lower)
    missing = sorted({*missing, *ray_missing})
    ctx.text(
        "requirements.txt",
        "\n".join([f"# the Ray cluster's environment: cvdeploy[{','.join(extras)}], pinned to the versions tested",
                   *missing, *pins, f"cvdeploy[{','.join(extras)}]"]) + "\n",
    )  # fmt: skip
    lo_hi = ctx.options.autoscale
    args: dict[str, Any] = {
        "bundles": [ctx.model_dir],
        "config": serve_config(ctx),
        "host": "0.0.0.0",
        "port": RAY_PORT,
        "replicas": ctx.options.replicas,
        "autoscale": list(lo_hi) if lo_hi else None,
        "threads": ctx.threads,
    }
    deployment = _deployment(args)
    http: dict[str, Any] = {"host": "0.0.0.0", "port": RAY_PORT}
    if mode == "tls":
        http.update(ssl_certfile=f"{TLS_DIR}/tls.crt", ssl_keyfile=f"{TLS_DIR}/tls.key")
    doc = {
        "proxy_location": "HeadOnly",
        "http_options": http,
        "applications": [{
            "name": "cvdeploy",
            "route_prefix": "/",
            "import_path": "cvdeploy.serve.ray_app:build_app",
            "args": args,
            "deployments": [deployment],
        }],
    }  # fmt: skip
    parse_config(args["config"], source="generated serve config")
    ctx.yaml("serve_config.yaml", [doc])
    ctx.note(
        f"every node needs the packages of requirements.txt and the bundle at {ctx.model_dir} "
        f"(copy {ctx.out / 'model'} there, or bake it into the cluster's image)"
    )
    if mode == "tls":
        ctx.note(
            f"the head node needs {TLS_DIR}/tls.crt and tls.key; set CVDEPLOY_DB_URL (the security database, "
            "shared by every replica) in the nodes' environment, as for cvdeploy serve --db"
        )
    else:
        ctx.note(
            "--security ingress: Ray's proxy listens on 0.0.0.0:8000 without TLS or authentication; keep it "
            "on a private network behind your ingress"
        )
    ctx.result.run = f"serve deploy {ctx.out / 'serve_config.yaml'} --address http://HEAD:8265"


def _deployment(args: dict[str, Any]) -> dict[str, Any]:
    """The deployment's options, as ``cvdeploy serve --engine ray`` sets them (ray_app.deployment_options)."""
    from cvdeploy.serve.config import parse_config
    from cvdeploy.serve.ray_replica import DEPLOYMENT, RayAppArgs, deployment_options

    parsed = RayAppArgs.model_validate(args)
    return {"name": DEPLOYMENT, **deployment_options(parsed, parse_config(args["config"]))}


TARGET = Target(
    name="ray",
    summary="a Ray Serve config (serve deploy) running the cvdeploy app as replicas, batching with @serve.batch",
    needs="a Ray cluster (ray[serve]) whose nodes have cvdeploy[ray,serve] and the bundle at /models/NAME.cvd",
    write=write,
)
