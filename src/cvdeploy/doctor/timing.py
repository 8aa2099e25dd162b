"""Timing for the slowness checks: how the deployment runs, and fair side-by-side measurements of fixes.

The deployment is measured with the bench harness (:func:`cvdeploy.bench.harness.measure`: cold start,
warm-up and steady state, every stage timed); a fix is measured against the deployment pass by pass
in alternation (:meth:`Timing.versus`), so a change in the machine's load hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cvdeploy.bench.harness import MIN_RUNS, STAGES, Clock, ImageFeed, Measurement, measure, time_pass
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.deployment import Deployment
from cvdeploy.errors import ConfigError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions, registry

PipelineLoader = Callable[[RuntimeOptions], Pipeline]
DEVICES = ("cpu", "cuda", "gpu", "tensorrt", "auto")


@dataclass
class SpeedSettings:
    """How the deployment runs (what to diagnose) and how long to measure."""

    threads: int | None = None  # None: cvdeploy's default, the CPUs this process may use
    concurrency: int = 1
    device: str = "cpu"
    spinning: bool | None = None  # None: cvdeploy's default (off under concurrency)
    runs: int = 15
    warmup: int = 3
    images: int = 8
    loader: PipelineLoader | None = None  # builds the deployed pipeline with given options (a test seam)
    clock: Clock = time.perf_counter_ns

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r}: use one of {', '.join(DEVICES)}")
        if self.concurrency < 1 or (self.threads is not None and self.threads < 1):
            raise ConfigError("--threads and --concurrency must be at least 1")

    def options(self) -> RuntimeOptions:
        return RuntimeOptions(threads=self.threads, device=self.device, spinning=self.spinning,
                              concurrency=max(1, self.concurrency))  # fmt: skip


@dataclass
class Measured:
    """One configuration's timings (a harness :class:`~cvdeploy.bench.harness.Measurement`) and its label."""

    label: str
    m: Measurement

    def p50(self, stage: str = "total") -> float:
        return float(np.median(self.m.samples_ns[stage])) / 1e6

    @property
    def throughput(self) -> float:
        return self.m.throughput


@dataclass
class Timing:
    """One speed check's measurements on one feed of images; ``rows`` keeps every configuration measured."""

    ctx: Context
    settings: SpeedSettings
    feed: ImageFeed
    rows: list[Measured] = field(default_factory=list)

    def loader(self, options: RuntimeOptions) -> Callable[[], Pipeline]:
        custom = self.settings.loader
        dep = self.ctx.deployment
        if custom is not None:
            return lambda: custom(options)
        return lambda: load_deployed(dep, options)

    def measure(self, label: str, load: Callable[[], Pipeline], feed: ImageFeed | None = None) -> Measured:
        s = self.settings
        m = measure(load, feed or self.feed, runs=s.runs, warmup=s.warmup, device=s.device, clock=s.clock,
                    on_pass=lambda: self.ctx.progress.advance())  # fmt: skip
        out = Measured(label, m)
        self.rows.append(out)
        return out

    def versus(self, a: tuple[str, Callable[[], Pipeline], ImageFeed | None],
               b: tuple[str, Callable[[], Pipeline], ImageFeed | None]) -> tuple[Measured, Measured]:  # fmt: skip
        """Two configurations measured pass by pass in alternation (order swapped every pass), so a
        change in the machine's load hits both alike: the fair way to measure the gain of a fix."""
        s = self.settings
        pipes = [a[1](), b[1]()]
        feeds = [a[2] or self.feed, b[2] or self.feed]
        for i in range(s.warmup):
            for k in (0, 1):
                time_pass(pipes[k], feeds[k].batch(i, 1), s.clock)
        rows: list[list[tuple[int, int, int, int, int]]] = [[], []]
        for i in range(max(s.runs, MIN_RUNS)):
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                rows[k].append(time_pass(pipes[k], feeds[k].batch(s.warmup + i, 1), s.clock))
            self.ctx.progress.advance()
        out = []
        for (label, _, _), pipe, r in zip((a, b), pipes, rows, strict=True):
            table = np.asarray(r, dtype=np.int64)
            m = Measurement({stage: table[:, k].copy() for k, stage in enumerate(STAGES)}, np.zeros(0, np.int64), 0,
                            int(table[0, -1]), int(table[:, -1].sum()), 1, pipe.runtime.device_used,
                            execution=pipe.runtime.execution().to_dict())  # fmt: skip
            out.append(Measured(label, m))
        self.rows.extend(out)
        return out[0], out[1]


def load_deployed(dep: Deployment, options: RuntimeOptions) -> Pipeline:
    """The deployed model freshly loaded with ``options`` (its precision pinned as when deployed)."""
    precision = dep.runtime.execution().precision
    engine = registry.engine(dep.runtime.name)
    runtime = engine.load(
        dep.model_path, options.replace(precision=precision if precision in engine.precisions else None)
    )
    return Pipeline(dep.pipeline.contract.model_copy(deep=True), runtime, dep.artifact)


def speedup(slow: float, fast: float) -> float:
    """How many times faster ``fast`` is than ``slow`` (1.0 when unknown)."""
    return slow / fast if fast > 0 else 1.0
