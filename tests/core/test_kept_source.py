"""Bundles made from PyTorch keep the PyTorch model, so later steps work on the user's own model; the
contract is covered by the integrity check; provenance never depends on the working directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cvdeploy.bundle import Bundle
from cvdeploy.errors import BundleError
from cvdeploy.export import ExportOptions, export

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def yolo_pt_bundle(farm: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported from a (planted) Ultralytics YOLOv8n-seg checkpoint, from another working directory."""
    out = tmp_path_factory.mktemp("kept") / "seg.cvd"
    pt = farm.file("yolov8n", "segment", "pt")  # type: ignore[attr-defined]
    before = os.getcwd()
    os.chdir(pt.parent)
    try:  # a relative source path, as users type it
        export(pt.name, out, ExportOptions(imgsz=(192, 192), parity_count=2))
    finally:
        os.chdir(before)
    return out


def test_a_pt_bundle_keeps_a_safe_copy_of_the_model(yolo_pt_bundle: Path) -> None:
    b = Bundle.load(yolo_pt_bundle)
    src = b.manifest.provenance.source
    assert src.kind == "ultralytics" and src.kept
    assert src.file is not None and Path(src.file).is_absolute()  # never relative to the working directory
    assert (yolo_pt_bundle / "source" / "model.pt").is_file()
    arch = yaml.safe_load((yolo_pt_bundle / "source" / "model.yaml").read_text())
    assert arch["nc"] == 80 and "backbone" in arch
    # a plain state dict: loads with weights_only=True (no unpickling of code)
    state = torch.load(str(yolo_pt_bundle / "source" / "model.pt"), weights_only=True)
    assert all(hasattr(v, "shape") for v in state.values())


def test_the_kept_model_is_the_exported_one(yolo_pt_bundle: Path, photos: list[np.ndarray]) -> None:
    from cvdeploy.optimize.source import load_source_model
    from cvdeploy.pipeline import Pipeline

    b = Bundle.load(yolo_pt_bundle)
    model = load_source_model(b)
    pipe = Pipeline.from_bundle(b)
    x, _ = pipe.preprocess(photos[:1])
    with torch.inference_mode():
        ours = model(torch.from_numpy(x))
    onnx_out = pipe.infer(x)
    assert len(ours) == 2  # detections and mask prototypes
    for t, o in zip(ours, onnx_out, strict=True):  # within the FP32 parity tolerance (atol 1e-3, rtol 1e-4)
        assert np.abs(t.numpy() - o).max() <= 1e-3 + 1e-4 * np.abs(o).max()


def test_reexport_at_another_size_from_the_bundle_alone(
    yolo_pt_bundle: Path, tmp_path: Path, farm: object
) -> None:
    """The original checkpoint is gone; the bundle re-exports from what it keeps."""
    moved = tmp_path / "elsewhere.cvd"
    shutil.copytree(yolo_pt_bundle, moved)
    src_file = Path(Bundle.load(moved).manifest.provenance.source.file or "")
    hidden = src_file.with_suffix(".hidden")
    src_file.rename(hidden)
    try:
        b = export(str(moved), tmp_path / "small.cvd", ExportOptions(imgsz=(128, 128), parity_count=2))
    finally:
        hidden.rename(src_file)
    assert (b.contract.input.height, b.contract.task) == (128, "segment")
    assert b.artifact().parity is not None and b.artifact().parity.passed
    assert b.manifest.provenance.source.kept  # and it still keeps the model


def test_torchscript_bundle_keeps_the_archive(tmp_path: Path) -> None:
    from factories import build_classifier

    from cvdeploy.optimize.source import can_restructure, load_source_model

    ts = tmp_path / "cls.torchscript"
    torch.jit.trace(build_classifier().eval(), torch.zeros(1, 3, 32, 32)).save(str(ts))
    b = export(str(ts), tmp_path / "ts.cvd", ExportOptions(imgsz=(32, 32), hints=_names()))
    assert (tmp_path / "ts.cvd" / "source" / "model.torchscript").is_file()
    ts.unlink()  # re-export needs only the bundle
    again = export(str(b.path), tmp_path / "ts48.cvd", ExportOptions(imgsz=(48, 48), parity_count=2))
    assert again.contract.input.height == 48
    assert load_source_model(b) is not None
    assert "TorchScript" in (can_restructure(b) or "")


def _names():  # type: ignore[no-untyped-def]
    from cvdeploy.sources.assemble import ContractHints

    return ContractHints(classes=["red", "green", "blue"])


def test_an_edited_contract_is_refused(tiny_bundle_copy: Path) -> None:
    manifest = tiny_bundle_copy / "cvdeploy.yaml"
    doc = yaml.safe_load(manifest.read_text())
    assert doc["contract_sha256"]
    doc["contract"]["input"]["pad_value"] = 0  # a silent preprocessing change
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(BundleError, match=r"contract .* does not match its recorded sha256"):
        Bundle.load(tiny_bundle_copy)


def test_bundles_without_a_recorded_contract_digest_still_load(tiny_bundle_copy: Path) -> None:
    manifest = tiny_bundle_copy / "cvdeploy.yaml"
    doc = yaml.safe_load(manifest.read_text())
    del doc["contract_sha256"]  # written before the digest existed (the shipped zoo bundles)
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert Bundle.load(tiny_bundle_copy).contract.task == "detect"
