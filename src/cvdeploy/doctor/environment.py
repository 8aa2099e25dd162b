"""Check 5 — environment: what differs from the machine and libraries the bundle was exported and checked on.

The manifest records the export's environment (``provenance.environment``: library versions, CPU
model and flags) and, per artifact, what the runtime executed when parity was measured
(``Artifact.execution``: precision read back, threads, providers, CPU capabilities). Both are
compared with this machine and with what the deployed model executes now; each difference is
weighed by whether it can change numerics:

- another effective precision than the one validated: critical;
- another minor release of the engine that runs the model (kernels, fusions change): warning;
- INT8 on a CPU without VNNI where it was validated with VNNI (U8S8 products can saturate in the
  16-bit path): warning;
- other library or CPU differences: noted.
"""

from __future__ import annotations

import time
from typing import Any

from cvdeploy import env
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.findings import CheckResult, Finding
from cvdeploy.runtimes import registry

CHECK, TITLE = "environment", "Environment"


def _minor(v: str) -> tuple[str, ...]:
    return tuple(v.split("+")[0].split(".")[:2])


def differences(ctx: Context) -> list[tuple[float, str, str]]:
    """``(score, severity, sentence)`` for each difference that matters, most important first."""
    dep = ctx.deployment
    art = dep.artifact
    recorded_env = ctx.bundle.manifest.provenance.environment or {}
    now = env.fingerprint()
    out: list[tuple[float, str, str]] = []
    execution: dict[str, Any] = art.execution or {}
    current = dep.runtime.execution()
    # a --model is not the artifact: what the artifact executed at export says nothing about it
    if not dep.from_file and execution.get("precision") and execution["precision"] != current.precision:
        out.append((0.8, "critical", f"{art.name} was validated executing {execution['precision']} "
                    f"({execution.get('evidence', 'recorded at export')}) but executes {current.precision} here "
                    f"({current.evidence}): its recorded parity and accuracy do not apply"))  # fmt: skip
    engine = registry.engine(dep.runtime.name) if dep.runtime.name in registry.ENGINES else None
    libs_then = recorded_env.get("libraries") or {}
    libs_now = now.get("libraries") or {}
    if engine is not None:
        for dist in engine.dists or (engine.module,):
            a, b = libs_then.get(dist), libs_now.get(dist)
            if a and b and a != b:
                minor = _minor(a) != _minor(b)
                out.append((0.35 if minor else 0.1, "warning" if minor else "info",
                            f"{dist} {b} runs the model here; the bundle was exported and checked with {a}"
                            + (" (another release: kernels and fusions differ)" if minor else "")))  # fmt: skip
    caps_then_flags = ((recorded_env.get("cpu") or {}).get("flags")) if recorded_env else None
    caps_then = execution.get("cpu_capabilities") or (
        env.cpu_capabilities(caps_then_flags) if caps_then_flags else None
    )
    caps_now = env.cpu_capabilities()
    if caps_then:
        changed = {k: (caps_then.get(k), v) for k, v in caps_now.items() if bool(caps_then.get(k)) != v}
        if changed:
            text = ", ".join(
                f"{k} {'yes' if a else 'no'}→{'yes' if b else 'no'}" for k, (a, b) in changed.items()
            )
            if current.precision == "int8" and "vnni" in changed and not caps_now["vnni"]:
                out.append((0.3, "warning", f"CPU capabilities differ from the export machine's ({text}): INT8 without "
                            "VNNI takes a 16-bit path where U8S8 products can saturate"))  # fmt: skip
            else:
                out.append((0.1, "info", f"CPU capabilities differ from the export machine's ({text}); {dep.label} "
                            f"executes {current.precision} here, so numerics are unaffected"))  # fmt: skip
    for dist in ("opencv-python-headless", "opencv-python", "numpy"):
        a, b = libs_then.get(dist), libs_now.get(dist)
        if a and b and _minor(a) != _minor(b):
            out.append(
                (
                    0.1,
                    "info",
                    f"{dist} {b} here vs {a} at export (image decoding/resizing may differ slightly)",
                )
            )
    providers = (execution.get("settings") or {}).get("providers")
    now_providers = current.settings.get("providers")
    if providers and now_providers and providers[0] != now_providers[0]:
        out.append((0.35, "warning", f"validated on {providers[0]}, runs on {now_providers[0]} here"))
    return sorted(out, key=lambda x: -x[0])


def run(ctx: Context) -> list[CheckResult]:
    t0 = time.perf_counter()
    diffs = differences(ctx)
    details = {"differences": [d[2] for d in diffs], "cpu": env.cpu_info()["model"],
               "capabilities": env.capabilities_line(), "executes": ctx.deployment.runtime.execution().to_dict()}  # fmt: skip
    if not diffs:
        res = CheckResult(CHECK, TITLE, "ok", "the libraries, CPU features and effective precision match the export's",
                          details)  # fmt: skip
    else:
        score = diffs[0][0]
        rank = {"critical": 0, "warning": 1, "info": 2}
        sev = min((d[1] for d in diffs), key=lambda s: rank[s])
        evidence = "; ".join(d[2] for d in diffs) + "."
        fix = ("re-validate the bundle here (cvdeploy val) or run it where it was validated; pin the precision the "
               "artifact states (cvdeploy pins it when loading)")  # fmt: skip
        finding = Finding("env.mismatch", sev, evidence, score, fix=fix)  # type: ignore[arg-type]
        res = CheckResult(CHECK, TITLE, "finding" if sev != "info" else "ok", diffs[0][2], details, [finding])
    res.seconds = time.perf_counter() - t0
    return [res]
