"""Lazy imports of optional heavy dependencies with a one-line install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from cvdeploy.errors import MissingDependency

# module name -> the extra that installs it
_EXTRAS = {
    "torch": "torch",
    "torchvision": "ultralytics",
    "onnxslim": "torch",
    "openvino": "openvino",
    "ai_edge_litert": "tflite",
    "tensorrt": "tensorrt",
    "litert_torch": "tflite-export",
    "ai_edge_quantizer": "tflite-export",
    "nncf": "openvino",
    "torch_pruning": "optimize",
    "ultralytics": "ultralytics",
    "faster_coco_eval": "eval",
    "skimage": "zoo",
    "scipy": "doctor",
    "matplotlib": "reports",
    "jinja2": "reports",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "simplejpeg": "all",  # a core dependency; mapped for installs that dropped it
    "cryptography": "security",
    "jwt": "security",
    "pyotp": "security",
    "psycopg": "postgres",
    "ray": "ray",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top, "all")
        what = f" for {purpose}" if purpose else ""
        raise MissingDependency(
            f"'{top}' is needed{what} but is not installed ({exc}); "
            f'install it with: pip install "cvdeploy[{extra}]"'
        ) from None


def available(module: str) -> bool:
    """True when ``module`` can be found without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
