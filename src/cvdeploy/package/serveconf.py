"""The ``serve.yaml`` every server target ships (a ConfigMap on Kubernetes), validated like the server does."""

from __future__ import annotations

from typing import Any

from cvdeploy.package.base import Context

#: Where the server's configuration file lives in every image.
CONFIG_PATH = "/etc/cvdeploy/serve.yaml"


def serve_config(ctx: Context) -> dict[str, Any]:
    """The configuration as a mapping, checked by the server's own parser before it is written."""
    from cvdeploy.serve.config import parse_config

    raw: dict[str, Any] = {
        "server": {"log_format": "json", "log_level": "info"},
        "defaults": {"artifact": ctx.artifact.name, "max_batch_size": ctx.options.max_batch_size},
    }
    parse_config(raw, source="generated serve.yaml")
    return raw


def write_serve_config(ctx: Context, dest: str = "serve.yaml") -> str:
    import yaml

    ctx.text(dest, yaml.safe_dump(serve_config(ctx), sort_keys=False))
    return dest
