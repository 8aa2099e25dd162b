"""The steady headline figure, its noise floor and the busy-machine measure."""

from __future__ import annotations

import numpy as np
import pytest

from cvdeploy.bench.noise import LoadMeter, noise_pct, steady_mask


def test_passes_slowed_by_foreign_load_are_set_aside() -> None:
    rng = np.random.default_rng(0)
    wall = rng.normal(20e6, 0.3e6, 100)
    cpu = wall * 1.9  # two busy threads: CPU time ≈ 1.9 × wall when nobody else competes
    slow = rng.choice(100, 55, replace=False)  # a burst longer than half the run
    wall[slow] *= 2.0  # descheduled: twice the wall time, the same CPU time
    mask = steady_mask(wall, cpu)
    assert not mask[slow].any()
    assert mask.sum() == 45
    assert np.median(wall[mask]) == pytest.approx(20e6, rel=0.02)
    assert np.median(wall) > 21e6  # the plain median is pulled up by the bursts


@pytest.mark.parametrize(
    ("cpu", "why"),
    [(None, "no CPU times: every pass counts"), ("short", "mismatched lengths: every pass counts")],
)
def test_without_cpu_times_every_pass_counts(cpu: object, why: str) -> None:
    wall = np.full(50, 10e6)
    cpu_arr = None if cpu is None else np.full(10, 10e6)
    assert steady_mask(wall, cpu_arr).all(), why


def test_a_filter_that_would_keep_too_few_passes_is_not_trusted() -> None:
    wall = np.full(100, 10e6)
    cpu = np.full(100, 2e6)
    cpu[:20] = 20e6  # a few passes with a much higher share: keeping only them would be cherry-picking
    assert steady_mask(wall, cpu).all()


def test_noise_floor_shrinks_with_tighter_samples() -> None:
    rng = np.random.default_rng(1)
    wide, tight = rng.normal(20, 4, 200), rng.normal(20, 0.4, 200)
    assert noise_pct(tight) < noise_pct(wide)
    assert 0 < noise_pct(tight) < 1.0
    assert np.isnan(noise_pct(np.array([5.0])))


def test_load_meter_reports_a_share_of_the_machine() -> None:
    from pathlib import Path

    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat on this platform")
    meter = LoadMeter()
    meter.start()
    share = None
    for _ in range(50):  # /proc/stat counts in clock ticks: work until at least one has passed
        sum(i * i for i in range(200_000))  # our own work does not count as foreign load
        share = meter.stop()
        if share is not None:
            break
    assert share is not None and 0.0 <= share <= 1.0
