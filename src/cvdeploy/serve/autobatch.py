"""Whether to batch: decided per model version at load, from a quick measurement on this CPU.

Batching pays only where the runtime runs B images at once faster than B times one image. On a
GPU it nearly always does; on a CPU it depends on the runtime, the precision and the CPU (measured
on an AMD EPYC VM with zoo:n at 640, ONNX Runtime FP32 ran batch 8 at 0.8× the images per second
of batch 1 — batching there only adds queue delay). So with ``batching: auto`` (the default) the
repository measures, before the version serves:

    batch 1, B times  ─┐  interleaved ``rounds`` times (within a time budget), through the
    batch B, once     ─┘  server's own runner (the same concatenation, the same session)
        → gain = median over rounds of (time of B single calls) / (time of one batch-B call)
        → batching on when gain ≥ ``MIN_GAIN``, else off (requests then run one per call)

Where not batching means another runtime (OpenVINO compiles a dynamic-batch model for batch 1, faster per
image than its dynamic form), batch 1 is timed on that runtime, so batching must beat what it would replace.
The median of interleaved per-round ratios resists a burst of foreign load on a shared machine. A
model loaded at run time is measured while the other models serve, whose traffic can sway it; a
measurement is made once per artifact and settings in a process (a reload reuses it).
``batching: on`` / ``off`` (config or ``--batching``) skips the measurement. The choice, its
reason and its numbers are kept on the version (:class:`BatchingChoice`): the log, the load
audit event, ``GET /v2/models/NAME`` (``parameters.batching``), ``/config`` and ``/stats`` show it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cvdeploy.pipeline import Pipeline

#: Batching is turned on when batch B serves at least this many times the images per second of batch 1.
MIN_GAIN = 1.1
#: Rough bound on the seconds the measurement may take (it always completes one round).
BUDGET_S = 1.5
ROUNDS = 3

Runner = Callable[[list[dict[str, np.ndarray]]], list[np.ndarray]]


@dataclass(frozen=True)
class Measurement:
    """Per-image milliseconds at batch 1 and at batch ``batch``, and the gain (median of rounds)."""

    batch: int
    batch1_ms: float
    batched_ms: float
    gain: float
    rounds: int
    threshold: float = MIN_GAIN


@dataclass(frozen=True)
class BatchingChoice:
    """Whether a model version batches requests, why, and the measurement behind it (if any)."""

    setting: str  # auto | on | off: what the configuration asked for
    enabled: bool
    max_batch_size: int  # rows per runtime call when enabled
    reason: str
    measurement: Measurement | None = None

    def describe(self) -> str:
        """One line for the log and ``serve --check``."""
        return f"{'on' if self.enabled else 'off'} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"setting": self.setting, "enabled": self.enabled,
                               "max_batch_size": self.max_batch_size, "reason": self.reason}  # fmt: skip
        if self.measurement is not None:
            doc["measurement"] = asdict(self.measurement)
        return doc


def probe_feeds(pipe: Pipeline) -> dict[str, np.ndarray] | None:
    """One random example (batch 1) for every input of the runtime, or None when a dimension other
    than the image's height and width is dynamic (nothing to measure with then)."""
    spec = pipe.contract.input
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for t in pipe.runtime.inputs:
        shape: list[int] = [1]
        for i, d in enumerate(t.shape[1:], start=1):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif t.name == pipe.input_name and len(t.shape) == 4:
                hw = (2, 3) if spec.layout == "NCHW" else (1, 2)
                if i not in hw:
                    return None
                shape.append(spec.height if i == hw[0] else spec.width)
            else:
                return None
        dtype = np.dtype(t.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[t.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[t.name] = rng.integers(0, 255, shape).astype(dtype)
        else:
            return None
    return feeds or None


def measure_batching(
    pipe: Pipeline, batch: int, runner: Runner | None = None, budget_s: float = BUDGET_S, rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter, single_runner: Runner | None = None,
) -> Measurement | None:  # fmt: skip
    """Time ``batch`` single calls against one call of ``batch`` rows, interleaved ``rounds`` times (fewer
    when one round takes more than a third of ``budget_s``); None when the model cannot be probed.

    ``single_runner``: what runs one request when the server does not batch, where that is another
    runtime (OpenVINO compiled for batch 1, faster than its dynamic-batch form); default ``runner``."""
    from cvdeploy.serve.repository import make_runner

    feeds = probe_feeds(pipe)
    if feeds is None:
        return None
    run = runner or make_runner(pipe)
    run_one = single_runner or run
    single = [feeds]
    many = [feeds] * batch
    run_one(single)  # warm-up: first calls allocate and may compile
    run(many)
    gains, one, both = [], [], []
    start = clock()
    for r in range(max(1, rounds)):
        t0 = clock()
        for _ in range(batch):
            run_one(single)
        t1 = clock()
        run(many)
        t2 = clock()
        one.append((t1 - t0) / batch)
        both.append((t2 - t1) / batch)
        gains.append((t1 - t0) / max(t2 - t1, 1e-9))
        elapsed = clock() - start
        if r + 1 < rounds and elapsed / (r + 1) * (r + 2) > budget_s:
            break
    return Measurement(
        batch=batch, batch1_ms=statistics.median(one) * 1e3, batched_ms=statistics.median(both) * 1e3,
        gain=statistics.median(gains), rounds=len(gains),
    )  # fmt: skip


_cache: dict[tuple[Any, ...], Measurement | None] = {}
_cache_lock = threading.Lock()


def choose_batching(
    pipe: Pipeline, setting: str, max_batch_size: int, batchable: bool, runner: Runner | None = None,
    key: tuple[Any, ...] | None = None, clock: Callable[[], float] = time.perf_counter,
    single_runner: Runner | None = None,
) -> BatchingChoice:  # fmt: skip
    """Decide batching for a model version (see the module docstring).

    ``key`` identifies the artifact and runtime settings: a measurement is made once per key in this
    process (a reload of the same artifact reuses it). ``single_runner``: see :func:`measure_batching`.
    """
    if not batchable:
        return BatchingChoice(setting, False, 1, "the model has a fixed batch dimension")
    if max_batch_size <= 1:
        return BatchingChoice(setting, False, 1, f"max_batch_size is {max_batch_size}")
    if setting == "on":
        return BatchingChoice(setting, True, max_batch_size, "batching: on (configured)")
    if setting == "off":
        return BatchingChoice(setting, False, 1, "batching: off (configured)")
    with _cache_lock:
        cached = key is not None and key in _cache
        m = _cache[key] if cached and key is not None else None
    if not cached:
        m = measure_batching(pipe, max_batch_size, runner, clock=clock, single_runner=single_runner)
        if key is not None:
            with _cache_lock:
                _cache[key] = m
    if m is None:
        return BatchingChoice(setting, False, 1, "not measurable (an input has dynamic dimensions); "
                                                 "set batching: on to batch anyway")  # fmt: skip
    runtime = f"{pipe.runtime.name} {pipe.runtime.execution().precision}"
    numbers = (f"batch {m.batch} {m.batched_ms:.2f} ms/image vs batch 1 {m.batch1_ms:.2f}: "
               f"{m.gain:.2f}x on {runtime}, needs {MIN_GAIN:g}x")  # fmt: skip
    if m.gain >= MIN_GAIN:
        return BatchingChoice(setting, True, max_batch_size, f"measured {numbers}", m)
    return BatchingChoice(setting, False, 1, f"measured {numbers}", m)
