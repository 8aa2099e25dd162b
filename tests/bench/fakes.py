"""Fakes for the harness seam: a runtime that needs no model and a clock that only it advances."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from cvdeploy.contract import Contract, InputSpec, OutputSpec
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes.base import Execution, Runtime, RuntimeOptions, TensorInfo

SIZE = 64
ANCHORS = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2


class FakeClock:
    """A nanosecond clock that stands still until someone advances it (thread-safe)."""

    def __init__(self) -> None:
        self.now = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self.now

    def advance(self, ns: int) -> None:
        with self._lock:
            self.now += ns


class FakeRuntime(Runtime):
    """Returns empty YOLOv8 outputs; each call "takes" ``durations_ms[i]`` on the fake clock (the
    last value repeating), and optionally really sleeps on its first call."""

    name = "fake"

    def __init__(
        self,
        clock: FakeClock | None,
        durations_ms: list[float],
        sleep_first_s: float = 0.0,
        static_batch: int | None = None,
    ) -> None:
        super().__init__(Path("fake.onnx"), RuntimeOptions())
        self.clock = clock
        self.durations_ms = durations_ms
        self.sleep_first_s = sleep_first_s
        self.calls = 0
        batch: int | str = static_batch if static_batch else "batch"
        self._inputs = [TensorInfo("images", (batch, 3, SIZE, SIZE), "float32")]
        self._outputs = [TensorInfo("output0", (batch, 6, ANCHORS), "float32")]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import time

        k = min(self.calls, len(self.durations_ms) - 1)
        if self.calls == 0 and self.sleep_first_s:
            time.sleep(self.sleep_first_s)
        self.calls += 1
        if self.clock is not None:
            self.clock.advance(int(self.durations_ms[k] * 1e6))
        batch = next(iter(feeds.values())).shape[0]
        return [np.zeros((batch, 6, ANCHORS), np.float32)]

    def execution(self) -> Execution:
        return Execution("fp32", "a fake runtime computes nothing", threads=1, spinning=False)


def fake_contract() -> Contract:
    return Contract(
        task="detect",
        classes=["a", "b"],
        input=InputSpec(height=SIZE, width=SIZE),
        output=OutputSpec(format="yolov8"),
    )


def fake_pipeline(runtime: FakeRuntime) -> Pipeline:
    return Pipeline(fake_contract(), runtime)
