"""The measuring harness: real images through the one pipeline, each stage timed on its own.

One *pass* is one request: a batch of JPEG-encoded images is decoded, preprocessed, run through
the runtime and decoded/NMS'd, with ``time.perf_counter_ns`` read between the stages and nothing
else inside the timed parts. A measurement is: load the pipeline (session creation) and run one
pass (first inference) — together the cold start —, then ``warmup`` passes reported apart, then the
measured passes.

The seam: :func:`measure` takes a ``load`` callable that returns a :class:`Pipeline`, and an
optional clock, so tests can pass a pipeline around a fake runtime and a fake clock.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cvdeploy.errors import InputError
from cvdeploy.images import decode_image, find_images, sample_images
from cvdeploy.pipeline import Pipeline

# stage names in pipeline order; "total" is the whole request
STAGES = ("image_decode", "preprocess", "inference", "postprocess", "total")
STAGE_LABELS = {
    "image_decode": "image decode",
    "preprocess": "preprocess",
    "inference": "inference",
    "postprocess": "decode/NMS",
    "total": "total",
}
MIN_RUNS = 5  # a time budget never yields fewer measured passes than this

Clock = Callable[[], int]  # nanoseconds from a monotonic clock
PipelineLoader = Callable[[], Pipeline]


class ImageFeed:
    """Encoded images (JPEG/PNG bytes) handed out round-robin, one batch per pass.

    Decoding them is part of what is measured, exactly as a server receiving uploads would do.
    """

    def __init__(self, encoded: Sequence[bytes], names: Sequence[str]) -> None:
        if not encoded:
            raise InputError("no images to benchmark with")
        self.encoded = list(encoded)
        self.names = list(names)

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray], quality: int = 95) -> ImageFeed:
        """JPEG-encode BGR ``(h, w, 3)`` uint8 arrays once, up front."""
        encoded = []
        for img in images:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise InputError("could not JPEG-encode a benchmark image")
            encoded.append(buf.tobytes())
        return cls(encoded, [f"sample{i}.jpg" for i in range(len(encoded))])

    @classmethod
    def from_paths(cls, sources: str | Path | Sequence[str | Path], limit: int | None = None) -> ImageFeed:
        """The files as they are on disk (a folder is searched for images)."""
        items = [sources] if isinstance(sources, str | Path) else list(sources)
        files = find_images(items)
        if not files:
            raise InputError(
                f"no images found in {', '.join(str(s) for s in items)} (looked for .jpg .png .bmp …)"
            )
        files = files[:limit] if limit else files
        feed = cls([f.read_bytes() for f in files], [str(f) for f in files])
        for data, name in zip(feed.encoded, feed.names, strict=True):
            decode_image(data, name)  # a corrupt file is a clear error now, not a crash mid-run
        return feed

    @classmethod
    def samples(cls, n: int = 8) -> ImageFeed:
        """Real photographs shipped with installed packages (never blank tensors: some kernels are
        data-dependent, and NMS certainly is)."""
        return cls.from_arrays(sample_images(n))

    def batch(self, index: int, size: int) -> list[bytes]:
        """The ``index``-th batch of ``size`` images, cycling through the feed."""
        n = len(self.encoded)
        start = index * size
        return [self.encoded[(start + k) % n] for k in range(size)]

    def describe(self) -> dict[str, object]:
        return {
            "count": len(self.encoded),
            "names": self.names[:20],
            "mean_kb": round(sum(len(e) for e in self.encoded) / len(self.encoded) / 1024, 1),
        }


def time_pass(
    pipe: Pipeline, encoded: Sequence[bytes], clock: Clock = time.perf_counter_ns
) -> tuple[int, int, int, int, int]:
    """Run one request through the pipeline; nanoseconds of (image decode, preprocess, inference,
    decode/NMS, total)."""
    t0 = clock()
    tensor, geometries, read = pipe.load(encoded, clock)  # as predict reads a file
    t2 = clock()
    raw = pipe.infer(tensor)
    t3 = clock()
    pipe.decode(raw, geometries)
    t4 = clock()
    return read, t2 - t0 - read, t3 - t2, t4 - t3, t4 - t0


class MemoryProbe:
    """Resident memory of this process; the peak is reset per measurement where Linux allows it.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark (``VmHWM``), so
    each configuration's peak is its own. Elsewhere the process-wide ``ru_maxrss`` is reported.
    """

    def __init__(self) -> None:
        self.resettable = False

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    @staticmethod
    def _status_kb(key: str) -> float | None:
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(key + ":"):
                        return float(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def rss_mb(self) -> float | None:
        kb = self._status_kb("VmRSS")
        return None if kb is None else kb / 1024

    def peak_mb(self) -> float:
        kb = self._status_kb("VmHWM")
        if kb is not None:
            return kb / 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class Measurement:
    """Raw timings of one configuration, in nanoseconds, plus what ran them.

    ``samples_ns[stage]``: ``(runs,)`` per measured pass; ``warmup_ns``: ``(warmup,)`` totals.
    """

    samples_ns: dict[str, np.ndarray]
    warmup_ns: np.ndarray
    session_ns: int
    first_pass_ns: int
    wall_ns: int
    images_per_pass: int
    device_used: str = "cpu"
    fell_back: bool = False
    execution: dict[str, Any] = field(
        default_factory=dict
    )  # what the engine really ran: precision, threads, …
    peak_rss_mb: float | None = None
    rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    cpu_ns: np.ndarray | None = None  # ``(runs,)`` this process's CPU time per measured pass
    foreign_load: float | None = None  # share of the machine's CPU other processes used meanwhile (0-1)

    @property
    def runs(self) -> int:
        return int(self.samples_ns["total"].size)

    @property
    def throughput(self) -> float:
        """Images per second over the measured phase (wall clock)."""
        return self.runs * self.images_per_pass / (self.wall_ns / 1e9) if self.wall_ns > 0 else 0.0


def execution_of(pipe: Pipeline) -> dict[str, Any]:
    """The engine's read-back of what it executes (precision, threads, spinning, pinned settings)."""
    return pipe.runtime.execution().to_dict()


