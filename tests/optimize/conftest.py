"""Fixtures for the optimize tests: small ONNX graphs built in code and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .builders import planted_model


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    return planted_model(tmp_path / "planted.onnx")


@pytest.fixture(scope="session")
def ultralytics_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Ultralytics YOLOv8n graph (random weights, 160x160) exported offline through cvdeploy."""
    pytest.importorskip("ultralytics")
    from cvdeploy.export import ExportOptions, export

    out = tmp_path_factory.mktemp("ultra") / "u.cvd"
    try:
        bundle = export("yolov8n.yaml", out, ExportOptions(imgsz=(160, 160), parity_count=2))
    except Exception as exc:  # pragma: no cover - depends on the optional package's offline state
        pytest.skip(f"Ultralytics export unavailable offline: {exc}")
    return bundle.file("onnx-fp32")


@pytest.fixture
def calib_dir(tmp_path: Path, photos: list[np.ndarray]) -> Path:
    """Six real photos as JPEGs."""
    import cv2

    d = tmp_path / "calib"
    d.mkdir()
    for i, img in enumerate(photos):
        cv2.imwrite(str(d / f"img{i}.jpg"), img)
    return d


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here runs torch single-threaded (fixture in tests/conftest.py)."""
