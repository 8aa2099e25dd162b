"""The result of one measured configuration, as kept in a report (raw samples included)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvdeploy.bench.config import BenchConfig
from cvdeploy.bench.harness import STAGES, Measurement
from cvdeploy.bench.stats import LatencyStats, summarize


def _steady(m: Measurement) -> list[bool] | None:
    from cvdeploy.bench.noise import steady_mask

    if m.cpu_ns is None:
        return None
    return [bool(v) for v in steady_mask(m.samples_ns["total"], m.cpu_ns)]


@dataclass
class ColdStart:
    """Milliseconds to create the session(s) and to run the very first request."""

    session_ms: float
    first_inference_ms: float

    @property
    def total_ms(self) -> float:
        return self.session_ms + self.first_inference_ms

    def to_dict(self) -> dict[str, float]:
        return {
            "session_ms": self.session_ms,
            "first_inference_ms": self.first_inference_ms,
            "total_ms": self.total_ms,
        }


@dataclass
class BenchResult:
    """Latency (per request), per-stage figures, throughput, memory and cold start of one configuration.

    ``samples_ms[stage]`` holds every measured pass, so two reports can be compared statistically.
    """

    config: BenchConfig
    samples_ms: dict[str, list[float]]
    warmup_ms: list[float]
    cold_start: ColdStart
    throughput_ips: float
    wall_s: float
    artifact_size_mb: float | None
    device_used: str
    fell_back: bool = False
    peak_rss_mb: float | None = None
    rss_mb: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = "bundle"  # "bundle", or "re-exported" for a size the bundle's artifact could not take
    notes: list[str] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)  # precision/threads/spinning as read back
    steady_mask: list[bool] | None = None  # passes not slowed by foreign load (see bench.noise)
    foreign_load: float | None = None  # share of the machine's CPU other processes used while measuring

    @property
    def key(self) -> str:
        return self.config.key

    @functools.cached_property
    def stages(self) -> dict[str, LatencyStats]:
        return {s: summarize(v) for s, v in self.samples_ms.items() if len(v)}

    @functools.cached_property
    def latency(self) -> LatencyStats:
        """End-to-end latency of one request (all stages)."""
        return summarize(self.samples_ms["total"])

    @functools.cached_property
    def steady(self) -> LatencyStats:
        """The headline: end-to-end latency over the passes foreign load did not slow down."""
        total = np.asarray(self.samples_ms["total"])
        if self.steady_mask is None or len(self.steady_mask) != len(total) or not any(self.steady_mask):
            return self.latency
        return summarize(total[np.asarray(self.steady_mask, dtype=bool)])

    @functools.cached_property
    def noise_pct(self) -> float:
        """The headline's noise floor: 95 % CI half-width of the steady median, in percent."""
        from cvdeploy.bench.noise import noise_pct

        total = np.asarray(self.samples_ms["total"])
        if self.steady_mask is not None and len(self.steady_mask) == len(total) and any(self.steady_mask):
            total = total[np.asarray(self.steady_mask, dtype=bool)]
        return noise_pct(total)

    @property
    def disturbed(self) -> bool:
        """Whether other processes used so much CPU while measuring that the figures cannot be trusted."""
        from cvdeploy.bench.noise import BUSY_SHARE

        return self.foreign_load is not None and self.foreign_load > BUSY_SHARE

    @property
    def per_image_ms(self) -> float:
        """Median end-to-end time divided by the batch size."""
        return self.latency.p50_ms / self.config.batch

    @classmethod
    def from_measurement(
        cls,
        config: BenchConfig,
        m: Measurement,
        artifact_size_mb: float | None,
        metrics: dict[str, Any] | None = None,
        source: str = "bundle",
        notes: list[str] | None = None,
    ) -> BenchResult:
        return cls(
            config=config,
            samples_ms={s: (m.samples_ns[s] / 1e6).tolist() for s in STAGES},
            warmup_ms=(m.warmup_ns / 1e6).tolist(),
            cold_start=ColdStart(m.session_ns / 1e6, m.first_pass_ns / 1e6),
            throughput_ips=m.throughput,
            wall_s=m.wall_ns / 1e9,
            artifact_size_mb=artifact_size_mb,
            device_used=m.device_used,
            fell_back=m.fell_back,
            peak_rss_mb=m.peak_rss_mb,
            rss_mb=m.rss_mb,
            metrics=dict(metrics or {}),
            source=source,
            notes=[*(notes or []), *m.notes],
            execution=dict(m.execution),
            steady_mask=_steady(m),
            foreign_load=m.foreign_load,
        )

    def to_dict(self) -> dict[str, Any]:
        lat = self.latency
        return {
            "key": self.key,
            "config": self.config.to_dict(),
            "latency": lat.to_dict(),
            "p50_ms": lat.p50_ms,
            "per_image_ms": self.per_image_ms,
            "throughput_ips": self.throughput_ips,
            "stages": {s: st.to_dict() for s, st in self.stages.items()},
            "cold_start": self.cold_start.to_dict(),
            "warmup_ms": [round(v, 4) for v in self.warmup_ms],
            "wall_s": self.wall_s,
            "artifact_size_mb": self.artifact_size_mb,
            "device_used": self.device_used,
            "fell_back": self.fell_back,
            "peak_rss_mb": self.peak_rss_mb,
            "rss_mb": self.rss_mb,
            "metrics": self.metrics,
            "source": self.source,
            "notes": self.notes,
            "execution": self.execution,
            "steady": {**self.steady.to_dict(), "noise_pct": self.noise_pct, "passes": self.steady.n},
            "steady_mask": self.steady_mask,
            "foreign_load": self.foreign_load,
            "samples_ms": {s: [round(v, 4) for v in vals] for s, vals in self.samples_ms.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        cs = d.get("cold_start") or {}
        return cls(
            config=BenchConfig.from_dict(d["config"]),
            samples_ms={s: [float(v) for v in vals] for s, vals in d["samples_ms"].items()},
            warmup_ms=[float(v) for v in d.get("warmup_ms", [])],
            cold_start=ColdStart(float(cs.get("session_ms", 0.0)), float(cs.get("first_inference_ms", 0.0))),
            throughput_ips=float(d.get("throughput_ips", 0.0)),
            wall_s=float(d.get("wall_s", 0.0)),
            artifact_size_mb=d.get("artifact_size_mb"),
            device_used=str(d.get("device_used", "")),
            fell_back=bool(d.get("fell_back", False)),
            peak_rss_mb=d.get("peak_rss_mb"),
            rss_mb=d.get("rss_mb"),
            metrics=dict(d.get("metrics") or {}),
            source=str(d.get("source", "bundle")),
            notes=list(d.get("notes") or []),
            execution=dict(d.get("execution") or {}),
            steady_mask=d.get("steady_mask"),
            foreign_load=d.get("foreign_load"),
        )

    def samples(self, stage: str = "total") -> np.ndarray:
        return np.asarray(self.samples_ms[stage], dtype=np.float64)


@dataclass
class SkippedConfig:
    """A configuration that could not be measured, and why."""

    config: BenchConfig
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.config.key, "config": self.config.to_dict(), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkippedConfig:
        return cls(BenchConfig.from_dict(d["config"]), str(d["reason"]))
