"""Classifiers without class names are validated by class index; ``optimize`` scores classifiers by top-1
(with labels) and the variants table has a top-1 column."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeploy.bundle import Bundle, Source
from cvdeploy.errors import InputError

torch = pytest.importorskip("torch")


class ColourNet(torch.nn.Module):
    """Classifies an image by its dominant colour channel (RGB): exact, so top-1 is known in advance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * 20.0


@pytest.fixture(scope="module")
def unnamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cvdeploy.contract import Contract, InputSpec, OutputSpec
    from cvdeploy.export import ExportOptions, export_torch

    contract = Contract(task="classify", classes=["class0", "class1", "class2"],
                        input=InputSpec(height=32, width=32, resize="stretch"), output=OutputSpec(format="classify"))  # fmt: skip
    out = tmp_path_factory.mktemp("cls") / "colour.cvd"
    export_torch(ColourNet(), out, contract, Source(kind="torch", factory="python:x:y"),
                 ExportOptions(parity_count=2, dynamic_batch=True))  # fmt: skip
    return out


def _folder(root: Path, names: list[str]) -> Path:
    """root/<name>/ with 2 images whose dominant RGB channel is the class index."""
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(2):
            img = np.full((24, 24, 3), 30, np.uint8)
            img[:, :, 2 - k] = 200 + i * 20  # BGR on disk: channel 2 - k is RGB channel k
            cv2.imwrite(str(root / name / f"{i}.png"), img)
    return root


@pytest.mark.parametrize("names", [["0", "1", "2"], ["apple", "banana", "cherry"]])
def test_a_model_without_names_is_validated_by_class_index(
    unnamed: Path, tmp_path: Path, names: list[str]
) -> None:
    from cvdeploy.evaluate.validate import validate

    r = validate(unnamed, _folder(tmp_path / "data", names), progress=False)
    assert r["top1"] == 1.0 and r["images"] == 6
    assert set(r["per_class"]) == {"class0", "class1", "class2"}


def test_folder_count_must_match_when_there_are_no_names(unnamed: Path, tmp_path: Path) -> None:
    from cvdeploy.evaluate.validate import validate

    with pytest.raises(InputError, match="no class names and 3 classes, but 2 class folders"):
        validate(unnamed, _folder(tmp_path / "data", ["x", "y"]), progress=False)


def test_optimize_scores_a_classifier_by_top1(unnamed: Path, tmp_path: Path) -> None:
    import shutil

    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.optimize.variants import table, variants

    b = tmp_path / "b.cvd"
    shutil.copytree(unnamed, b)
    data = _folder(tmp_path / "data", ["0", "1", "2"])
    calib = tmp_path / "calib"
    calib.mkdir()
    for f in data.rglob("*.png"):
        shutil.copy(f, calib / f"{f.parent.name}_{f.name}")
    art = quantize_int8(b, calib, options=Int8Options(val=data, search=False, float_head=False))
    assert art.metrics["top1"] == 1.0 and art.metrics["optimize"]["drop_points"] == 0.0
    fp32 = Bundle.load(b).artifact("onnx-fp32")
    assert fp32.metrics["top1"] == 1.0  # the reference, scored on the same data, kept beside it
    rows = variants(Bundle.load(b))
    by_name = {r.artifact: r for r in rows}
    assert by_name["onnx-int8"].top1 == 100.0 and by_name["onnx-int8"].drop == 0.0
    assert "top-1" in table(rows).columns
