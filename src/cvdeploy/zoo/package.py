"""Package trained zoo weights into the shipped bundles ``zoo:n`` / ``zoo:s``.

    python -m cvdeploy.zoo.package --size n --weights runs/zoo-n/best.pt --val runs/zoo-data/val/data.yaml

Builds the model, loads the state dict safely, exports ONNX FP32 with the parity check, records the
val-split metrics, writes the reference profile and stores the state dict for later optimisation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from cvdeploy.bundle import ZOO_DIR, Bundle, Source
from cvdeploy.contract import Contract, InputSpec, OutputSpec
from cvdeploy.export import ExportOptions, export_torch
from cvdeploy.zoo.classes import CLASS_NAMES, IMGSZ


def zoo_contract() -> Contract:
    """The contract every zoo bundle shares: 640 letterbox, RGB /255, yolov8 output, 6 shape classes."""
    return Contract(
        task="detect",
        classes=list(CLASS_NAMES),
        input=InputSpec(height=IMGSZ, width=IMGSZ, dynamic_batch=True, stride=32),
        output=OutputSpec(format="yolov8", conf=0.25, iou=0.7, max_det=300),
    )


def package(
    size: str,
    weights: str | Path,
    out: str | Path | None = None,
    val_data: str | Path | None = None,
    train_log: str | Path | None = None,
) -> Bundle:
    """Build the bundle for one zoo size from a trained state dict; returns the loaded bundle."""
    import torch

    from cvdeploy.sources.torch import load_state_dict
    from cvdeploy.zoo.model import build_model

    module = load_state_dict(build_model(size), weights)
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    target = Path(out) if out else ZOO_DIR / f"{size}.cvd"
    opts = ExportOptions(formats=("onnx",), dynamic_batch=True, overwrite=True, name=f"zoo-{size}")
    bundle = export_torch(
        module,
        target,
        zoo_contract(),
        Source(kind="torch", factory=f"python:cvdeploy.zoo.model:build_{size}"),
        opts,
        state,
        step=print,
    )
    if train_log and Path(train_log).is_file():
        log: dict[str, Any] = json.loads(Path(train_log).read_text())
        shutil.copyfile(train_log, bundle.path / "source" / "train_log.json")
        bundle.manifest.artifacts[0].details["training"] = {
            k: log[k] for k in ("wall_time_s", "seed", "params", "images_seen", "best_map50_95") if k in log
        }
        bundle.save()
    if val_data:
        record_val(bundle, val_data)
    return Bundle.load(bundle.path)


def record_val(bundle: Bundle, val_data: str | Path) -> None:
    """Measure mAP on the val split into the manifest and write the reference profile of its images."""
    from cvdeploy.evaluate.datasets import read_yolo
    from cvdeploy.evaluate.validate import validate, write_metrics
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.profile import build_profile

    result = validate(bundle, str(val_data), split="val")
    write_metrics(bundle, result)
    print(f"val: mAP50-95 {result['mAP50-95']:.4f}  mAP50 {result['mAP50']:.4f}")
    images = [item.image for item in read_yolo(val_data, "val").items]
    profile = build_profile(Pipeline.from_bundle(bundle), images)
    (bundle.path / "profile.json").write_text(json.dumps(profile, indent=1))
    b = Bundle.load(bundle.path)
    b.manifest.reference_profile = "profile.json"
    b.save()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cvdeploy.zoo.package", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["n", "s"], required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--val", default=None, help="data.yaml whose val split gives the recorded metrics")
    ap.add_argument("--train-log", default=None)
    args = ap.parse_args(argv)
    b = package(args.size, args.weights, args.out, args.val, args.train_log)
    print(f"wrote {b.path}")


if __name__ == "__main__":
    main()
