"""A headline latency that survives a shared machine, its noise floor, and how busy the machine was.

Foreign load only ever adds time to a pass: the thread is runnable but another process holds the CPU.
Such passes show it in their **CPU share** — this process's CPU time during the pass divided by its wall
time — which drops while we wait for a CPU. The headline ("steady") figure is the median of the passes
whose CPU share is close to the run's best (≥ 80 % of its 90th percentile), which tracks the quiet
machine's median through bursts of foreign load. Measured here with 2 background processes burning both
cores in random bursts, 8 pairs of consecutive 100-pass runs of zoo:n: the plain median's p90 spread was
68 %, the median of round medians' 63 %, p10's 6.6 %, the steady median's 3.4 % (``/tmp`` experiment;
``benchmarks/repeatability.py`` measures the CLI the same way).

No statistic recovers a quiet figure from a machine that is busy the *whole* time, so the share of the
machine's CPU that other processes used during the run is measured too (``/proc/stat``), and a run where
they used more than a quarter of it is flagged as too disturbed to trust.

The noise floor printed beside a figure is the half-width of the 95 % bootstrap confidence interval of
that median, in percent: differences below it are not differences.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

#: A pass counts as undisturbed when its CPU share is at least this fraction of the run's 90th percentile.
STEADY_FRACTION = 0.8
#: Fewer undisturbed passes than this share of all: the filter is not trusted, every pass counts.
MIN_STEADY_SHARE = 0.3
#: Other processes using more than this share of the machine's CPU during a run: too disturbed to trust.
BUSY_SHARE = 0.25


def steady_mask(wall_ns: np.ndarray, cpu_ns: np.ndarray | None) -> np.ndarray:
    """``(n,)`` bool: the passes not slowed by foreign load (all True without CPU times)."""
    wall = np.asarray(wall_ns, dtype=np.float64)
    if cpu_ns is None or len(cpu_ns) != len(wall) or len(wall) < 5:
        return np.ones(len(wall), dtype=bool)
    share = np.asarray(cpu_ns, dtype=np.float64) / np.maximum(wall, 1.0)
    best = float(np.percentile(share, 90))
    if best <= 0:
        return np.ones(len(wall), dtype=bool)
    mask = share >= STEADY_FRACTION * best
    if mask.mean() < MIN_STEADY_SHARE:
        return np.ones(len(wall), dtype=bool)
    return mask


def noise_pct(samples: np.ndarray, resamples: int = 1000, seed: int = 0) -> float:
    """Half-width of the 95 % bootstrap confidence interval of the median, in percent of the median."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    meds = np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)
    low, high = np.quantile(meds, [0.025, 0.975])
    med = float(np.median(x))
    return float((high - low) / 2 / med * 100) if med > 0 else float("nan")


def _machine_busy_ns() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, in ns, from ``/proc/stat`` (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # guest time is already inside user/nice
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    scale = 1_000_000_000 // hz
    return (total - idle) * scale, total * scale


@dataclass
class LoadMeter:
    """How much of the machine's CPU *other* processes used between ``start()`` and ``stop()`` (0–1)."""

    _machine: tuple[int, int] | None = None
    _own: int = 0

    def start(self) -> None:
        self._machine = _machine_busy_ns()
        self._own = time.process_time_ns()

    def stop(self) -> float | None:
        end = _machine_busy_ns()
        if self._machine is None or end is None:
            return None
        busy = end[0] - self._machine[0]
        total = end[1] - self._machine[1]
        own = time.process_time_ns() - self._own
        if total <= 0:
            return None
        return float(min(1.0, max(0.0, (busy - own) / total)))
