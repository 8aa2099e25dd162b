"""Fixtures for evaluation tests: a tiny labelled shapes dataset and hand-made classifier/raw bundles."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

CHANNELS = ["red", "green", "blue"]  # the channel classifier's classes, in RGB input order


@pytest.fixture(scope="session")
def shapes_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated YOLO dataset at 160 px: 2 train, 6 val, 2 test images."""
    from cvdeploy.zoo.dataset import generate_dataset

    root = tmp_path_factory.mktemp("shapes")
    return generate_dataset(
        root, images=10, seed=11, imgsz=160, splits=(0.2, 0.6, 0.2), progress=False, workers=1
    )


def channel_classifier_onnx(path: Path) -> None:
    """An ONNX 'classifier' whose logits are the mean of each input channel: ``(N, 3, 32, 32)`` → ``(N, 3)``."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    mean = helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0)
    scale = helper.make_node("Mul", ["m", "ten"], ["logits"])
    ten = helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])
    graph = helper.make_graph([mean, scale], "channels", [x], [y], initializer=[ten])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_channel_bundle(path: Path, task: str = "classify") -> Path:
    """A bundle around :func:`channel_classifier_onnx` with a ``classify`` or ``raw`` contract."""
    from cvdeploy.bundle import Artifact, Bundle, Manifest, Provenance, Source, now_iso
    from cvdeploy.contract import Contract, InputSpec, OutputSpec

    contract = Contract(
        task=task,
        classes=list(CHANNELS),
        input=InputSpec(height=32, width=32, resize="stretch", dynamic_batch=True),
        output=OutputSpec(format="classify" if task == "classify" else "raw", probabilities=False),
    )
    manifest = Manifest(name=path.stem, contract=contract,
                        provenance=Provenance(source=Source(kind="onnx"), created=now_iso()))  # fmt: skip
    bundle = Bundle.create(path, manifest)
    channel_classifier_onnx(path / "onnx-fp32.onnx")
    bundle.add_artifact(
        Artifact(name="onnx-fp32", file="onnx-fp32.onnx", runtime="onnxruntime", dynamic_batch=True)
    )
    return path


def solid_image(path: Path, rgb: tuple[int, int, int], seed: int) -> None:
    """A 40x48 image of one colour with a little noise."""
    rng = np.random.default_rng(seed)
    img = np.clip(np.asarray(rgb[::-1], np.float32) + rng.normal(0, 8, (40, 48, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


@pytest.fixture
def classify_bundle(tmp_path: Path) -> Path:
    return make_channel_bundle(tmp_path / "channels.cvd")


@pytest.fixture
def raw_bundle(tmp_path: Path) -> Path:
    return make_channel_bundle(tmp_path / "raw.cvd", task="raw")


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    """``colours/val/<red|green|blue>/*.png``: 2 images per class, plus one blue image filed under red."""
    root = tmp_path / "colours"
    pure = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}
    for k, (name, rgb) in enumerate(pure.items()):
        for i in range(2):
            solid_image(root / "val" / name / f"{i}.png", rgb, seed=10 * k + i)
    solid_image(root / "val" / "red" / "mislabelled.png", pure["blue"], seed=99)
    return root
