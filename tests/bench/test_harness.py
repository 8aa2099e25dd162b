"""The harness: warm-up really excluded, cold start apart, stages timed, real images, concurrency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bench.concurrent import measure_concurrent, worker_pipeline
from cvdeploy.bench.harness import STAGES, ImageFeed, MemoryProbe, measure, time_pass
from cvdeploy.errors import ImageError, InputError
from cvdeploy.pipeline import Pipeline

from .fakes import FakeClock, FakeRuntime, fake_pipeline


@pytest.fixture(scope="module")
def feed(photos: list[np.ndarray]) -> ImageFeed:
    return ImageFeed.from_arrays(photos[:3])


def test_warmup_and_cold_start_are_excluded(feed: ImageFeed, fake_clock: FakeClock) -> None:
    # first call 1000 ms (cold), two warm-up calls 50 ms, then a steady 2 ms
    runtime = FakeRuntime(fake_clock, [1000.0, 50.0, 50.0, 2.0])
    m = measure(lambda: fake_pipeline(runtime), feed, batch=1, runs=5, warmup=2, clock=fake_clock)
    assert m.first_pass_ns == 1000 * 10**6
    assert m.warmup_ns.tolist() == [50 * 10**6, 50 * 10**6]
    assert m.samples_ns["inference"].tolist() == [2 * 10**6] * 5
    # only the runtime advances the fake clock, so every other stage reads zero and total == inference
    assert m.samples_ns["total"].tolist() == [2 * 10**6] * 5
    assert m.samples_ns["preprocess"].tolist() == [0] * 5
    assert m.runs == 5
    assert runtime.calls == 1 + 2 + 5
    assert m.throughput == pytest.approx(5 / 0.010)


def test_a_sleeping_first_call_lands_in_the_cold_start(feed: ImageFeed) -> None:
    runtime = FakeRuntime(None, [0.0], sleep_first_s=0.05)
    m = measure(lambda: fake_pipeline(runtime), feed, batch=1, runs=4, warmup=1)
    assert m.first_pass_ns >= 50 * 10**6
    assert m.warmup_ns.size == 1
    assert m.runs == 4


def test_time_budget_stops_the_measured_phase(feed: ImageFeed, fake_clock: FakeClock) -> None:
    runtime = FakeRuntime(fake_clock, [10.0])
    m = measure(lambda: fake_pipeline(runtime), feed, runs=None, warmup=0, duration_s=0.1, clock=fake_clock)
    assert m.runs == 10  # 100 ms of budget at 10 ms a pass
    capped = measure(
        lambda: fake_pipeline(runtime), feed, runs=3, warmup=0, duration_s=10.0, clock=fake_clock
    )
    assert capped.runs == 3


def test_batches_cycle_through_the_images(feed: ImageFeed) -> None:
    assert feed.batch(0, 2) == [feed.encoded[0], feed.encoded[1]]
    assert feed.batch(1, 2) == [feed.encoded[2], feed.encoded[0]]
    assert all(b[:2] == b"\xff\xd8" for b in feed.encoded)  # real JPEG bytes, decoded in the timed stage


def test_time_pass_stages_add_up(tiny_bundle_path: Path, feed: ImageFeed) -> None:
    pipe = Pipeline.from_bundle(tiny_bundle_path, "onnx-fp32")
    parts = time_pass(pipe, feed.batch(0, 2))
    assert len(parts) == len(STAGES)
    assert all(p > 0 for p in parts)
    assert sum(parts[:-1]) == parts[-1]


def test_feed_from_a_folder_and_bad_inputs(photo_dir: Path, tmp_path: Path) -> None:
    feed = ImageFeed.from_paths(photo_dir, limit=2)
    assert len(feed.encoded) == 2
    assert feed.names[0].endswith(".jpg")
    with pytest.raises(InputError, match="no such file"):
        ImageFeed.from_paths(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        ImageFeed.from_paths(tmp_path / "empty")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="cannot decode"):
        ImageFeed.from_paths(tmp_path / "bad.jpg")


def test_memory_probe_reports_a_peak() -> None:
    probe = MemoryProbe()
    probe.reset()
    peak = probe.peak_mb()
    assert peak > 0
    rss = probe.rss_mb()
    assert rss is None or rss <= peak + 1.0


def test_concurrent_counts_every_request(feed: ImageFeed, fake_clock: FakeClock) -> None:
    runtime = FakeRuntime(fake_clock, [5.0])
    m = measure_concurrent(
        lambda: fake_pipeline(runtime), feed, concurrency=3, sessions=1, runs=12, warmup=2, clock=fake_clock
    )
    assert m.runs == 12
    assert m.warmup_ns.size == 3  # at least one warm-up request per worker
    assert runtime.calls == 1 + 3 + 12
    assert "3 requests in flight over 1 session(s)" in m.notes


@pytest.mark.parametrize("artifact", ["onnx-fp32", "openvino-fp32"])
def test_concurrent_on_real_runtimes(tiny_bundle_path: Path, feed: ImageFeed, artifact: str) -> None:
    m = measure_concurrent(
        lambda: Pipeline.from_bundle(tiny_bundle_path, artifact),
        feed,
        concurrency=2,
        sessions=1,
        runs=4,
        warmup=2,
    )
    assert m.runs == 4
    assert (m.samples_ns["inference"] > 0).all()


def test_worker_pipelines_get_their_own_openvino_request(tiny_bundle_path: Path) -> None:
    pipe = Pipeline.from_bundle(tiny_bundle_path, "openvino-fp32")
    worker = worker_pipeline(pipe)
    assert worker.runtime is not pipe.runtime
    assert worker.runtime.outputs == pipe.runtime.outputs
    onnx_pipe = Pipeline.from_bundle(tiny_bundle_path, "onnx-fp32")
    assert worker_pipeline(onnx_pipe).runtime is onnx_pipe.runtime  # an ORT session is thread-safe
