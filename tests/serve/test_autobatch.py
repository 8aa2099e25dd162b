"""The batching choice at load: measured with a fake runner and clock (no wall-clock assertions)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cvdeploy.contract import InputSpec
from cvdeploy.runtimes import TensorInfo
from cvdeploy.serve.autobatch import MIN_GAIN, choose_batching, measure_batching, probe_feeds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_pipe(shape: tuple[Any, ...] = ("batch", 3, 64, 64), dtype: str = "float32") -> Any:
    runtime = SimpleNamespace(
        name="fake", inputs=[TensorInfo("images", shape, dtype)],
        execution=lambda: SimpleNamespace(precision="fp32"),
    )  # fmt: skip
    return SimpleNamespace(contract=SimpleNamespace(input=InputSpec(height=48, width=80)), runtime=runtime,
                           input_name="images")  # fmt: skip


def costing(clock: Clock, fixed: float, per_row: float, seen: list[tuple[int, ...]]) -> Any:
    """A runner that 'takes' ``fixed + per_row * rows`` seconds on the fake clock."""

    def run(feeds_list: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
        x = np.concatenate([f["images"] for f in feeds_list])
        seen.append(x.shape)
        clock.now += fixed + per_row * x.shape[0]
        return [x]

    return run


@pytest.mark.parametrize(
    ("fixed", "per_row", "enabled"), [(8.0, 1.0, True), (0.0, 1.0, False), (0.0, 2.0, False)]
)
def test_batching_is_on_only_where_the_measured_gain_reaches_the_threshold(
    fixed: float, per_row: float, enabled: bool
) -> None:
    clock, seen = Clock(), []  # type: ignore[var-annotated]
    pipe = fake_pipe(("batch", 3, "height", "width"))
    m = measure_batching(pipe, 8, costing(clock, fixed, per_row, seen), clock=clock)
    assert m is not None
    # batch 1: fixed + per_row per image; batch 8: fixed / 8 + per_row per image (the fake clock: arithmetic, not time)
    assert m.batch1_ms == pytest.approx((fixed + per_row) * 1e3)
    assert m.batched_ms == pytest.approx((fixed / 8 + per_row) * 1e3)
    assert m.gain == pytest.approx((fixed + per_row) / (fixed / 8 + per_row))
    assert seen[0] == (1, 3, 48, 80) and (8, 3, 48, 80) in seen  # the contract's size fills dynamic dims
    clock.now = 0.0
    choice = choose_batching(pipe, "auto", 8, True, costing(clock, fixed, per_row, []), clock=clock)
    assert choice.enabled is enabled and (m.gain >= MIN_GAIN) is enabled
    assert choice.max_batch_size == (8 if enabled else 1)
    assert choice.measurement is not None and "measured" in choice.reason and "fake fp32" in choice.reason
    assert choice.describe().startswith("on" if enabled else "off")
    assert choice.to_dict()["measurement"]["gain"] == pytest.approx(m.gain)


def test_batch_one_is_measured_on_the_runtime_that_serves_without_batching() -> None:
    """OpenVINO: not batching means a runtime compiled for batch 1, faster per image than the dynamic one;
    the gain is measured against that, so batching must beat what it would replace."""
    clock, seen_batched, seen_single = Clock(), [], []  # type: ignore[var-annotated]
    batched = costing(clock, 4.0, 1.0, seen_batched)  # dynamic form: batch 1 costs 5, batch 8 costs 12
    single = costing(clock, 0.0, 1.2, seen_single)  # compiled for one image: 1.2 per image
    m = measure_batching(fake_pipe(), 8, batched, clock=clock, single_runner=single)
    assert m is not None
    assert {s[0] for s in seen_single} == {1} and {s[0] for s in seen_batched} == {8}
    assert m.batch1_ms == pytest.approx(1.2e3) and m.batched_ms == pytest.approx(1.5e3)
    clock.now = 0.0
    choice = choose_batching(fake_pipe(), "auto", 8, True, batched, clock=clock, single_runner=single)
    assert not choice.enabled  # against the dynamic form's batch 1 (5 per image) batching would have won
    clock.now = 0.0
    assert choose_batching(fake_pipe(), "auto", 8, True, batched, clock=clock).enabled


def test_the_measurement_keeps_to_its_time_budget() -> None:
    clock, seen = Clock(), []  # type: ignore[var-annotated]
    m = measure_batching(fake_pipe(), 4, costing(clock, 0.0, 1.0, seen), budget_s=10.0, rounds=5, clock=clock)
    assert m is not None and m.rounds == 1  # one round takes 8 s: a second would pass the 10 s budget
    m = measure_batching(fake_pipe(), 4, costing(clock, 0.0, 0.1, []), budget_s=10.0, rounds=5, clock=clock)
    assert m is not None and m.rounds == 5


@pytest.mark.parametrize(
    ("setting", "max_batch", "batchable", "enabled", "reason"),
    [
        ("on", 8, True, True, "configured"),
        ("off", 8, True, False, "configured"),
        ("auto", 1, True, False, "max_batch_size is 1"),
        ("on", 8, False, False, "fixed batch dimension"),
    ],
)
def test_settings_that_need_no_measurement(
    setting: str, max_batch: int, batchable: bool, enabled: bool, reason: str
) -> None:
    def never(feeds_list: Any) -> Any:
        raise AssertionError("nothing should be measured")

    choice = choose_batching(fake_pipe(), setting, max_batch, batchable, never)
    assert choice.enabled is enabled and reason in choice.reason and choice.measurement is None


def test_a_model_with_other_dynamic_dimensions_is_not_measured() -> None:
    pipe = fake_pipe(("batch", "channels", 64, 64))
    assert probe_feeds(pipe) is None
    choice = choose_batching(pipe, "auto", 8, True, lambda f: [])
    assert not choice.enabled and "not measurable" in choice.reason


def test_probe_feeds_follow_the_input_dtype() -> None:
    feeds = probe_feeds(fake_pipe((None, 64, 64, 3), "uint8"))
    assert feeds is not None and feeds["images"].shape == (1, 64, 64, 3) and feeds["images"].dtype == np.uint8
