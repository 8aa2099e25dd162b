"""The monitoring tables on SQLite and PostgreSQL, the background writer, and retention."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from cvdeploy.monitor.capture import Observation
from cvdeploy.monitor.settings import MonitorConfig
from cvdeploy.monitor.store import ModelRecord, MonitorStore, RequestRow, SampleRow
from cvdeploy.monitor.writer import BackgroundWriter

from .conftest import T0, Clock


def _row(i: int, t: float, model: str = "m", status: int = 200) -> RequestRow:
    return RequestRow(f"r{i:04d}", t, model, 1, "image", status, f"req{i}", {"inference": 5.0 + i, "total": 9.0 + i},
                      {"brightness": 100.0 + i}, {"count": 1, "confidences": [0.5], "areas": [0.1], "classes": ["a"]},
                      i % 2 == 0)  # fmt: skip


def test_round_trip_on_both_backends(db_url: str) -> None:
    store = MonitorStore.open(db_url)
    try:
        store.record_model(
            ModelRecord("m", 1, T0, "/b", "onnx-fp32", "detect", ["a"], {"schema": "x", "images": 1})
        )
        store.record_model(ModelRecord("m", 1, T0 + 5, "/b2", "onnx-int8", "detect", ["a"], None))  # replaces
        rows = [_row(i, T0 + i) for i in range(10)] + [_row(10, T0 + 10, status=503)]
        sample = SampleRow("r0000", T0, "m", 1, "req0", 640, 480, False, {"shape": [1, 3]}, [{"name": "o"}],
                           {"type": "detections", "count": 1}, "QUJD")  # fmt: skip
        store.insert(rows, [sample])
        got = store.requests("m", T0 + 2, T0 + 8)
        assert [r.id for r in got] == [f"r{i:04d}" for i in range(2, 8)]
        assert (
            got[0].features == {"brightness": 102.0} and got[0].latency_ms["total"] == 11.0 and got[0].sampled
        )
        assert [r.id for r in store.requests("m", T0, limit=3)] == ["r0008", "r0009", "r0010"]
        assert store.status_counts("m", T0, T0 + 100) == {200: 10, 503: 1}
        assert store.sample("r0000").thumbnail == "QUJD"  # type: ignore[union-attr]
        assert store.samples("m")[0].thumbnail is None  # listed without pixels
        (rec,) = store.models()
        assert (rec.artifact, rec.profile) == ("onnx-int8", None)
        assert store.span("m") == (T0, T0 + 10)
        assert store.prune(T0 + 5) == (5, 1)
        assert store.counts() == (6, 0)
    finally:
        store.close()


def _obs(t: float, img: np.ndarray | None = None, sampled: bool = False) -> Observation:
    return Observation(t, "m", 1, "image" if img is not None else "error", 200 if img is not None else 400,
                       image=img, sampled=sampled, timings={"inference": 0.01})  # fmt: skip


def test_writer_writes_in_the_background_and_flushes(store: MonitorStore, photos: list[np.ndarray]) -> None:
    w = BackgroundWriter(store, MonitorConfig())
    w.start()
    try:
        for i in range(20):
            assert w.submit(_obs(T0 + i, photos[i % 3], sampled=i < 4))
        assert w.flush(30)
    finally:
        w.close()
    assert store.counts() == (20, 4) and w.written == 20 and w.dropped == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking(
    store: MonitorStore, photos: list[np.ndarray]
) -> None:
    drops: list[tuple[str, int]] = []
    w = BackgroundWriter(
        store, MonitorConfig(), on_drop=lambda reason, n: drops.append((reason, n)), max_items=4
    )
    # not started: nothing drains the queue
    accepted = [w.submit(_obs(T0, photos[0])) for _ in range(6)]
    assert accepted == [True] * 4 + [False] * 2
    assert drops == [("queue_full", 1), ("queue_full", 1)] and w.dropped == 2
    w2 = BackgroundWriter(store, MonitorConfig(), on_drop=lambda reason, n: drops.append((reason, n)),
                          max_bytes=photos[0].nbytes + 1)  # fmt: skip
    assert w2.submit(_obs(T0, photos[0])) and not w2.submit(_obs(T0, photos[0]))
    assert drops[-1] == ("queue_bytes", 1)


def test_a_failing_database_is_counted_not_raised(store: MonitorStore, photos: list[np.ndarray]) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("database down")

    store.insert = broken  # type: ignore[method-assign]
    w = BackgroundWriter(store, MonitorConfig())
    w.start()
    try:
        assert w.submit(_obs(T0, photos[0]))
        assert w.flush(30)
    finally:
        w.close()
    assert w.dropped == 1 and w.written == 0


def test_retention_deletes_only_what_is_older(store: MonitorStore, photos: list[np.ndarray]) -> None:
    clock = Clock()
    ages_days = (30, 8, 6.9, 1, 0)
    rows = [_row(i, clock.now - d * 86400) for i, d in enumerate(ages_days)]
    samples = [SampleRow(r.id, r.time, "m", 1, None, 10, 10, False, thumbnail="QUJD") for r in rows]
    store.insert(rows, samples)
    w = BackgroundWriter(store, MonitorConfig(retention="7d"), clock)
    assert w.prune() == (2, 2)
    assert store.counts() == (3, 3)
    ages = sorted(round((clock.now - r.time) / 86400, 1) for r in store.requests(None, 0))
    assert ages == [0.0, 1.0, 6.9]


def test_the_writer_prunes_on_its_own_schedule(store: MonitorStore, photos: list[np.ndarray]) -> None:
    clock = Clock()
    store.insert([_row(1, clock.now - 9 * 86400)])
    w = BackgroundWriter(store, MonitorConfig(retention="7d"), clock, prune_every_s=0.05)
    w.start()
    try:
        done = threading.Event()
        for _ in range(200):
            if store.counts()[0] == 0:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set()
    finally:
        w.close()


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    s = MonitorStore.open(str(tmp_path / "m.db"))
    s.close()
    assert (tmp_path / "m.db").stat().st_mode & 0o077 == 0
