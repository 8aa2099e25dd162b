"""Shared, session-scoped material for the doctor tests: generated images, the shipped zoo:n, and a
YOLOv8n graph built from Ultralytics' yaml.

Images: generated shapes (seed 6161 for plants, 7171 for the clean deployment — no other test or
the shipped profile uses them), squashed to 640x480 or 480x640 so that letterbox padding and the
resize mode matter. YOLO labels are normalised, so they stay valid under the resize.

The YOLOv8n graph is untrained: its batch-norm statistics are re-estimated on real photographs
(so activations vary with the input, as in tests/core/test_ultralytics.py) and its class-score
biases set to -10 so that it returns a few (meaningless but deterministic) detections per image
rather than hundreds. Detection-based faults on it are planted in tensors (``--inputs``), class
ids and model files, which do not depend on what it detects.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cvdeploy.doctor import Doctor, faults

os.environ.setdefault("YOLO_OFFLINE", "1")
PLANT_SEED, CLEAN_SEED = 6161, 7171
IMAGES = 6
DRIFT_IMAGES = 20
Y8_SIZE = 320


def make_dataset(root: Path, seed: int, images: int = IMAGES) -> Path:
    """Generated shapes squashed to 640x480 or 480x640; returns the data.yaml."""
    return faults.shapes_dataset(root, seed, images)


@pytest.fixture(scope="session")
def plant_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("doctor-plant"), PLANT_SEED)


@pytest.fixture(scope="session")
def plant_images(plant_data: Path) -> Path:
    return plant_data.parent / "images" / "val"


@pytest.fixture(scope="session")
def drift_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More images (20) for the drift plants: a two-sample test needs more than six to see the outputs move."""
    return (
        make_dataset(tmp_path_factory.mktemp("doctor-drift"), PLANT_SEED, DRIFT_IMAGES).parent
        / "images"
        / "val"
    )


@pytest.fixture(scope="session")
def clean_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("doctor-clean"), CLEAN_SEED)


@pytest.fixture(scope="session")
def zoo_doctor(plant_images: Path) -> Doctor:
    """One Doctor for zoo:n on the plant images: loaded models and simulated variants are shared."""
    return Doctor("zoo:n", plant_images)


def _yolov8n_module(bias: float = -10.0):  # type: ignore[no-untyped-def]
    import torch
    from ultralytics import YOLO

    from cvdeploy.contract import InputSpec
    from cvdeploy.images import sample_images
    from cvdeploy.preprocess import Preprocessor

    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")
    x, _ = Preprocessor(InputSpec(height=Y8_SIZE, width=Y8_SIZE))(sample_images(6))
    for m in yolo.model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    yolo.model.train()
    with torch.no_grad():
        yolo.model(torch.from_numpy(x))
    for seq in yolo.model.model[-1].cv3:
        seq[-1].bias.data.fill_(bias)
    yolo.model.eval()
    return yolo


@pytest.fixture(scope="session")
def y8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n (Ultralytics yaml, see the module docstring) exported by cvdeploy at 320, dynamic size."""
    pytest.importorskip("ultralytics")
    from cvdeploy.bundle import Source
    from cvdeploy.contract import Contract, InputSpec
    from cvdeploy.export import ExportOptions, export_torch
    from cvdeploy.sources.ultralytics import from_yolo

    um = from_yolo(_yolov8n_module())
    contract = Contract(
        task="detect", classes=um.names, input=InputSpec(height=Y8_SIZE, width=Y8_SIZE, stride=um.stride)
    )
    out = tmp_path_factory.mktemp("y8") / "yolov8n.cvd"
    opts = ExportOptions(imgsz=(Y8_SIZE, Y8_SIZE), dynamic_batch=True, dynamic_shape=True, parity_count=2)
    export_torch(um.module, out, contract, Source(kind="ultralytics", file="yolov8n.yaml"), opts)
    return out


@pytest.fixture(scope="session")
def y8_doctor(y8_bundle: Path, plant_images: Path) -> Doctor:
    return Doctor(y8_bundle, plant_images)


@pytest.fixture
def bundle_copy(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Copy a bundle (path or zoo:NAME) into this test's folder."""
    from cvdeploy.doctor.faults import copy_bundle

    def make(src: str | Path, name: str = "copy.cvd"):  # type: ignore[no-untyped-def]
        return copy_bundle(src, tmp_path / name)

    return make


def top_ids(report, k: int = 3) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.id for f in report.findings[:k]]


def run_of(doctor: Doctor):  # type: ignore[no-untyped-def]
    """The deployed model of a Doctor's default artifact as a tensor → outputs callable."""
    from cvdeploy.doctor.deployment import open_deployment

    dep = open_deployment(doctor.bundle)
    return dep.run, [o.name for o in dep.runtime.outputs]
