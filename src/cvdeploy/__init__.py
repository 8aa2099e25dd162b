"""cvdeploy: carry a trained computer-vision model into production and keep it honest there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Bundle",
    "Classification",
    "Contract",
    "CvdeployError",
    "Detections",
    "Pipeline",
    "__version__",
]

if TYPE_CHECKING:
    from cvdeploy.bundle import Bundle
    from cvdeploy.contract import Contract
    from cvdeploy.errors import CvdeployError
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.results import Classification, Detections

_LAZY = {
    "Bundle": "cvdeploy.bundle",
    "Contract": "cvdeploy.contract",
    "CvdeployError": "cvdeploy.errors",
    "Pipeline": "cvdeploy.pipeline",
    "Classification": "cvdeploy.results",
    "Detections": "cvdeploy.results",
}


def __getattr__(name: str) -> Any:
    # lazy so that `import cvdeploy` stays cheap for the CLI's --help
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cvdeploy' has no attribute {name!r}")
