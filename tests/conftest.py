"""Shared fixtures: small bundles exported once per session, and sample images."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
# the run's own cvdeploy cache (cached bundles, ONNX Runtime's optimized graphs): never the user's
_CACHE = tempfile.mkdtemp(prefix="cvdeploy-test-cache-")
os.environ.setdefault("CVDEPLOY_CACHE", _CACHE)
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real photographs (BGR) from installed packages."""
    from cvdeploy.images import sample_images

    return sample_images(6)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory, photos: list[np.ndarray]) -> Path:
    """A folder of a few real photographs as JPEG files."""
    import cv2

    d = tmp_path_factory.mktemp("photos")
    for i, img in enumerate(photos[:4]):
        cv2.imwrite(str(d / f"photo{i}.jpg"), img)
    return d


def _export_tiny(root: Path, formats: tuple[str, ...]) -> Path:
    torch = pytest.importorskip("torch")
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.sources.onnx import ContractHints
    from cvdeploy.zoo.classes import CLASS_NAMES

    torch.manual_seed(0)
    out = root / "tiny.cvd"
    hints = ContractHints(classes=list(CLASS_NAMES), output={"conf": 0.01})
    export(
        "python:cvdeploy.zoo.model:build_n",
        out,
        ExportOptions(formats=formats, imgsz=(320, 320), dynamic_batch=True, hints=hints, parity_count=4),
    )
    return out


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained zoo-n detector at 320x320 (onnx-fp32 + openvino-fp32, dynamic batch, conf 0.01).

    Read-only: tests that change a bundle copy it with ``tiny_bundle_copy``.
    """
    pytest.importorskip("openvino")
    return _export_tiny(tmp_path_factory.mktemp("bundles"), ("onnx", "openvino"))


@pytest.fixture
def tiny_bundle_copy(tiny_bundle_path: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may modify."""
    dst = tmp_path / "tiny.cvd"
    shutil.copytree(tiny_bundle_path, dst)
    return dst


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded for one test: on a busy 2-core machine OpenMP oversubscription slows
    the tiny models of the tests by up to 50x. Zoo and optimize tests use it automatically."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
