"""End to end per image: cvdeploy's pipeline vs Ultralytics' ``predict`` on the same ONNX file.

Both read the same JPEG files (decode → letterbox → ONNX Runtime → NMS) at the same confidence
and IoU thresholds, interleaved image by image (A B A B …) so that drift of a busy machine hits
both alike; the boxes of the two are compared (same class, every coordinate within ±1 px).
The model is an untrained YOLOv8n built offline from ``yolov8n.yaml`` and exported by cvdeploy;
being untrained it scores low, so the confidence threshold is set just under the 300th-best score
of the first image, and both use it. (In an untrained YOLOv8n the activations vanish before the
head, so every anchor of one stride gets the same score: the threshold then keeps that whole level,
all boxes tie, and which of two tied, overlapping boxes NMS keeps is up to each implementation.)

    python benchmarks/vs_ultralytics.py [--rounds 5] [--images 8]

Ends with ``RESULT cvdeploy_ms=… ultralytics_ms=… ratio=… box_match=…`` (target ratio ≤ 0.9), or
``RESULT skipped=1`` when Ultralytics is not installed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")


def _match(
    a_xyxy: np.ndarray, a_cls: np.ndarray, b_xyxy: np.ndarray, b_cls: np.ndarray, tol: float = 1.0
) -> int:
    """Boxes of ``a`` with a same-class box in ``b`` whose four coordinates are all within ``tol`` px."""
    if len(a_xyxy) == 0 or len(b_xyxy) == 0:
        return 0
    diff = np.abs(a_xyxy[:, None, :] - b_xyxy[None, :, :]).max(-1)  # (na, nb)
    ok = (diff <= tol) & (a_cls[:, None] == b_cls[None, :])
    return int(ok.any(1).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="passes over the images")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=640)
    args = ap.parse_args()

    from cvdeploy._deps import available

    if not available("ultralytics"):
        print("ultralytics is not installed: skipping (pip install 'cvdeploy[ultralytics]')")
        print("RESULT skipped=1")
        return

    import cv2

    from cvdeploy.bench.stats import bootstrap_median_ratio
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.images import sample_images
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.results import Detections

    with tempfile.TemporaryDirectory(prefix="cvdeploy-vs-ul-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ul-config"))
        bundle = export(
            "yolov8n.yaml",
            root / "yolov8n.cvd",
            ExportOptions(formats=("onnx",), imgsz=(args.imgsz, args.imgsz), parity_count=2),
        )
        onnx_path = bundle.file("onnx-fp32")
        files = []
        for i, img in enumerate(sample_images(args.images)):
            f = root / f"img{i}.jpg"
            cv2.imwrite(str(f), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            files.append(str(f))

        pipe = Pipeline.from_bundle(bundle, "onnx-fp32")
        scores = pipe.infer(pipe.preprocess([cv2.imread(files[0])])[0])[0][0, 4:].max(0)
        # about 300 candidates before NMS on the first image (ties included: see the module docstring)
        conf = float(np.sort(scores)[-300]) * (1 - 1e-4)
        pipe.contract.output.conf = conf
        iou, max_det = pipe.contract.output.iou, pipe.contract.output.max_det

        from ultralytics import YOLO

        yolo = YOLO(str(onnx_path), task="detect")

        def ul(path: str) -> object:
            return yolo.predict(
                path,
                imgsz=args.imgsz,
                conf=conf,
                iou=iou,
                max_det=max_det,
                verbose=False,
                device="cpu",
                save=False,
            )[0]

        for f in files[:2]:  # warm-up both, discarded
            pipe.predict([f])
            ul(f)
        t_cv: list[float] = []
        t_ul: list[float] = []
        inf_cv: list[float] = []  # each one's own inference-stage figure, to split the model from the rest
        inf_ul: list[float] = []
        matched = total = found_cv = found_ul = 0
        for r in range(args.rounds):
            for k, f in enumerate(files):
                order = ("cv", "ul") if (r + k) % 2 == 0 else ("ul", "cv")
                for who in order:
                    t0 = time.perf_counter_ns()
                    if who == "cv":
                        stages: dict[str, float] = {}
                        det = pipe.predict([f], timings=stages)[0]
                        t_cv.append((time.perf_counter_ns() - t0) / 1e6)
                        inf_cv.append(stages["inference"] * 1e3)
                    else:
                        res = ul(f)
                        t_ul.append((time.perf_counter_ns() - t0) / 1e6)
                        inf_ul.append(float(res.speed["inference"]))  # type: ignore[attr-defined]
                if r == 0:
                    assert isinstance(det, Detections)
                    boxes = res.boxes  # type: ignore[attr-defined]
                    u_xyxy = boxes.xyxy.cpu().numpy()
                    u_cls = boxes.cls.cpu().numpy().astype(np.int64)
                    found_cv += len(det)
                    found_ul += len(u_xyxy)
                    matched += _match(u_xyxy, u_cls, det.xyxy, det.class_id)
                    total += max(len(det), len(u_xyxy))
        cv_ms, ul_ms = float(np.median(t_cv)), float(np.median(t_ul))
        ratio, low, high = bootstrap_median_ratio(np.asarray(t_ul), np.asarray(t_cv))
        box_match = matched / total if total else float("nan")
        rest_cv = float(np.median(np.asarray(t_cv) - np.asarray(inf_cv)))
        rest_ul = float(np.median(np.asarray(t_ul) - np.asarray(inf_ul)))
        print(f"{len(files)} images x {args.rounds} rounds at {args.imgsz}, conf {conf:.3g}, iou {iou}")
        print(f"cvdeploy    median {cv_ms:.2f} ms/image (p90 {np.percentile(t_cv, 90):.2f})")
        print(f"ultralytics median {ul_ms:.2f} ms/image (p90 {np.percentile(t_ul, 90):.2f})")
        print(
            f"ratio cvdeploy/ultralytics {ratio:.3f} (95 % CI {low:.3f} … {high:.3f}); target ≤ 0.9: "
            f"{'met' if ratio <= 0.9 else 'NOT met'}"
        )
        print(
            f"inference alone: cvdeploy {np.median(inf_cv):.2f} ms, ultralytics {np.median(inf_ul):.2f} ms; "
            f"everything else (read, letterbox, NMS, results): cvdeploy {rest_cv:.2f} ms, ultralytics {rest_ul:.2f} ms"
        )
        print(
            f"boxes: cvdeploy {found_cv}, ultralytics {found_ul}, matched within ±1 px: {matched} ({box_match:.3f})"
        )
        print(
            f"RESULT cvdeploy_ms={cv_ms:.2f} ultralytics_ms={ul_ms:.2f} ratio={ratio:.3f} ci_low={low:.3f} "
            f"ci_high={high:.3f} non_model_cvdeploy_ms={rest_cv:.2f} non_model_ultralytics_ms={rest_ul:.2f} "
            f"box_match={box_match:.3f} boxes_cvdeploy={found_cv} boxes_ultralytics={found_ul}"
        )


if __name__ == "__main__":
    main()
