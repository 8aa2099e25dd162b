"""``cvdeploy serve``: bundles behind Open Inference Protocol v2, an image API, SageMaker and Vertex AI.

    create_app(bundles, config)           the FastAPI app (tests drive it in-process)
    serve(bundles, config, platform)      run it under uvicorn in the foreground
    run_in_background(bundles, host, port) → ServerHandle(.url, .stop())
    load_config(path) → ServeConfig       the YAML configuration, validated

Modules: ``app`` (assembly), ``config``, ``batching`` (dynamic batcher), ``repository`` (versions,
load/unload/rollback), ``protocols/`` (v2, image, cloud), ``limits`` (request and image checks),
``middleware`` (request id, principal, body limit, plain 500), ``metrics`` (Prometheus), ``logs``
(JSON logs), ``security`` (the seam for TLS, authentication, RBAC and audit), ``server`` (uvicorn).
Heavy imports (FastAPI, ONNX Runtime) happen only when these names are first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Platform",
    "Principal",
    "Security",
    "ServeConfig",
    "ServerHandle",
    "create_app",
    "load_config",
    "run_in_background",
    "serve",
]

if TYPE_CHECKING:
    from cvdeploy.serve.app import create_app
    from cvdeploy.serve.config import Platform, ServeConfig, load_config
    from cvdeploy.serve.security import Principal, Security
    from cvdeploy.serve.server import ServerHandle, run_in_background, serve

_LAZY = {
    "create_app": "cvdeploy.serve.app",
    "Platform": "cvdeploy.serve.config",
    "ServeConfig": "cvdeploy.serve.config",
    "load_config": "cvdeploy.serve.config",
    "Principal": "cvdeploy.serve.security",
    "Security": "cvdeploy.serve.security",
    "ServerHandle": "cvdeploy.serve.server",
    "run_in_background": "cvdeploy.serve.server",
    "serve": "cvdeploy.serve.server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cvdeploy.serve' has no attribute {name!r}")
