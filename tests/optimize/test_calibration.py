"""Calibration images: read through the bundle's preprocessing, with clear errors and warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.contract import Contract, InputSpec, OutputSpec
from cvdeploy.errors import ImageError, InputError
from cvdeploy.optimize.calibration import TensorReader, load_calibration


@pytest.fixture
def contract() -> Contract:
    return Contract(task="detect", classes=["a"], input=InputSpec(height=64, width=96), output=OutputSpec())


def test_tensors_follow_the_contract(calib_dir: Path, contract: Contract) -> None:
    cs = load_calibration(calib_dir, contract)
    assert len(cs) == 6
    assert all(t.shape == (1, 3, 64, 96) and t.dtype == np.float32 for t in cs.tensors)
    assert min(float(t.min()) for t in cs.tensors) >= 0.0 and max(float(t.max()) for t in cs.tensors) <= 1.0
    assert any("fewer than 100" in w for w in cs.warnings)


def test_limit_spreads_over_the_folder(calib_dir: Path, contract: Contract) -> None:
    cs = load_calibration(calib_dir, contract, limit=3)
    assert [Path(f).name for f in cs.files] == ["img0.jpg", "img2.jpg", "img5.jpg"]


@pytest.mark.parametrize(
    ("setup", "error", "words"),
    [
        ("none", InputError, "no calibration images"),
        ("empty", InputError, "no calibration images found"),
        ("corrupt", ImageError, "bad.jpg"),
        ("missing", InputError, "no such file"),
    ],
)
def test_bad_calibration_input(tmp_path: Path, calib_dir: Path, contract: Contract, setup: str, error: type,
                               words: str) -> None:  # fmt: skip
    src: object
    if setup == "none":
        src = None
    elif setup == "empty":
        src = tmp_path / "empty"
        src.mkdir()
    elif setup == "corrupt":
        (calib_dir / "bad.jpg").write_bytes(b"not an image")
        src = calib_dir
    else:
        src = tmp_path / "nowhere"
    with pytest.raises(error, match=words):
        load_calibration(src, contract)  # type: ignore[arg-type]


def test_duplicates_and_blank_images_are_reported(tmp_path: Path, contract: Contract) -> None:
    import cv2

    blank = np.full((50, 50, 3), 128, np.uint8)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"b{i}.png"), blank)
    cs = load_calibration(tmp_path, contract)
    assert any("duplicates" in w for w in cs.warnings)
    assert any("blank" in w for w in cs.warnings)


def test_reader_rewinds() -> None:
    r = TensorReader([np.zeros((1, 3, 2, 2), np.float32)] * 2, "x")
    assert r.get_next() is not None and r.get_next() is not None and r.get_next() is None
    r.rewind()
    assert set(r.get_next() or {}) == {"x"}


@pytest.mark.parametrize(("brightness", "warned"), [(120.0, False), (240.0, True)])
def test_calibration_far_from_the_reference_profile(calib_dir: Path, contract: Contract, brightness: float,
                                                    warned: bool) -> None:  # fmt: skip
    cs = load_calibration(calib_dir, contract)
    mean = float(np.mean([float(read(f).mean()) for f in cs.files]))
    profile = {"input": {"brightness": {"mean": mean if not warned else brightness, "std": 10.0}}}
    cs = load_calibration(calib_dir, contract, profile=profile)
    assert any("reference images in brightness" in w for w in cs.warnings) == warned


def read(path: str) -> np.ndarray:
    from cvdeploy.images import read_image

    return read_image(path)
