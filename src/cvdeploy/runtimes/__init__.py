"""Inference engines behind one interface; ``load_runtime`` picks one by name.

Engine facts live in :mod:`cvdeploy.runtimes.registry` (one :class:`Engine` per engine); the
interface in :mod:`cvdeploy.runtimes.base`.
"""

from __future__ import annotations

from pathlib import Path

from cvdeploy.runtimes.base import PRECISIONS, Execution, Runtime, RuntimeOptions, TensorInfo
from cvdeploy.runtimes.registry import ENGINES, RUNTIMES, Engine, engine

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "RUNTIMES",
    "Engine",
    "Execution",
    "Runtime",
    "RuntimeOptions",
    "TensorInfo",
    "engine",
    "execution_record",
    "load_runtime",
]


def load_runtime(kind: str, path: str | Path, options: RuntimeOptions | None = None) -> Runtime:
    """Load the artifact at ``path`` with the runtime named ``kind`` (name or alias).

    The precision in ``options.precision`` (default FP32) is pinned and read back; a runtime that
    would execute anything else raises :class:`~cvdeploy.errors.PrecisionError`.
    """
    return engine(kind).load(path, options)


def execution_record(rt: Runtime) -> dict[str, object]:
    """What ``rt`` really executes, with the CPU capabilities that decided it (kept in the manifest)."""
    from cvdeploy import env

    return {
        **rt.execution().to_dict(),
        "runtime": rt.name,
        "device": rt.device_used,
        "cpu": env.cpu_info()["model"],
        "cpu_capabilities": env.cpu_capabilities(),
    }
