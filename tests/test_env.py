"""CPU capabilities, judged from flags, for the three CPUs this project's machines have shown."""

from __future__ import annotations

import pytest

from cvdeploy import env

ZEN3 = ["sse4_2", "avx", "avx2", "fma", "f16c"]
XEON = [*ZEN3, "avx512f", "avx512bw", "avx512_vnni"]
EPYC_BF16 = [*XEON, "avx512_bf16", "avx_vnni"]
SAPPHIRE = [*EPYC_BF16, "amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"]
GRAVITON3 = ["neon", "asimd", "asimddp", "asimdhp", "bf16"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (ZEN3, {"avx2": True, "avx512": False, "vnni": False, "bf16": False, "amx": False, "fp16": False}),
        (XEON, {"avx2": True, "avx512": True, "vnni": True, "bf16": False, "amx": False, "fp16": False}),
        (EPYC_BF16, {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": False, "fp16": False}),
        (SAPPHIRE, {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": True, "fp16": True}),
        (GRAVITON3, {"avx2": False, "avx512": False, "vnni": True, "bf16": True, "amx": False, "fp16": True}),
    ],
)
def test_capabilities_from_flags(flags: list[str], expected: dict[str, bool]) -> None:
    assert env.cpu_capabilities(flags) == expected


def test_capabilities_line_names_each_capability() -> None:
    line = env.capabilities_line(env.cpu_capabilities(EPYC_BF16))
    assert line == "AVX2 yes, AVX-512 yes, VNNI yes, BF16 yes, AMX no, FP16 no"


def test_available_cpus_respect_affinity_and_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    env.available_cpus.cache_clear()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(env, "_cgroup_quota", lambda: None)
    assert env.available_cpus() == 8
    env.available_cpus.cache_clear()
    monkeypatch.setattr(env, "_cgroup_quota", lambda: 2.5)  # a container limited to 2.5 CPUs
    assert env.available_cpus() == 2
    env.available_cpus.cache_clear()
    monkeypatch.setattr(env, "_cgroup_quota", lambda: 0.5)
    assert env.available_cpus() == 1
    env.available_cpus.cache_clear()


def test_openvino_refuses_bf16_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from cvdeploy.runtimes import engine

    monkeypatch.setattr(env, "cpu_capabilities", lambda flags=None: dict.fromkeys(env.CAPABILITIES, False))
    why = engine("openvino").unsupported("bf16")
    assert why is not None and "no native BF16" in why
    assert engine("openvino").unsupported("fp32") is None
    assert engine("openvino").unsupported("int8") is None
