"""Non-model time per 1080p JPEG: everything a request costs besides the model, cvdeploy vs Ultralytics.

Both run the same ONNX file (zoo:n at 640) on the same 1920×1080 JPEG files (generated shapes scenes,
seed 5353, upscaled), interleaved image by image. cvdeploy runs twice: with the exact decode (the default)
and with ``jpeg_dct_scaling`` (JPEGs decoded at the smallest DCT scale still at least the letterbox size);
the detections of the two are compared (share reproduced at IoU ≥ 0.9). cvdeploy's split comes from its
pipeline's stage timings (read/decode, letterbox + tensor, model, decode + NMS); Ultralytics' non-model
time is its ``predict`` wall time minus the model time it reports (``speed["inference"]``): its image
loading, letterbox, tensor conversion, NMS and results. Target (issue 16): cvdeploy's non-model time
≤ 0.5× Ultralytics'.

    python benchmarks/non_model.py [--images 6] [--rounds 5]

Writes ``benchmarks/results/non_model.json``; ends with ``RESULT non_model_ratio=… …``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "non_model.json"))
    args = ap.parse_args()
    from cvdeploy._deps import available

    if not available("ultralytics"):
        print("RESULT skipped=1")
        return
    import cv2

    from cvdeploy import env
    from cvdeploy.pipeline import STAGES, Pipeline

    with tempfile.TemporaryDirectory(prefix="cvdeploy-nonmodel-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ul"))
        from cvdeploy.zoo.dataset import generate_dataset

        data = generate_dataset(
            root / "d", images=args.images, seed=5353, splits=(0.0, 1.0, 0.0), progress=False
        )
        files = []
        for i, src in enumerate(sorted((data.parent / "images" / "val").glob("*.jpg"))):
            f = root / f"p{i}.jpg"
            big = cv2.resize(cv2.imread(str(src)), (1920, 1080), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(f), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
            files.append(str(f))
        from cvdeploy.export import ExportOptions, export

        # a fixed-batch export: Ultralytics letterboxes a dynamic ONNX to a minimal rectangle, which this
        # model's fixed 640x640 input refuses
        b = export("zoo:n", root / "n.cvd", ExportOptions(parity_count=2))
        pipe = Pipeline.from_bundle(b, "onnx-fp32")
        fast = Pipeline.from_bundle(b, "onnx-fp32")
        fast.preprocessor.spec.jpeg_dct_scaling = True
        from ultralytics import YOLO

        yolo = YOLO(str(b.file("onnx-fp32")), task="detect")
        conf, iou = b.contract.output.conf, b.contract.output.iou

        def ul(f: str) -> tuple[float, float]:
            t0 = time.perf_counter()
            r = yolo.predict(f, conf=conf, iou=iou, verbose=False, device="cpu", save=False, imgsz=640)[0]
            wall = (time.perf_counter() - t0) * 1e3
            return wall - float(r.speed["inference"]), float(r.speed["inference"])

        def cv(f: str, p: Pipeline = pipe) -> tuple[dict[str, float], float]:
            stages: dict[str, float] = {}
            t0 = time.perf_counter()
            p.predict([f], timings=stages)
            wall = (time.perf_counter() - t0) * 1e3
            return {k: v * 1e3 for k, v in stages.items()}, wall

        from cvdeploy.parity import detection_agreement

        agreement = detection_agreement(pipe.predict(files), fast.predict(files))
        for f in files[:2]:
            ul(f)
            cv(f)
            cv(f, fast)
        rows: dict[str, list[dict[str, float]]] = {"exact": [], "dct": []}
        ul_rest: list[float] = []
        ul_model: list[float] = []
        order = ("exact", "dct", "ul")
        for r in range(args.rounds):
            for k, f in enumerate(files):
                turn = (r + k) % 3
                for who in order[turn:] + order[:turn]:
                    if who == "ul":
                        other, model = ul(f)
                        ul_rest.append(other)
                        ul_model.append(model)
                    else:
                        stages, wall = cv(f, pipe if who == "exact" else fast)
                        stages["total"] = wall
                        rows[who].append(stages)
    meds = {
        w: {st: float(np.median([row[st] for row in rows[w]])) for st in (*STAGES, "total")} for w in rows
    }
    rest = {w: float(np.median([row["total"] - row["inference"] for row in rows[w]])) for w in rows}
    ul_rest_ms = float(np.median(ul_rest))
    ratio = rest["dct"] / ul_rest_ms
    print(f"{len(files)} JPEGs at 1920x1080 × {args.rounds} rounds, zoo:n onnx-fp32 at 640, interleaved")
    for w, label in (("exact", "cvdeploy (exact decode)"), ("dct", "cvdeploy (jpeg_dct_scaling)")):
        split = ", ".join(f"{st} {meds[w][st]:.2f} ms" for st in STAGES)
        print(f"{label:<30}{split}; non-model {rest[w]:.2f} ms")
    print(
        f"{'ultralytics':<30}model {np.median(ul_model):.2f} ms; non-model (wall − its inference) {ul_rest_ms:.2f} ms"
    )
    agree = "n/a" if agreement is None else f"{agreement:.3f}"
    print(f"detections of the DCT-scaled decode reproduce the exact decode's: {agree} (IoU ≥ 0.9)")
    print(f"non-model ratio cvdeploy / ultralytics: {ratio:.3f} with DCT scaling, "
          f"{rest['exact'] / ul_rest_ms:.3f} exact (target ≤ 0.5)")  # fmt: skip
    cv_rest, med = rest["dct"], meds["dct"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "non_model", "environment": env.fingerprint(), "cvdeploy_stages_ms": med,
                               "cvdeploy_non_model_ms": cv_rest, "cvdeploy_exact_non_model_ms": rest["exact"],
                               "ultralytics_non_model_ms": ul_rest_ms, "agreement": agreement,
                               "ultralytics_model_ms": float(np.median(ul_model)), "ratio": ratio}, indent=2))  # fmt: skip
    print(f"RESULT non_model_ratio={ratio:.3f} cvdeploy_non_model_ms={cv_rest:.2f} ultralytics_non_model_ms={ul_rest_ms:.2f} "
          f"exact_non_model_ms={rest['exact']:.2f} agreement={agree} "
          f"read_ms={med['read']:.2f} preprocess_ms={med['preprocess']:.2f} decode_ms={med['decode']:.2f} "
          f"target_met={int(ratio <= 0.5)}")  # fmt: skip


if __name__ == "__main__":
    main()
