"""The public surface of ``cvdeploy.serve`` is deliberate, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import cvdeploy.serve as serve


def test_public_names_are_pinned_and_resolve() -> None:
    assert serve.__all__ == [
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
    for name in serve.__all__:
        assert getattr(serve, name) is not None


def test_importing_the_package_loads_no_web_stack_or_runtime() -> None:
    code = "import sys, cvdeploy.serve; print(sorted(m for m in ('fastapi', 'onnxruntime', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
