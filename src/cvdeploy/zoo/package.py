"""Package trained zoo weights into the shipped bundles ``zoo:n`` / ``zoo:s``.

    python -m cvdeploy.zoo.package --size n --weights runs/zoo-n/best.pt --train-log runs/zoo-n/train_log.json

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


#: The labelled split every shipped figure is measured on: a seed never used in training
#: (training used 1000, model selection 2000, the test split 3000). Regenerated bit for bit by tests.
RECORD_SEED = 5151
RECORD_IMAGES = 100


def package(
    size: str,
    weights: str | Path,
    out: str | Path | None = None,
    train_log: str | Path | None = None,
    record: bool = True,
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
        # a run continued from earlier weights carries the earlier run's log as "continued_from"
        chain = [log]
        while isinstance(chain[-1].get("continued_from"), dict):
            chain.append(chain[-1]["continued_from"])
        bundle.manifest.artifacts[0].details["training"] = {
            "wall_time_s": round(sum(r.get("total_wall_s") or 0.0 for r in chain), 1),
            "runs": len(chain),
            "seed": log.get("config", {}).get("seed"),
            "params": log.get("model", {}).get("params"),
            "images_seen": sum((r.get("train") or {}).get("images_seen") or 0 for r in chain),
            "best_val_mAP50-95": log.get("best_val_mAP50-95"),
            "test_mAP50-95": (log.get("test") or {}).get("mAP50-95"),
        }
        bundle.save()
    if record:
        record_val(bundle)
    return Bundle.load(bundle.path)


def record_dataset(root: str | Path) -> Path:
    """(Re)generate the recording split under ``root``; returns its data.yaml."""
    from cvdeploy.zoo.dataset import generate_dataset

    return generate_dataset(
        root, images=RECORD_IMAGES, seed=RECORD_SEED, splits=(0.0, 1.0, 0.0), progress=False
    )


def record_val(bundle: Bundle) -> dict[str, Any]:
    """Measure mAP on the recording split into the manifest and write the reference profile."""
    import tempfile

    from cvdeploy.evaluate.datasets import read_yolo
    from cvdeploy.evaluate.validate import validate, write_metrics
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.profile import build_profile

    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = record_dataset(tmp)
        result = validate(bundle, str(data_yaml), split="val", progress=False)
        result["dataset"] = f"zoo-shapes seed={RECORD_SEED} images={RECORD_IMAGES} imgsz={IMGSZ}"
        write_metrics(bundle, result)
        print(f"val: mAP50-95 {result['mAP50-95']:.4f}  mAP50 {result['mAP50']:.4f}")
        images = [item.image for item in read_yolo(data_yaml, "val").items]
        profile = build_profile(Pipeline.from_bundle(bundle), images)
    (bundle.path / "profile.json").write_text(json.dumps(profile, indent=1))
    b = Bundle.load(bundle.path)
    b.manifest.reference_profile = "profile.json"
    b.save()
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cvdeploy.zoo.package", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["n", "s"], required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--train-log", default=None)
    args = ap.parse_args(argv)
    b = package(args.size, args.weights, args.out, args.train_log)
    print(f"wrote {b.path}")


if __name__ == "__main__":
    main()
