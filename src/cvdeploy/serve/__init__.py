"""``cvdeploy serve``: bundles behind Open Inference Protocol v2, an image API, SageMaker and Vertex AI.

    create_app(bundles, config)           the FastAPI app (tests drive it in-process)
    serve(bundles, config, platform)      run it under uvicorn in the foreground
    run_in_background(bundles, host, port) → ServerHandle(.url, .stop())
    load_config(path) → ServeConfig       the YAML configuration, validated

Modules: ``service`` (the transport-neutral InferenceService every protocol is handed), ``app``
(assembly), ``config``, ``schemas`` (pydantic models of every request document), ``tensors``,
``batching`` (dynamic batcher), ``repository`` (versions, load/unload/rollback, load roots),
``protocols/`` (thin HTTP adapters: v2 routes + codec + repository API + Triton documents, image,
cloud), ``limits`` (content types, image structure and size), ``middleware`` (request id, head
checks, principal, body limits, plain 500), ``metrics`` (Prometheus), ``logs`` (JSON logs),
``security`` (the seam for authentication, RBAC and audit, and its one factory), ``errors``,
``server`` (uvicorn with connection limits). Heavy imports (FastAPI, ONNX Runtime) happen only when
these names are first used.
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
