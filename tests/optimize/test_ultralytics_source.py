"""Pruning and distillation work on a user's own Ultralytics model: the bundle keeps its PyTorch source
(YAML + state dict) and ``load_source_model`` rebuilds it; Ultralytics' C2f/C3k2/C2PSA blocks are split
so that DepGraph can prune them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ultralytics")
pytest.importorskip("torch_pruning")
pytestmark = [pytest.mark.ultralytics, pytest.mark.slow]


@pytest.mark.parametrize("arch", ["yolov8n", "yolo11n"])
def test_prune_and_distill_an_ultralytics_bundle(arch: str, tmp_path: Path, calib_dir: Path) -> None:
    from cvdeploy.bundle import Bundle
    from cvdeploy.errors import ConfigError
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.optimize.distill import TrainConfig
    from cvdeploy.optimize.retrain import distill_bundle, prune_bundle

    b = export(f"{arch}.yaml", tmp_path / "m.cvd", ExportOptions(imgsz=(160, 160), parity_count=2))
    assert b.manifest.provenance.source.kept
    config = TrainConfig(epochs=1, crop=160, batch=3, feature_gain=5.0)  # the recipe's, as the CLI passes it
    said: list[str] = []
    pruned = prune_bundle(b, 0.2, calib_dir, config, said.append)
    assert pruned.details["pruning"]["gmacs_after"] < pruned.details["pruning"]["gmacs_before"]
    # no zoo neck to match: outputs only, said so, not an error
    assert any("outputs only" in m for m in said) and "neck" not in pruned.details["recovery"]["method"]
    assert pruned.parity is not None and pruned.parity.passed  # the ONNX matches the pruned PyTorch model
    with pytest.raises(ConfigError, match="zoo detectors"):  # asked for explicitly: refused, in one line
        distill_bundle(b, str(b.path), calib_dir, config)
    distilled = distill_bundle(b, str(b.path), calib_dir, TrainConfig(epochs=1, crop=160, batch=3))
    assert distilled.parity is not None and distilled.parity.passed
    assert {"onnx-fp32-pruned20", "onnx-fp32-distilled"} <= set(Bundle.load(b.path).artifact_names)
