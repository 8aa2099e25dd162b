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
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "neon",
    "asimd",
    "asimddp",
    "asimdhp",
    "bf16",
    "fphp",
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
def _proc_cpuinfo() -> tuple[str | None, frozenset[str]]:
    """The CPU model name and every feature flag ``/proc/cpuinfo`` reports (none where it cannot be read)."""
    model: str | None = None
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
    return model, frozenset(flags)


def cpu_flags() -> frozenset[str]:
    """Every feature flag the CPU reports (``cpu_info`` keeps only the ones that matter for speed)."""
    return _proc_cpuinfo()[1]


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model, logical core count and the feature flags that matter for inference speed."""
    import os

    name, flags = _proc_cpuinfo()
    model = name or platform.processor() or platform.machine()
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
        "cpu": {**cpu_info(), "capabilities": cpu_capabilities(), "available_cpus": available_cpus()},
        "gpu": gpu_info(),
    }


#: What each capability means for inference, in the order reports show them.
CAPABILITIES = {
    "avx2": "256-bit vectors (every fast FP32 kernel)",
    "avx512": "512-bit vectors",
    "vnni": "INT8 dot products (VNNI / Arm dot-product)",
    "bf16": "native bfloat16 arithmetic",
    "amx": "AMX matrix tiles",
    "fp16": "native FP16 arithmetic",
}


def cpu_capabilities(flags: list[str] | None = None) -> dict[str, bool]:
    """The CPU capabilities that decide which precision runs fast (and what OpenVINO picks by default).

    ``flags``: CPU flags to judge (default: this machine's). BF16 counts only where the hardware does it
    natively (AVX512-BF16, AMX-BF16, Armv8.6 BF16): elsewhere engines emulate it or refuse it.
    """
    f = set(cpu_info()["flags"] if flags is None else flags)
    return {
        "avx2": "avx2" in f,
        "avx512": "avx512f" in f,
        "vnni": bool(f & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}),
        "bf16": bool(f & {"avx512_bf16", "amx_bf16", "bf16"}),
        "amx": bool(f & {"amx_tile", "amx_int8", "amx_bf16"}),
        "fp16": bool(f & {"avx512_fp16", "amx_fp16", "asimdhp", "fphp"}),
    }


#: The name people know each capability by.
CAPABILITY_LABELS = {
    "avx2": "AVX2",
    "avx512": "AVX-512",
    "vnni": "VNNI",
    "bf16": "BF16",
    "amx": "AMX",
    "fp16": "FP16",
}


def capabilities_line(caps: dict[str, bool] | None = None) -> str:
    """``AVX2 yes, AVX-512 yes, VNNI yes, BF16 yes, AMX no, FP16 no`` for reports and ``inspect``."""
    c = cpu_capabilities() if caps is None else caps
    return ", ".join(f"{CAPABILITY_LABELS[k]} {'yes' if c.get(k) else 'no'}" for k in CAPABILITIES)


@functools.lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` is the host's count; in a container or under ``taskset`` it oversubscribes.
    """
    import math
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    """CPUs granted by the cgroup (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None when unlimited."""
    candidates = (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    )
    for first, second in candidates:
        try:
            with open(first, encoding="utf-8") as fh:
                text = fh.read().split()
            if second is None:
                if text and text[0] != "max":
                    return int(text[0]) / int(text[1])
                return None
            quota = int(text[0])
            with open(second, encoding="utf-8") as fh:
                period = int(fh.read().strip())
            return quota / period if quota > 0 and period > 0 else None
        except (OSError, ValueError, IndexError):
            continue
    return None


def has_fast_int8_s8s8() -> bool:
    """Whether signed-activation (S8S8) INT8 kernels are fast here: Arm with dot-product instructions.

    On x86 ONNX Runtime's fast INT8 kernels are unsigned-activation × signed-weight (U8S8), which
    is also what VNNI's ``vpdpbusd`` computes: S8S8 convolutions stay unfused and run slower than
    FP32 — measured 1.7x slower on a Zen 3 with AVX2 and 2.6x slower on a Xeon with AVX-512 VNNI,
    where U8S8 was 1.3x faster than FP32 (ONNX Runtime 1.32).
    """
    flags = set(cpu_info()["flags"])
    return bool(flags & {"asimddp"})
