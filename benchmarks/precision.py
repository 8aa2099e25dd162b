"""Every runtime × precision this machine can run, side by side: speed vs ONNX Runtime FP32, parity, fidelity.

For each model (the trained ``zoo:n`` and an Ultralytics YOLOv8n built from its yaml, untrained):

1. export to ONNX and OpenVINO (FP32, parity-checked against PyTorch);
2. add every reduced precision the machine runs: ``onnx-int8`` (accuracy-aware ORT QDQ), ``openvino-int8``
   (NNCF), ``openvino-bf16`` / ``openvino-fp16`` where the CPU has the native arithmetic (else the reason is
   printed), ``onnx-fp16`` (FP16 graph, casts on CPU);
3. measure the model p50 of every artifact with the bench harness, all artifacts interleaved round by
   round in one process, and divide ORT FP32's by each;
4. fidelity mAP50 of every artifact against ``onnx-fp32`` on fresh generated images (seed 9191, never
   used in training or tests) — only where FP32 finds objects (the untrained YOLOv8n finds none: its
   accuracy column is the output cosine alone).

Target (issue 9): BF16 ≥ 1.3× faster than ORT FP32 with fidelity mAP50 ≥ 0.95 on zoo:n, where the CPU has
native BF16. Writes ``benchmarks/results/precision.json`` (with the CPU and its flags) and ends with one
``RESULT key=value ...`` line.

    python benchmarks/precision.py [--runs 60] [--images 60] [--imgsz 640] [--skip yolov8n]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

SEED = 9191
BF16_SPEEDUP_TARGET = 1.3
BF16_FIDELITY_TARGET = 0.95


def _variants(bundle: Any, calib: Path, say: Any) -> dict[str, str]:
    """Add every reduced-precision artifact this machine runs; returns {artifact: why not} for the rest."""
    from cvdeploy.errors import CvdeployError
    from cvdeploy.optimize.fp16 import to_fp16
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.optimize.reduced import reduced_unsupported, to_openvino_precision

    skipped: dict[str, str] = {}
    steps = [
        ("onnx-int8", lambda: quantize_int8(bundle, calib, "onnxruntime", Int8Options(), say)),
        ("openvino-int8", lambda: quantize_int8(bundle, calib, "openvino", Int8Options(), say)),
        ("onnx-fp16", lambda: to_fp16(bundle, say)),
    ]
    for p in ("bf16", "fp16"):
        why = reduced_unsupported(p)
        if why:
            skipped[f"openvino-{p}"] = why
        else:
            steps.append((f"openvino-{p}", lambda p=p: to_openvino_precision(bundle, p, say, images=calib)))
    for name, run in steps:
        try:
            run()
        except CvdeployError as exc:
            skipped[name] = str(exc)
    return skipped


def _measure(model: str, source: str, work: Path, images: Path, runs: int, imgsz: int) -> dict[str, Any]:
    from cvdeploy.bundle import Bundle
    from cvdeploy.evaluate.fidelity import fidelity
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.optimize.variants import measure_latency

    say = lambda m: print(f"  · {m}", flush=True)  # noqa: E731
    print(f"\n== {model}: export to ONNX and OpenVINO", flush=True)
    out = work / f"{model}.cvd"
    export(
        source,
        out,
        ExportOptions(formats=("onnx", "openvino"), imgsz=(imgsz, imgsz), dynamic_batch=True),
        step=say,
    )
    b = Bundle.load(out)
    skipped = _variants(b, images, say)
    b = Bundle.load(out)
    names = b.artifact_names
    print(f"== {model}: latency of {', '.join(names)} (interleaved, {runs} passes each)", flush=True)
    lat = measure_latency(b, names, runs=runs, rounds=3)
    base = lat["onnx-fp32"]["model_p50_ms"]
    rows = []
    for art in b.manifest.artifacts:
        fid = fidelity(b, images, art.name, "onnx-fp32", limit=None, progress=False)
        p = art.parity
        rows.append({
            "artifact": art.name, "runtime": art.runtime, "precision": art.precision,
            "executes": (art.execution or {}).get("precision"),
            "model_p50_ms": round(lat[art.name]["model_p50_ms"], 2),
            "speedup": round(base / lat[art.name]["model_p50_ms"], 3),
            "parity_reference": p.reference if p else None,
            "cosine": p.cosine if p else None, "agreement": p.box_agreement if p else None,
            "max_abs_diff": p.max_abs_diff if p else None,
            "fidelity_mAP50": fid.get("mAP50"), "reference_detections": fid.get("reference_detections"),
        })  # fmt: skip
    return {"model": model, "source": source, "imgsz": imgsz, "rows": rows, "skipped": skipped}


def _print(res: dict[str, Any]) -> None:
    print(
        f"\n{res['model']} ({res['imgsz']} px) — speed vs onnx-fp32, parity vs its reference, fidelity vs onnx-fp32"
    )
    head = f"{'artifact':<16}{'executes':<10}{'p50 ms':>8}{'speed':>8}{'cosine':>10}{'agree':>7}{'fid mAP50':>11}"
    print(head)
    print("-" * len(head))
    for r in res["rows"]:
        fid = "n/a" if r["fidelity_mAP50"] is None else f"{r['fidelity_mAP50']:.3f}"
        agree = "n/a" if r["agreement"] is None else f"{r['agreement']:.3f}"
        cos = "n/a" if r["cosine"] is None else f"{r['cosine']:.5f}"
        print(
            f"{r['artifact']:<16}{r['executes']!s:<10}{r['model_p50_ms']:>8.1f}{r['speedup']:>7.2f}x{cos:>10}{agree:>7}{fid:>11}"
        )
    for name, why in res["skipped"].items():
        print(f"  {name}: not made — {why}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=60, help="measured passes per artifact")
    ap.add_argument("--images", type=int, default=60, help="generated images for calibration and fidelity")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--skip", default="", help="comma list of: zoo-n, yolov8n")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = ap.parse_args()
    from cvdeploy import env
    from cvdeploy.zoo.dataset import generate_dataset

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    cpu = env.cpu_info()
    print(f"CPU: {cpu['model']} — {env.capabilities_line()}; flags {' '.join(cpu['flags'])}")
    results = []
    with tempfile.TemporaryDirectory(prefix="cvdeploy-precision-") as tmp:
        work = Path(tmp)
        data = generate_dataset(
            work / "shapes", images=args.images, seed=SEED, splits=(0.0, 1.0, 0.0), progress=False
        )
        images = data.parent / "images" / "val"
        models = [("zoo-n", "zoo:n"), ("yolov8n", "yolov8n.yaml")]
        for model, source in models:
            if model in skip:
                continue
            res = _measure(model, source, work, images, args.runs, args.imgsz)
            _print(res)
            results.append(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"benchmark": "precision", "environment": env.fingerprint(), "results": results}, indent=2)
    )
    print(f"\nwrote {out}")
    bf16 = next(
        (
            r
            for res in results
            if res["model"] == "zoo-n"
            for r in res["rows"]
            if r["artifact"] == "openvino-bf16"
        ),
        None,
    )
    fields = {"cpu": cpu["model"].replace(" ", "_"), "bf16_native": env.cpu_capabilities()["bf16"]}
    for res in results:
        for r in res["rows"]:
            fields[f"{res['model']}:{r['artifact']}"] = f"{r['speedup']:.2f}x"
    if bf16 is not None:
        ok = bf16["speedup"] >= BF16_SPEEDUP_TARGET and (bf16["fidelity_mAP50"] or 0) >= BF16_FIDELITY_TARGET
        fields.update(
            {"bf16_speedup": bf16["speedup"], "bf16_fidelity": bf16["fidelity_mAP50"], "bf16_target_met": ok}
        )
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()))


if __name__ == "__main__":
    main()
