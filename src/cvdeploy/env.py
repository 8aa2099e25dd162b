"""Environment fingerprint: what a result was measured on (python, libraries, CPU, GPU).

The fingerprint goes into every manifest and report so that a figure can be traced to the
machine that produced it, and so that ``doctor`` can later compare two environments.
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

# CPU features that decide which kernels run fast (INT8 dot products, wide vectors, AMX).
IMPORTANT_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "asimddp",
)

LIBRARIES = (
    "cvdeploy",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "opencv-python-headless",
    "opencv-python",
    "torch",
    "torchvision",
    "openvino",
    "nncf",
    "ultralytics",
    "onnxslim",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model, logical core count and the feature flags that matter for inference speed."""
    import os

    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": os.cpu_count() or 1,
        "flags": [f for f in IMPORTANT_CPU_FLAGS if f in flags],
    }


@functools.lru_cache(maxsize=1)
def gpu_info() -> list[str]:
    """Names of NVIDIA GPUs visible through ``nvidia-smi`` (empty when none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def fingerprint() -> dict[str, Any]:
    """A JSON-serialisable description of this environment."""
    libs = {name: v for name in LIBRARIES if (v := _version(name)) is not None}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libs,
        "cpu": cpu_info(),
        "gpu": gpu_info(),
    }


def has_fast_int8_s8s8() -> bool:
    """Whether signed-activation (S8S8) INT8 kernels are fast here: Arm with dot-product instructions.

    On x86 ONNX Runtime's fast INT8 kernels are unsigned-activation × signed-weight (U8S8), which
    is also what VNNI's ``vpdpbusd`` computes: S8S8 convolutions stay unfused and run slower than
    FP32 — measured 1.7x slower on a Zen 3 with AVX2 and 2.6x slower on a Xeon with AVX-512 VNNI,
    where U8S8 was 1.3x faster than FP32 (ONNX Runtime 1.32).
    """
    flags = set(cpu_info()["flags"])
    return bool(flags & {"asimddp"})
