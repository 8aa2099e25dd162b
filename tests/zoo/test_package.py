"""Packaging trained zoo weights: the training history of continued runs is summed, not lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def test_package_sums_continued_runs(tmp_path: Path) -> None:
    from cvdeploy.zoo.model import build_model
    from cvdeploy.zoo.package import package

    torch.manual_seed(0)
    weights = tmp_path / "best.pt"
    torch.save(build_model("n").state_dict(), str(weights))
    first = {"total_wall_s": 100.0, "train": {"images_seen": 1000}}
    second = {"total_wall_s": 50.0, "train": {"images_seen": 400}, "continued_from": first,
              "config": {"seed": 1}, "best_val_mAP50-95": 0.5}  # fmt: skip
    log = tmp_path / "train_log.json"
    log.write_text(json.dumps(second))
    b = package("n", weights, tmp_path / "n.cvd", log, record=False)
    training = b.artifact("onnx-fp32").details["training"]
    assert training["runs"] == 2 and training["wall_time_s"] == 150.0 and training["images_seen"] == 1400
    assert json.loads((b.path / "source" / "train_log.json").read_text())["continued_from"] == first
