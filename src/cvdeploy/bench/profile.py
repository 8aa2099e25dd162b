"""Per-operator hot spots: where inside the model the time goes.

Each engine's profiler is behind ``Runtime.profile_runs()`` (per-operator timings, one list per
inference: ONNX Runtime's trace, OpenVINO's performance counters); here they are averaged over
the measured runs (warm-up runs excluded) and ranked by time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvdeploy.bench.config import BenchConfig
from cvdeploy.bench.harness import ImageFeed
from cvdeploy.bundle import Bundle
from cvdeploy.errors import ModelError
from cvdeploy.images import decode_image
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import RuntimeOptions
from cvdeploy.runtimes.registry import ENGINES

log = logging.getLogger("cvdeploy")

KERNEL_SUFFIX = "_kernel_time"


@dataclass
class OpTime:
    """Time of one operator type or one node, per inference."""

    name: str
    op_type: str
    ms: float
    share: float  # of the summed operator time, 0..1
    calls: float  # executions per inference (nodes of that type, for a type row)
    detail: str = ""  # e.g. OpenVINO's kernel (``brgconv_avx2_f32``) or ORT's provider

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "ms": self.ms,
            "share": self.share,
            "calls": self.calls,
            "detail": self.detail,
        }


@dataclass
class OperatorProfile:
    """Top operators of one configuration, by op type and by node."""

    key: str
    artifact: str
    runtime: str
    source: str  # which profiler produced it
    runs: int
    total_ms: float  # summed operator time per inference
    by_type: list[OpTime] = field(default_factory=list)
    by_node: list[OpTime] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "artifact": self.artifact,
            "runtime": self.runtime,
            "source": self.source,
            "runs": self.runs,
            "total_ms": self.total_ms,
            "by_type": [o.to_dict() for o in self.by_type],
            "by_node": [o.to_dict() for o in self.by_node],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatorProfile:
        return cls(
            d["key"],
            d["artifact"],
            d["runtime"],
            d["source"],
            int(d["runs"]),
            float(d["total_ms"]),
            [OpTime(**o) for o in d.get("by_type", [])],
            [OpTime(**o) for o in d.get("by_node", [])],
        )


def rank(
    node_times: Iterable[tuple[str, str, float, str]], runs: int, top: int
) -> tuple[float, list[OpTime], list[OpTime]]:
    """Aggregate ``(node, op type, µs, detail)`` events from ``runs`` inferences into the top ``top``
    op types and nodes by time per inference; returns (total ms per inference, by type, by node)."""
    per_node: dict[str, list[Any]] = {}
    for node, op, us, detail in node_times:
        entry = per_node.setdefault(node, [op, 0.0, 0, detail])
        entry[1] += us
        entry[2] += 1
    total_us = sum(e[1] for e in per_node.values())
    runs = max(runs, 1)
    total_ms = total_us / 1e3 / runs
    share = (lambda us: us / total_us) if total_us > 0 else (lambda us: 0.0)
    by_node = [
        OpTime(n, e[0], e[1] / 1e3 / runs, share(e[1]), e[2] / runs, e[3]) for n, e in per_node.items()
    ]
    by_node.sort(key=lambda o: -o.ms)
    types: dict[str, list[Any]] = {}
    for e in per_node.values():
        t = types.setdefault(e[0], [0.0, 0, {}])
        t[0] += e[1]
        t[1] += 1
        t[2][e[3]] = t[2].get(e[3], 0.0) + e[1]
    by_type = [
        OpTime(op, op, v[0] / 1e3 / runs, share(v[0]), float(v[1]), max(v[2], key=v[2].get) if v[2] else "")
        for op, v in types.items()
    ]
    by_type.sort(key=lambda o: -o.ms)
    return total_ms, by_type[:top], by_node[:top]


def parse_ort_trace(
    events: list[dict[str, Any]], skip_runs: int = 0
) -> tuple[int, list[tuple[str, str, float, str]]]:
    """Node events of an ONNX Runtime trace after the first ``skip_runs`` inferences.

    Returns (number of inferences kept, ``[(node, op type, µs, provider)]``).
    """
    from cvdeploy.runtimes.onnxruntime import trace_runs

    runs = trace_runs(events)[skip_runs:]
    return len(runs), [row for run in runs for row in run]


def profile_config(
    bundle: Bundle, config: BenchConfig, feed: ImageFeed, runs: int = 20, warmup: int = 3, top: int = 15
) -> OperatorProfile:
    """Run ``warmup + runs`` inferences of one configuration with the runtime's profiler on."""
    from cvdeploy.runtimes.registry import engine

    eng = engine(config.runtime)
    if eng.profiler is None:
        raise ModelError(
            f"no operator profiler for runtime {config.runtime!r} "
            f"(profile one of {', '.join(e.name for e in ENGINES.values() if e.profiler)})"
        )
    tensor = _tensor(bundle, config, feed)
    pipe = _load(bundle, config, RuntimeOptions(config.threads, config.device, profile=True))
    for _ in range(warmup + runs):
        pipe.infer(tensor)
    measured = [[r for r in run if r[2] > 0] for run in pipe.runtime.profile_runs()[warmup:]]
    kept = len(measured)
    total, by_type, by_node = rank([r for run in measured for r in run], kept, top)
    return OperatorProfile(
        config.key, config.artifact, config.runtime, eng.profiler, kept, total, by_type, by_node
    )


def _load(bundle: Bundle, config: BenchConfig, options: RuntimeOptions) -> Pipeline:
    spec = bundle.contract.input
    imgsz = None if tuple(config.imgsz) == (spec.height, spec.width) else tuple(config.imgsz)
    return Pipeline.from_bundle(bundle, config.artifact, options, imgsz)  # type: ignore[arg-type]


def _tensor(bundle: Bundle, config: BenchConfig, feed: ImageFeed) -> np.ndarray:
    """A real preprocessed batch at the configuration's size (never zeros)."""
    contract = bundle.contract.model_copy(deep=True)
    contract.input.height, contract.input.width = config.imgsz
    from cvdeploy.preprocess import Preprocessor

    images = [decode_image(b) for b in feed.batch(0, config.batch)]
    return Preprocessor(contract.input)(images)[0]
