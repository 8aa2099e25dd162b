"""Benchmarking that people can trust and paste into an issue.

    run_bench(bundle, ...) -> BenchReport      sweep, measure, profile, recommend
    compare_reports(a, b)  -> Comparison       is a difference between two reports real?

Measurement: real images through the one pipeline, every stage timed with
``time.perf_counter_ns``; cold start and warm-up reported apart; raw samples kept in the JSON.
"""

from __future__ import annotations

from cvdeploy.bench.compare import Comparison, PairComparison, compare_reports, load_report
from cvdeploy.bench.config import BenchConfig, BenchSettings
from cvdeploy.bench.harness import STAGES, ImageFeed, Measurement, measure, time_pass
from cvdeploy.bench.profile import OperatorProfile
from cvdeploy.bench.recommend import Recommendation, pareto_front, recommend
from cvdeploy.bench.report import BenchReport
from cvdeploy.bench.results import BenchResult, SkippedConfig
from cvdeploy.bench.run import Progress, run_bench
from cvdeploy.bench.stats import LatencyStats, bootstrap_median_ratio, mann_whitney_u, summarize

__all__ = [
    "STAGES",
    "BenchConfig",
    "BenchReport",
    "BenchResult",
    "BenchSettings",
    "Comparison",
    "ImageFeed",
    "LatencyStats",
    "Measurement",
    "OperatorProfile",
    "PairComparison",
    "Progress",
    "Recommendation",
    "SkippedConfig",
    "bootstrap_median_ratio",
    "compare_reports",
    "load_report",
    "mann_whitney_u",
    "measure",
    "pareto_front",
    "recommend",
    "run_bench",
    "summarize",
    "time_pass",
]
