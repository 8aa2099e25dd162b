"""``BenchReport``: everything one ``cvdeploy bench`` run measured, with the machine it ran on.

Its JSON form (``schema: cvdeploy-bench/1``) keeps every raw latency sample, so ``bench compare``
can test two reports statistically; :meth:`BenchReport.to_document` feeds the shared Markdown/HTML
renderers in :mod:`cvdeploy.reports`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy import env
from cvdeploy.bench.compare import SCHEMA
from cvdeploy.bench.profile import OperatorProfile
from cvdeploy.bench.recommend import Recommendation
from cvdeploy.bench.results import BenchResult, SkippedConfig
from cvdeploy.errors import ConfigError
from cvdeploy.reports.document import Document

# CPU capabilities that decide which precision is fast, by the name people know them by
CPU_FEATURES = env.CAPABILITY_LABELS


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (empty where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def busy_warning(load: dict[str, list[float]], cores: int | None) -> str | None:
    """A warning when other work competed for the CPUs while measuring (1-minute load ≥ half the cores)."""
    peak = max((v[0] for v in load.values() if v), default=None)
    if peak is None or not cores or peak < 0.5 * cores:
        return None
    return (
        f"the machine was busy while measuring (load average {peak:.1f} on {cores} logical cores): "
        "other processes competed for the CPUs, so expect noise and compare runs made under similar load"
    )


def hardware_summary(providers_used: list[str] | None = None) -> dict[str, Any]:
    """CPU model and the features that matter, GPUs, and the execution providers available/used."""
    cpu = env.cpu_info()
    caps = env.cpu_capabilities()
    features = {label: caps[key] for key, label in CPU_FEATURES.items()}
    if cpu.get("machine", "").lower() not in ("x86_64", "amd64"):
        features.pop("AVX2", None)
        features.pop("AVX-512", None)
    out: dict[str, Any] = {
        "cpu": cpu.get("model"),
        "cores": cpu.get("cores"),
        "available_cpus": env.available_cpus(),
        "cpu_features": features,
        "gpu": env.gpu_info(),
    }
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        out["onnxruntime_providers"] = []
    if providers_used is not None:
        out["providers_used"] = sorted(set(providers_used))
    return out


@dataclass
class BenchReport:
    """The results of one benchmark run."""

    bundle: str
    bundle_path: str
    created: str
    settings: dict[str, Any]
    environment: dict[str, Any]
    hardware: dict[str, Any]
    images: dict[str, Any]
    results: list[BenchResult] = field(default_factory=list)
    skipped: list[SkippedConfig] = field(default_factory=list)
    profiles: list[OperatorProfile] = field(default_factory=list)
    recommendation: Recommendation | None = None
    warnings: list[str] = field(default_factory=list)
    system_load: dict[str, list[float]] = field(default_factory=dict)  # 1/5/15-min load at start and end

    def result(self, key: str) -> BenchResult:
        for r in self.results:
            if r.key == key:
                return r
        raise KeyError(key)

    @property
    def fell_back(self) -> bool:
        return any(r.fell_back for r in self.results)

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "bundle": self.bundle,
            "bundle_path": self.bundle_path,
            "created": self.created,
            "settings": self.settings,
            "environment": self.environment,
            "hardware": self.hardware,
            "images": self.images,
            "fell_back_to_cpu": self.fell_back,
            "warnings": self.warnings,
            "system_load": self.system_load,
            "results": [r.to_dict() for r in self.results],
            "skipped": [s.to_dict() for s in self.skipped],
            "profiles": [p.to_dict() for p in self.profiles],
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchReport:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ConfigError(f'not a cvdeploy bench report (expected "schema": "{SCHEMA}")')
        rec = d.get("recommendation")
        return cls(
            bundle=d.get("bundle", ""),
            bundle_path=d.get("bundle_path", ""),
            created=d.get("created", ""),
            settings=d.get("settings", {}),
            environment=d.get("environment", {}),
            hardware=d.get("hardware", {}),
            images=d.get("images", {}),
            results=[BenchResult.from_dict(r) for r in d.get("results", [])],
            skipped=[SkippedConfig.from_dict(s) for s in d.get("skipped", [])],
            profiles=[OperatorProfile.from_dict(p) for p in d.get("profiles", [])],
            recommendation=Recommendation.from_dict(rec) if rec else None,
            warnings=list(d.get("warnings", [])),
            system_load=dict(d.get("system_load") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> BenchReport:
        from cvdeploy.bench.compare import load_report

        return cls.from_dict(load_report(path))

    def save_json(self, path: str | Path) -> Path:
        from cvdeploy.reports.jsonio import write_json

        return write_json(self, path)

    def to_json(self) -> str:
        from cvdeploy.reports.jsonio import dumps

        return dumps(self)

    def to_document(self, plots: bool = True) -> Document:
        """The report as a generic document (tables, and plots when matplotlib is installed)."""
        from cvdeploy.bench.render import build_document

        return build_document(self, plots=plots)

    def __str__(self) -> str:  # handy in notebooks and the demo
        lines = [f"bench {self.bundle}: {len(self.results)} configuration(s)"]
        for r in self.results:
            lat = r.latency
            lines.append(
                f"  {r.key}: p50 {lat.p50_ms:.2f} ms, p95 {lat.p95_ms:.2f} ms, {r.throughput_ips:.1f} img/s"
            )
        return "\n".join(lines)
