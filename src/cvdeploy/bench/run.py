"""``run_bench``: measure every configuration of a sweep and return one :class:`BenchReport`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cvdeploy import env
from cvdeploy.bench.concurrent import measure_concurrent, throughput_options
from cvdeploy.bench.config import BenchConfig, BenchSettings
from cvdeploy.bench.harness import Clock, ImageFeed, measure
from cvdeploy.bench.profile import OperatorProfile, profile_config
from cvdeploy.bench.recommend import recommend, require_metrics
from cvdeploy.bench.report import BenchReport, busy_warning, hardware_summary, load_average
from cvdeploy.bench.results import BenchResult, SkippedConfig
from cvdeploy.bench.sweep import (
    ArtifactResolver,
    check_batches,
    enumerate_configs,
    metrics_for,
    select_artifacts,
)
from cvdeploy.bundle import Bundle, now_iso
from cvdeploy.errors import ConfigError, CvdeployError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions

log = logging.getLogger("cvdeploy")

PipelineFactory = Callable[[BenchConfig, RuntimeOptions], Pipeline]
MAX_IMAGES = 64
PROFILE_RUNS = 20


class Progress(Protocol):
    """Where ``run_bench`` reports progress (the CLI draws a rich bar on it)."""

    def start(self, configs: int) -> None:
        """The sweep has ``configs`` configurations."""
        return None

    def config(self, index: int, key: str, passes: int | None) -> None:
        """Configuration ``index`` starts; ``passes`` warm-up + measured passes (None: time budget)."""
        return None

    def advance(self) -> None:
        """One more pass done (called outside the timed region)."""
        return None

    def note(self, text: str) -> None:
        """Something worth a line: a re-export, a skipped configuration, a profile."""
        return None

    def finish(self) -> None:
        return None


class _NoProgress(Progress):
    """Progress that goes nowhere (the library default)."""


def run_bench(
    bundle: Bundle | str | Path,
    settings: BenchSettings | None = None,
    *,
    progress: Progress | None = None,
    loader: PipelineFactory | None = None,
    clock: Clock = time.perf_counter_ns,
    **overrides: Any,
) -> BenchReport:
    """Benchmark a bundle (path, ``zoo:NAME`` or :class:`Bundle`) and return the report.

    ``settings`` (or keyword overrides of its fields, e.g. ``runs=50, imgsz=[(480, 480)]``) say
    what to sweep. ``loader`` replaces how a configuration's pipeline is built (tests inject a
    pipeline around a fake runtime there); ``clock`` replaces ``time.perf_counter_ns``.
    """
    s = dataclasses.replace(settings or BenchSettings(), **overrides).validate()
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    arts = select_artifacts(b, s.artifacts, s.runtimes)
    if s.min_map is not None:
        require_metrics(arts, s.metric, b.name, str(b.path))
    check_batches(b, arts, s.batch)
    feed, image_source = _feed(s)
    configs = enumerate_configs(b, arts, s)
    bar = progress or _NoProgress()
    if loader is None:
        _import_runtimes({a.runtime for a in arts})  # library import time is not session creation time
    resolver = ArtifactResolver(b, say=bar.note, runtimes=tuple(sorted({a.runtime for a in arts})))
    results: list[BenchResult] = []
    skipped: list[SkippedConfig] = []
    warnings: list[str] = []
    passes = (s.warmup + s.runs) if s.runs is not None and not s.duration_s else None
    system_load = {"start": load_average()}
    bar.start(len(configs))
    try:
        for i, cfg in enumerate(configs):
            bar.config(i, cfg.key, passes)
            options = throughput_options(
                RuntimeOptions(
                    threads=cfg.threads,
                    device=cfg.device,
                    spinning=s.spinning_flag(),
                    batch=1 if cfg.batch == 1 else None,
                ),  # what predict --batch 1 runs
                cfg.runtime,
                cfg.concurrency,
            )
            try:
                res = resolver.resolve(cfg, options)
                load = functools.partial(loader, cfg, options) if loader is not None else res.load
                m = _measure(cfg, load, feed, s, clock, bar.advance)
            except CvdeployError as exc:  # SkipConfig included: the reason is reported
                reason = _one_line(str(exc))
                skipped.append(SkippedConfig(cfg, reason))
                bar.note(f"skipped {cfg.key}: {reason}")
                continue
            notes = list(res.notes)
            results.append(
                BenchResult.from_measurement(
                    cfg, m, res.size_mb, metrics_for(b, res.artifact, cfg, res.source), res.source, notes
                )
            )
            if m.fell_back:
                warnings.append(_fallback_warning(cfg, m.device_used))
            if results[-1].disturbed:
                warnings.append(
                    f"{cfg.key}: other processes used {results[-1].foreign_load:.0%} of the machine's CPU while it "
                    "was measured — too disturbed to trust; re-run when the machine is quieter"
                )
        if not results:
            first = skipped[0] if skipped else None
            raise ConfigError(
                f"nothing could be measured — {first.config.key}: {first.reason}"
                if first
                else "nothing to measure"
            )
        profiles = _profiles(b, results, feed, s, bar, warnings) if s.profile else []
    finally:
        resolver.close()
        bar.finish()
    system_load["end"] = load_average()
    hardware = hardware_summary([r.device_used for r in results])
    busy = busy_warning(system_load, hardware.get("cores"))
    if busy:
        warnings.append(busy)
    rec = None
    if s.budget_ms is not None or s.min_map is not None:
        rec = recommend(results, s.budget_ms, s.min_map, s.budget_stat, s.metric)
    return BenchReport(
        bundle=b.name,
        bundle_path=str(b.path),
        created=now_iso(),
        settings=s.to_dict(),
        environment=env.fingerprint(),
        hardware=hardware,
        images={**feed.describe(), "source": image_source},
        results=results,
        skipped=skipped,
        profiles=profiles,
        recommendation=rec,
        warnings=list(dict.fromkeys(warnings)),
        system_load=system_load,
    )


def _measure(
    cfg: BenchConfig,
    load: Callable[[], Pipeline],
    feed: ImageFeed,
    s: BenchSettings,
    clock: Clock,
    on_pass: Callable[[], None],
) -> Any:
    if cfg.concurrency > 1:
        return measure_concurrent(
            load,
            feed,
            cfg.concurrency,
            cfg.sessions,
            cfg.batch,
            s.runs,
            s.warmup,
            s.duration_s,
            cfg.device,
            clock,
            on_pass,
        )
    return measure(load, feed, cfg.batch, s.runs, s.warmup, s.duration_s, cfg.device, clock, on_pass)


def _feed(s: BenchSettings) -> tuple[ImageFeed, str]:
    if s.images is not None:
        feed = ImageFeed.from_paths(s.images, limit=MAX_IMAGES)
        return feed, "user images" if not isinstance(s.images, str | Path) else str(s.images)
    return ImageFeed.samples(s.num_images), "bundled sample photographs"


def _import_runtimes(runtimes: set[str]) -> None:
    from cvdeploy.runtimes.registry import engine

    for rt in runtimes:
        # a missing library is reported, with its install hint, when the artifact is loaded
        with contextlib.suppress(ImportError):
            importlib.import_module(engine(rt).module)


def _one_line(text: str, limit: int = 400) -> str:
    """An engine's multi-line error as one line a table can hold."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fallback_warning(cfg: BenchConfig, used: str) -> str:
    try:
        import onnxruntime as ort

        available = ", ".join(ort.get_available_providers())
    except ImportError:
        available = "unknown"
    return (
        f"requested --device {cfg.device} but {cfg.artifact} ran on {used}: the GPU provider is not "
        f"available here (ONNX Runtime providers: {available}); these are CPU figures"
    )


def _profiles(
    b: Bundle,
    results: list[BenchResult],
    feed: ImageFeed,
    s: BenchSettings,
    bar: Progress,
    warnings: list[str],
) -> list[OperatorProfile]:
    """One operator profile per artifact, at its first measured configuration from the bundle itself."""
    out = []
    seen: set[str] = set()
    for r in results:
        cfg = r.config
        if cfg.artifact in seen or r.source != "bundle":
            continue
        seen.add(cfg.artifact)
        bar.note(f"profiling {cfg.key}")
        try:
            out.append(
                profile_config(
                    b, cfg, feed, runs=PROFILE_RUNS, warmup=min(s.warmup, 3) or 1, top=s.profile_top
                )
            )
        except CvdeployError as exc:
            warnings.append(f"no operator profile for {cfg.key}: {exc}")
    return out
