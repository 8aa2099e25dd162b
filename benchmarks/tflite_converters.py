"""Which PyTorch/ONNX → TFLite converter keeps parity: onnx2tf or litert-torch, side by side.

Both convert the same two models — the trained zoo:n detector (640x640) and a YOLOv8n graph built
from Ultralytics' yaml (320x320, batch-norm statistics estimated on real photographs, offline) — and
each ``.tflite`` runs through cvdeploy's LiteRT runtime against the PyTorch module on the same
preprocessed photographs, with the parity figures every export records (max abs diff, cosine, share
of the reference's detections found again).

The two converters need incompatible dependency sets (onnx2tf pins tensorflow and old numpy/onnx;
litert-torch pulls jax and transformers), so run this once in each environment; the script measures
whichever converters import and prints one ``RESULT`` line per converter × model:

    python benchmarks/tflite_converters.py [--models zoo-n,yolov8n] [--images 8]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def zoo_n() -> tuple[Any, Any]:
    from cvdeploy.bundle import Bundle
    from cvdeploy.sources.torch import load_factory, load_state_dict

    b = Bundle.load("zoo:n")
    src = b.manifest.provenance.source
    assert src.factory and src.weights
    return load_state_dict(load_factory(src.factory), b.path / src.weights).eval(), b.contract


def yolov8n(imgsz: int = 320) -> tuple[Any, Any]:
    import torch
    from ultralytics import YOLO

    from cvdeploy.contract import Contract, InputSpec, OutputSpec
    from cvdeploy.images import sample_images
    from cvdeploy.preprocess import Preprocessor

    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")
    x, _ = Preprocessor(InputSpec(height=imgsz, width=imgsz))(sample_images(6))
    for m in yolo.model.modules():  # an untrained net's activations vanish: estimate BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    yolo.model.train()
    with torch.no_grad():
        yolo.model(torch.from_numpy(x))
    for seq in yolo.model.model[-1].cv3:
        seq[-1].bias.data.fill_(0.0)
    yolo.model.eval()
    from cvdeploy.sources.ultralytics import from_yolo

    model = from_yolo(yolo).module  # fused, eval, first output only: what cvdeploy exports
    contract = Contract(
        task="detect",
        classes=[str(i) for i in range(80)],
        input=InputSpec(height=imgsz, width=imgsz),
        output=OutputSpec(format="yolov8"),
    )
    return model, contract


def convert_litert_torch(module: Any, contract: Any, out: Path) -> Path:
    import litert_torch
    import torch

    from cvdeploy.tflite import consistent_tf32_flags

    sample = torch.zeros(1, 3, contract.input.height, contract.input.width)
    with consistent_tf32_flags(torch):
        litert_torch.convert(module.eval(), (sample,)).export(str(out))
    return out


def convert_onnx2tf(module: Any, contract: Any, out: Path) -> Path:
    import onnx2tf

    from cvdeploy.export import torch_to_onnx

    onnx_path = out.with_suffix(".onnx")
    torch_to_onnx(module, onnx_path, contract)
    folder = out.parent / f"{out.stem}_saved"
    onnx2tf.convert(
        input_onnx_file_path=str(onnx_path),
        output_folder_path=str(folder),
        keep_ncw_or_nchw_or_ncdhw_input_names=["images"],
        copy_onnx_input_output_names_to_tflite=True,
        non_verbose=True,
    )
    found = sorted(folder.glob("*_float32.tflite"))
    if not found:
        raise RuntimeError(f"onnx2tf wrote no *_float32.tflite in {folder}")
    found[0].rename(out)
    return out


CONVERTERS = {"litert-torch": ("litert_torch", convert_litert_torch), "onnx2tf": ("onnx2tf", convert_onnx2tf)}
MODELS = {"zoo-n": zoo_n, "yolov8n": yolov8n}


def measure(converter: str, model_name: str, images: list[np.ndarray], tmp: Path) -> dict[str, Any]:
    from cvdeploy.export import batches
    from cvdeploy.parity import check_parity, tolerance_for
    from cvdeploy.runtimes import RuntimeOptions, load_runtime
    from cvdeploy.runtimes.torch import TorchRuntime

    module, contract = MODELS[model_name]()
    out = tmp / f"{converter}-{model_name}.tflite"
    t0 = time.perf_counter()
    try:  # a copy: tracing may leave state (cached anchors) on the module the reference then runs
        CONVERTERS[converter][1](copy.deepcopy(module), contract, out)
    except Exception as exc:  # a converter failure is a result here, reported with its exact error
        return {"converter": converter, "model": model_name, "error": f"{type(exc).__name__}: {exc}"[:500]}
    seconds = time.perf_counter() - t0
    rt = load_runtime("litert", out, RuntimeOptions(precision="fp32"))
    ref = TorchRuntime(module)
    tensors, geoms = batches(contract, images, 1)
    parity, problem = check_parity(
        lambda t: ref.run({"images": t}),
        lambda t: rt.run({rt.inputs[0].name: t}),
        contract,
        tensors,
        geoms,
        "source",
        tolerance_for("fp32"),
    )
    return {
        "converter": converter,
        "model": model_name,
        "input": list(rt.inputs[0].shape),
        "output": list(rt.outputs[0].shape),
        "executes": rt.execution().precision,
        "max_abs_diff": parity.max_abs_diff,
        "cosine": parity.cosine,
        "agreement": parity.box_agreement,
        "passed": not problem,
        "problem": problem,
        "size_mb": round(out.stat().st_size / 1e6, 2),
        "convert_s": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="zoo-n,yolov8n")
    ap.add_argument("--images", type=int, default=8)
    args = ap.parse_args(argv)
    import importlib.util

    from cvdeploy.images import sample_images

    images = sample_images(args.images)
    present = [c for c, (mod, _) in CONVERTERS.items() if importlib.util.find_spec(mod) is not None]
    missing = [c for c in CONVERTERS if c not in present]
    if missing:
        print(f"not installed here (measure them in their own environment): {', '.join(missing)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cvdeploy-tflite-") as tmp:
        for conv in present:
            for model in args.models.split(","):
                rows.append(measure(conv, model, images, Path(tmp)))
    for r in rows:
        if "error" in r:
            print(f"RESULT converter={r['converter']} model={r['model']} error={r['error']!r}")
            continue
        print(
            f"RESULT converter={r['converter']} model={r['model']} max_abs_diff={r['max_abs_diff']:.3g} "
            f"cosine={r['cosine']:.7f} agreement={r['agreement']} passed={r['passed']} executes={r['executes']} "
            f"size_mb={r['size_mb']} convert_s={r['convert_s']} input={r['input']} output={r['output']}"
        )
        if r["problem"]:
            print(f"  problem: {r['problem']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