def fallback_of(pipe: Pipeline, requested_device: str) -> bool:
    """Whether a requested accelerator silently became the CPU."""
    flag = getattr(pipe.runtime, "fell_back", None)
    if isinstance(flag, bool) and flag:
        return True
    if requested_device in ("cpu", "auto"):
        return False
    return "CPU" in pipe.runtime.device_used.upper()


def _stop(i: int, runs: int | None, deadline: int | None, now: Clock) -> bool:
    if runs is not None and i >= runs:
        return True
    return deadline is not None and i >= MIN_RUNS and now() >= deadline


def measure(
    load: PipelineLoader,
    feed: ImageFeed,
    batch: int = 1,
    runs: int | None = 100,
    warmup: int = 10,
    duration_s: float | None = None,
    device: str = "cpu",
    clock: Clock = time.perf_counter_ns,
    on_pass: Callable[[], None] | None = None,
    cpu_clock: Clock | None = None,
) -> Measurement:
    """Cold start, warm-up and measured passes of one pipeline, one request at a time.

    ``runs`` and ``duration_s`` bound the measured phase (whichever ends first; at least
    ``MIN_RUNS`` passes under a time budget). ``on_pass`` is called after every pass outside the
    timed region (progress bars). ``cpu_clock`` (process CPU time; None to skip) gives each pass's CPU
    share, from which :mod:`cvdeploy.bench.noise` finds the passes foreign load slowed down; by default
    the process CPU clock when ``clock`` is the real one (a fake clock gets no CPU times).
    """
    from cvdeploy.bench.noise import LoadMeter

    if cpu_clock is None and clock is time.perf_counter_ns:
        cpu_clock = time.process_time_ns

    if runs is None and duration_s is None:
        raise ValueError("measure needs runs or duration_s")
    memory = MemoryProbe()
    memory.reset()
    t0 = clock()
    pipe = load()
    session_ns = clock() - t0
    first = time_pass(pipe, feed.batch(0, batch), clock)[-1]
    warm = [time_pass(pipe, feed.batch(1 + i, batch), clock)[-1] for i in range(warmup)]
    if on_pass is not None:
        for _ in range(warmup):
            on_pass()
    rows: list[tuple[int, int, int, int, int]] = []
    cpu: list[int] = []
    meter = LoadMeter()
    meter.start()
    start = clock()
    deadline = start + int(duration_s * 1e9) if duration_s else None
    offset = 1 + warmup
    while not _stop(len(rows), runs, deadline, clock):
        c0 = cpu_clock() if cpu_clock is not None else 0
        rows.append(time_pass(pipe, feed.batch(offset + len(rows), batch), clock))
        if cpu_clock is not None:
            cpu.append(cpu_clock() - c0)
        if on_pass is not None:
            on_pass()
    wall = clock() - start
    foreign = meter.stop()
    table = np.asarray(rows, dtype=np.int64).reshape(-1, len(STAGES))
    result = Measurement(
        samples_ns={stage: table[:, k].copy() for k, stage in enumerate(STAGES)},
        warmup_ns=np.asarray(warm, dtype=np.int64),
        session_ns=int(session_ns),
        first_pass_ns=int(first),
        wall_ns=int(wall),
        images_per_pass=batch,
        device_used=pipe.runtime.device_used,
        fell_back=fallback_of(pipe, device),
        execution=execution_of(pipe),
        peak_rss_mb=memory.peak_mb(),
        rss_mb=memory.rss_mb(),
        cpu_ns=np.asarray(cpu, dtype=np.int64) if cpu_clock is not None else None,
        foreign_load=foreign,
    )
    if not memory.resettable:
        result.notes.append("peak memory is the process-wide high-water mark (it cannot be reset here)")
    del pipe
    return result
