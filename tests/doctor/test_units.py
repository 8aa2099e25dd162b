"""Fast unit tests of doctor's parts: the findings catalogue, matching, statistics, readers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeploy.contract import Contract
from cvdeploy.doctor import FINDING_IDS, findings
from cvdeploy.doctor.findings import Finding, rank
from cvdeploy.errors import InputError
from cvdeploy.results import Detections

ISSUE_IDS = [
    "preprocess.channel_order",
    "preprocess.resize",
    "preprocess.normalization",
    "preprocess.pad_value",
    "preprocess.input_size",
    "data.drift",
    "labels.class_mapping",
    "conversion.divergence",
    "env.mismatch",
    "numerics.nonfinite",
    "speed.warmup",
    "speed.threads",
    "speed.precision",
    "speed.provider_fallback",
    "speed.preprocessing",
    "speed.input_size",
    "speed.model_size",
    "speed.concurrency",
]


def test_the_ids_are_the_issues_and_each_is_documented() -> None:
    assert list(FINDING_IDS) == ISSUE_IDS
    documented = set(re.findall(r"^([a-z]+\.[a-z_]+)\s{2,}", findings.__doc__ or "", re.M))
    assert documented == set(ISSUE_IDS)


def test_unknown_id_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown finding id"):
        Finding("preprocess.gamma", "warning", "x", 0.5)


def test_rank_merges_by_id_and_sorts_by_score() -> None:
    out = rank([
        Finding("data.drift", "warning", "images darker.", 0.4),
        Finding("env.mismatch", "info", "cpu.", 0.1),
        Finding("data.drift", "critical", "outputs moved.", 0.9),
    ])  # fmt: skip
    assert [f.id for f in out] == ["data.drift", "env.mismatch"]
    assert out[0].severity == "critical" and out[0].score == 0.9
    assert out[0].evidence.startswith("outputs moved.") and "images darker." in out[0].evidence


def _det(boxes: list[list[float]], conf: list[float], cls: list[int]) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(conf, np.float32), np.asarray(cls, np.int64)
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (_det([], [], []), _det([], [], []), 1.0),
        (_det([[0, 0, 10, 10]], [0.9], [1]), _det([], [], []), 0.0),
        (_det([[0, 0, 10, 10]], [0.9], [1]), _det([[0, 0, 10, 10]], [0.9], [1]), 1.0),
        (_det([[0, 0, 10, 10]], [0.9], [1]), _det([[0, 0, 10, 10]], [0.9], [2]), 0.0),  # another class
        (_det([[0, 0, 10, 10]], [0.9], [1]), _det([[20, 20, 30, 30]], [0.9], [1]), 0.0),  # elsewhere
    ],
)
def test_image_similarity(a: Detections, b: Detections, expected: float) -> None:
    from cvdeploy.doctor.matching import image_similarity

    assert image_similarity(a, b) == pytest.approx(expected)


def test_similarity_falls_with_the_confidence_gap() -> None:
    from cvdeploy.doctor.matching import image_similarity

    a = _det([[0, 0, 10, 10]], [0.9], [1])
    near, far = (
        image_similarity(a, _det([[0, 0, 10, 10]], [0.88], [1])),
        image_similarity(a, _det([[0, 0, 10, 10]], [0.6], [1])),
    )
    assert 1.0 > near > far > 0.0
    assert image_similarity(a, _det([[0, 0, 10, 10]], [0.6], [1]), use_conf=False) == 1.0


def test_best_permutation_finds_the_mapping() -> None:
    from cvdeploy.doctor.classmap import best_permutation

    pairs = [(0, 1)] * 5 + [(1, 2)] * 4 + [(2, 0)] * 6 + [(3, 3)] * 3 + [(0, 0)]
    mapping, ident, perm, m = best_permutation(pairs, 4)
    assert mapping == {0: 1, 1: 2, 2: 0}
    assert ident == pytest.approx(4 / 19) and perm == pytest.approx(18 / 19)
    assert m.sum() == len(pairs)


def test_drift_table_statistics() -> None:
    from cvdeploy.doctor.drift import _table_test

    p_same, v_same = _table_test([50, 30, 20], [51, 29, 20])
    p_diff, v_diff = _table_test([50, 30, 20], [5, 15, 80])
    assert p_same > 0.5 and v_same < 0.05
    assert p_diff < 1e-10 and v_diff > 0.5
    assert _table_test([100, 0], [100, 0]) == (1.0, 0.0)  # one populated bin: nothing to test


def test_first_jump_of_layer_errors() -> None:
    from cvdeploy.doctor.layers import _first_jump

    assert _first_jump([120, 118, 119, 35, 30, 20], reduced=False) == 3
    assert _first_jump([120, 118, 119, 110], reduced=False) is None
    # reduced precision: no absolute floor, the first tensor well below what came before (an exact input: 120 dB)
    assert _first_jump([120, 119, 38, 36, 15], reduced=True) == 2
    assert _first_jump([120, 119, 110, 108], reduced=True) is None


def test_variants_change_one_setting_each() -> None:
    from cvdeploy.doctor.variants import preprocessing_variants

    base = Contract()
    vs = preprocessing_variants(base)
    assert {v.finding for v in vs} == {f for f in ISSUE_IDS if f.startswith("preprocess.")}
    for v in vs:
        changed = {k for k, val in v.contract.input.model_dump().items() if val != base.input.model_dump()[k]}
        assert changed and changed <= {
            "color",
            "resize",
            "scale",
            "mean",
            "std",
            "pad_value",
            "height",
            "width",
        }, v.key
        if v.finding != "preprocess.input_size":
            assert changed.isdisjoint({"height", "width"})
    assert not [v for v in preprocessing_variants(base, sizes=False) if v.finding == "preprocess.input_size"]


def test_jpeg_quality_and_grayscale(tmp_path: Path) -> None:
    from cvdeploy.profile import is_grayscale, jpeg_quality

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), np.uint8)
    for q in (30, 75, 95):
        cv2.imwrite(str(tmp_path / f"{q}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert jpeg_quality(tmp_path / f"{q}.jpg") == q
    cv2.imwrite(str(tmp_path / "x.png"), img)
    assert jpeg_quality(tmp_path / "x.png") is None
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert is_grayscale(gray) and not is_grayscale(img)


# ---- readers ---------------------------------------------------------------------------------------


@pytest.fixture
def two_images(tmp_path: Path):  # type: ignore[no-untyped-def]
    from cvdeploy.doctor.inputs import image_set

    d = tmp_path / "imgs"
    d.mkdir()
    for name, (h, w) in (("a", (100, 200)), ("b", (50, 50))):
        cv2.imwrite(str(d / f"{name}.jpg"), np.full((h, w, 3), 128, np.uint8))
    return image_set(d)


def test_ultralytics_txt_is_read_in_pixels(two_images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cvdeploy.doctor.inputs import has_confidence, read_observed

    d = tmp_path / "labels"
    d.mkdir()
    (d / "a.txt").write_text("2 0.5 0.5 0.5 0.2 0.75\n")
    obs = read_observed(d, two_images, Contract(classes=["x", "y", "z"]), {"a": (200, 100), "b": (50, 50)})
    assert obs["a"].xyxy.tolist() == [[50.0, 40.0, 150.0, 60.0]]
    assert obs["a"].class_id.tolist() == [2] and obs["a"].confidence.tolist() == [0.75]
    assert len(obs["b"]) == 0  # no file: nothing found
    assert has_confidence(obs)


def test_predict_json_by_class_name(two_images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cvdeploy.doctor.inputs import read_observed

    doc = [{"image": "/elsewhere/a.jpg", "detections": [{"box": [1, 2, 3, 4], "confidence": 0.5, "class_name": "z"}]},
           {"image": "b.png", "detections": []}]  # fmt: skip
    (tmp_path / "o.json").write_text(json.dumps(doc))
    obs = read_observed(tmp_path / "o.json", two_images, Contract(classes=["x", "y", "z"]), {})
    assert obs["a"].class_id.tolist() == [2] and len(obs["b"]) == 0


@pytest.mark.parametrize(
    ("doc", "phrase"),
    [
        ({"image": "a.jpg"}, "expected 'cvdeploy predict --json' output"),
        ([{"image": "a.jpg", "detections": [{"box": [1, 2, 3]}]}], "each detection needs"),
        ([{"image": "a.jpg", "detections": []}, {"image": "a.jpg", "detections": []}], "appears twice"),
    ],
)
def test_bad_predict_json(doc: object, phrase: str, two_images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cvdeploy.doctor.inputs import read_observed

    (tmp_path / "o.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=re.escape(phrase)):
        read_observed(tmp_path / "o.json", two_images, Contract(classes=["x"]), {})


def test_coco_labels_are_matched_by_stem(two_images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cvdeploy.doctor.inputs import read_labels

    coco = {"images": [{"id": 1, "file_name": "train/a.jpg"}, {"id": 2, "file_name": "zzz.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 30]},
                            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5]}],
            "categories": [{"id": 7, "name": "y"}, {"id": 3, "name": "x"}]}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(coco))
    labels = read_labels(
        tmp_path / "c.json", two_images, Contract(classes=["x", "y"]), {"a": (200, 100), "b": (50, 50)}
    )
    boxes, classes = labels.boxes["a"]
    assert boxes.tolist() == [[10, 10, 30, 40]]
    assert classes.tolist() == [1]  # COCO order is x (3), y (7); mapped to the model's names by name
    assert "zzz" not in labels.boxes
