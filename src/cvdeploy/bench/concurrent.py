"""Throughput and latency under load: N requests in flight through a pool of worker threads.

ONNX Runtime and OpenVINO release the GIL while they compute, so threads are enough to keep N
requests in flight. Workers share ``sessions`` loaded copies of the model round-robin: an ONNX
Runtime session is safe to call from several threads; an OpenVINO compiled model gets one infer
request per worker. It is a closed loop: each worker sends its next request as soon as the last
one returned, and each request's latency is timed stage by stage as in the sequential harness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from cvdeploy.bench.harness import (
    MIN_RUNS,
    STAGES,
    Clock,
    ImageFeed,
    Measurement,
    MemoryProbe,
    PipelineLoader,
    execution_of,
    fallback_of,
    time_pass,
)
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes.base import RuntimeOptions


def worker_pipeline(pipe: Pipeline) -> Pipeline:
    """A pipeline for one worker thread over the same loaded model (no second copy of the weights)."""
    return Pipeline(pipe.contract, pipe.runtime.thread_copy(), pipe.artifact)


def throughput_options(options: RuntimeOptions, runtime: str, concurrency: int) -> RuntimeOptions:
    """Runtime settings for ``concurrency`` requests at once: each engine reads ``concurrency`` itself
    (OpenVINO's THROUGHPUT hint, ONNX Runtime's spinning off)."""
    return options.replace(concurrency=max(1, int(concurrency)))


def measure_concurrent(
    load: PipelineLoader,
    feed: ImageFeed,
    concurrency: int,
    sessions: int = 1,
    batch: int = 1,
    runs: int | None = 100,
    warmup: int = 10,
    duration_s: float | None = None,
    device: str = "cpu",
    clock: Clock = time.perf_counter_ns,
    on_pass: Callable[[], None] | None = None,
) -> Measurement:
    """``concurrency`` closed-loop workers over ``sessions`` models; ``runs`` requests are measured.

    The cold start is the creation of all sessions plus one first request; then ``warmup``
    requests (at least one per worker) run concurrently and are discarded.
    """
    if runs is None and duration_s is None:
        raise ValueError("measure_concurrent needs runs or duration_s")
    memory = MemoryProbe()
    memory.reset()
    t0 = clock()
    pipes = [load() for _ in range(max(1, sessions))]
    session_ns = clock() - t0
    first = time_pass(pipes[0], feed.batch(0, batch), clock)[-1]
    workers = [worker_pipeline(pipes[w % len(pipes)]) for w in range(concurrency)]

    warm_rows = _run_phase(workers, feed, batch, max(warmup, concurrency), None, 1, clock, None)
    start = clock()
    deadline = start + int(duration_s * 1e9) if duration_s else None
    rows = _run_phase(workers, feed, batch, runs, deadline, 1 + len(warm_rows), clock, on_pass)
    wall = clock() - start
    table = np.asarray(rows, dtype=np.int64).reshape(-1, len(STAGES))
    result = Measurement(
        samples_ns={stage: table[:, k].copy() for k, stage in enumerate(STAGES)},
        warmup_ns=np.asarray([r[-1] for r in warm_rows], dtype=np.int64),
        session_ns=int(session_ns),
        first_pass_ns=int(first),
        wall_ns=int(wall),
        images_per_pass=batch,
        device_used=pipes[0].runtime.device_used,
        fell_back=fallback_of(pipes[0], device),
        execution=execution_of(pipes[0]),
        peak_rss_mb=memory.peak_mb(),
        rss_mb=memory.rss_mb(),
    )
    result.notes.append(f"{concurrency} requests in flight over {len(pipes)} session(s)")
    return result


def _run_phase(
    workers: list[Pipeline],
    feed: ImageFeed,
    batch: int,
    total: int | None,
    deadline: int | None,
    offset: int,
    clock: Clock,
    on_pass: Callable[[], None] | None,
) -> list[tuple[int, int, int, int, int]]:
    """Keep every worker busy until ``total`` requests are taken or the deadline passed."""
    lock = threading.Lock()
    taken = 0
    rows: list[tuple[int, int, int, int, int]] = []
    errors: list[BaseException] = []

    def take() -> int | None:
        nonlocal taken
        with lock:
            if errors:
                return None
            if total is not None and taken >= total:
                return None
            if deadline is not None and taken >= MIN_RUNS and clock() >= deadline:
                return None
            taken += 1
            return taken - 1

    def work(pipe: Pipeline) -> None:
        try:
            while (i := take()) is not None:
                row = time_pass(pipe, feed.batch(offset + i, batch), clock)
                with lock:
                    rows.append(row)
                if on_pass is not None:
                    on_pass()
        except BaseException as exc:  # surfaced in the calling thread below
            with lock:
                errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(p,), name=f"bench-worker-{k}", daemon=True)
        for k, p in enumerate(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return rows
