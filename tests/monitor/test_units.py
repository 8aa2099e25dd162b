"""Durations, the drift test, capture summaries: the parts of monitoring that need no server."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from cvdeploy.errors import ConfigError
from cvdeploy.monitor.capture import Observation, array_summary, output_stats, to_rows
from cvdeploy.monitor.drift import chi2_test, compare, holm, merge_sparse
from cvdeploy.monitor.reference import reference_from_profile
from cvdeploy.monitor.settings import MonitorConfig, format_duration, parse_duration
from cvdeploy.profile import _hist, image_features
from cvdeploy.results import Detections


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("24h", 86400.0), ("7d", 604800.0),
                          ("2w", 1209600.0), (" 1.5h ", 5400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1h", "0s", "h", "1y", "1e3s"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match="window"):
        parse_duration(text, "window")


def test_format_duration_round_trips() -> None:
    for text in ("15m", "1h", "7d", "90s"):
        assert format_duration(parse_duration(text)) == text


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="retention"):
        MonitorConfig(retention="forever")
    with pytest.raises(ValueError):
        MonitorConfig(sample=1.5)
    assert MonitorConfig().sample == 0.05 and MonitorConfig().retention_s == 7 * 86400


# ---- the drift test ------------------------------------------------------------------------------


def test_merge_sparse_reaches_expected_counts_of_five() -> None:
    table = np.array([[40, 3, 1, 0, 2, 30, 1], [20, 1, 0, 0, 1, 5, 0]], float)
    merged = merge_sparse(table)
    expected = np.outer(merged.sum(1), merged.sum(0)) / merged.sum()
    assert expected.min() >= 5 and merged.sum() == table.sum()


def test_chi2_separates_shifted_from_same() -> None:
    rng = np.random.default_rng(0)
    edges = np.linspace(0, 10, 21)
    a = np.histogram(rng.normal(5, 1, 400), edges)[0]
    same = np.histogram(rng.normal(5, 1, 300), edges)[0]
    moved = np.histogram(rng.normal(7, 1, 300), edges)[0]
    _, p_same, v_same = chi2_test(a, same)
    _, p_moved, v_moved = chi2_test(a, moved)
    assert p_same > 0.01 and v_same < 0.2
    assert p_moved < 1e-10 and v_moved > 0.5


def test_everything_in_one_bin_is_no_evidence() -> None:
    assert chi2_test([100, 0, 0], [40, 0, 0]) == (0.0, 1.0, 0.0)


def test_holm_is_monotone_and_at_least_raw() -> None:
    from cvdeploy.monitor.drift import Drift

    rows = [Drift(f"f{i}", "input", 1.0, p, 0.5, 10, 10) for i, p in enumerate([0.001, 0.04, 0.03, 0.5])]
    holm(rows)
    adj = {r.feature: r.p_value for r in rows}
    assert adj == {
        "f0": pytest.approx(0.004),
        "f2": pytest.approx(0.09),
        "f1": pytest.approx(0.09),
        "f3": 0.5,
    }


def _profile(values: dict[str, list[float]]) -> dict:
    ranges = {"brightness": (0, 255), "contrast": (0, 128), "sharpness": (0, 12)}
    return {"schema": "cvdeploy-profile/1", "images": len(next(iter(values.values()))),
            "input": {k: _hist(v, *ranges[k]) for k, v in values.items()},
            "output": {"confidence": _hist([0.5, 0.6, 0.7, 0.8] * 25, 0, 1), "class_frequency": {"a": 60, "b": 40}}}  # fmt: skip


def test_compare_flags_exactly_the_shifted_feature() -> None:
    rng = np.random.default_rng(1)
    ref = reference_from_profile(_profile({"brightness": list(rng.normal(120, 20, 200)),
                                           "contrast": list(rng.normal(50, 10, 200))}))  # fmt: skip
    assert ref is not None
    window = {"brightness": list(rng.normal(60, 20, 80)), "contrast": list(rng.normal(50, 10, 80))}
    rows = {d.feature: d for d in compare(ref, window, {}, {}, 0)}
    assert rows["brightness"].flagged and not rows["contrast"].flagged
    assert rows["brightness"].p_value is not None and rows["brightness"].p_value < 1e-6


def test_small_windows_are_not_tested() -> None:
    ref = reference_from_profile(_profile({"brightness": [100.0] * 50 + [150.0] * 50}))
    assert ref is not None
    rows = compare(ref, {"brightness": [10.0] * 5}, {}, {}, 0, min_requests=20)
    assert rows[0].p_value is None and not rows[0].flagged and rows[0].n == 5


def test_class_share_drift() -> None:
    ref = reference_from_profile(_profile({"brightness": [100.0] * 100}))
    assert ref is not None
    rows = {d.feature: d for d in compare(ref, {"brightness": [100.0] * 50}, {"confidence": [0.6] * 200},
                                           {"a": 10, "b": 190}, 50)}  # fmt: skip
    assert rows["class_share"].flagged and rows["class_share"].group == "output"


@pytest.mark.parametrize("doc", [None, {}, {"schema": "other"}, {"schema": "cvdeploy-profile/1", "images": 0},
                                 {"schema": "cvdeploy-profile/1", "images": 3, "input": {"brightness": {"edges": [1, 0],
                                                                                                        "counts": [1]}}}])  # fmt: skip
def test_unusable_profiles(doc: object) -> None:
    ref = reference_from_profile(doc)
    assert ref is None or not ref.inputs


# ---- capture -------------------------------------------------------------------------------------


def _dets() -> Detections:
    return Detections(np.array([[0, 0, 10, 20], [5, 5, 105, 55]], np.float32), np.array([0.9, 0.4], np.float32),
                      np.array([0, 1]), ["cat", "dog"])  # fmt: skip


def test_output_stats_of_detections() -> None:
    s = output_stats(_dets(), 200, 100)
    assert s == {"count": 2, "confidences": [0.9, 0.4], "areas": [0.01, 0.25], "classes": ["cat", "dog"]}


def test_array_summary_counts_non_finite_and_channels() -> None:
    x = np.zeros((1, 3, 4, 4), np.float32)
    x[0, 1] = 1.0
    doc = array_summary(x, 1)
    assert doc["channel_mean"] == [0.0, 1.0, 0.0] and doc["non_finite"] == 0
    x[0, 0, 0, 0] = np.nan
    assert array_summary(x, 1)["non_finite"] == 1


def _obs(img: np.ndarray, sampled: bool) -> Observation:
    return Observation(1.0, "m", 1, "image", 200, "rid", {"preprocess": 0.002, "inference": 0.010}, img,
                       np.zeros((1, 3, 8, 8), np.float32), [np.ones((1, 6, 4), np.float32)], ["output0"], _dets(),
                       True, sampled)  # fmt: skip


def test_fast_features_are_the_profile_features(photos: list[np.ndarray]) -> None:
    from cvdeploy.monitor.capture import CORE, fast_features, features

    rng = np.random.default_rng(3)
    images = [*photos, rng.integers(0, 256, (37, 53, 3), np.uint8), np.zeros((20, 30, 3), np.uint8),
              np.full((9, 9, 3), 255, np.uint8)]  # fmt: skip
    for img in images:
        ref = image_features(img)
        assert fast_features(img) == pytest.approx({k: ref[k] for k in CORE}, rel=1e-12, abs=1e-12)
        assert features(img) == pytest.approx(ref, rel=1e-12, abs=1e-12)  # whatever features the profile has


def test_rows_carry_the_profile_features(photos: list[np.ndarray]) -> None:
    row, sample = to_rows(_obs(photos[0], False), redact=False, thumbnail_px=64)
    assert sample is None
    assert row.features == pytest.approx(image_features(photos[0]), rel=1e-5)
    assert row.latency_ms == pytest.approx({"preprocess": 2.0, "inference": 10.0, "total": 12.0})


def test_sample_keeps_stage_io_and_a_small_thumbnail(photos: list[np.ndarray]) -> None:
    _, sample = to_rows(_obs(photos[0], True), redact=False, thumbnail_px=64)
    assert sample is not None and sample.thumbnail is not None
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(sample.thumbnail), np.uint8), cv2.IMREAD_COLOR)
    assert max(thumb.shape[:2]) == 64
    assert sample.tensor is not None and sample.tensor["shape"] == [1, 3, 8, 8]
    assert sample.raw_output is not None and sample.raw_output[0]["name"] == "output0"
    assert sample.result is not None and sample.result["count"] == 2


def test_redacted_sample_has_no_pixels(photos: list[np.ndarray]) -> None:
    _, sample = to_rows(_obs(photos[0], True), redact=True, thumbnail_px=64)
    assert sample is not None and sample.redacted and sample.thumbnail is None
    assert sample.params()[8] is None  # the thumbnail column
