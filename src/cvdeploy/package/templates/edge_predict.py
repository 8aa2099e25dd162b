"""One-file prediction for an edge device: numpy, OpenCV and one inference runtime — no torch, no cvdeploy.

Written by ``cvdeploy package --target edge``. ``model/contract.json`` holds the exact preprocessing and
decoding of the bundle this folder came from; ``model/`` holds the one model file. Packages installed
under ``lib/`` (``--vendor``) are used before any others.

    python predict.py photo.jpg [more.jpg ...] [--json] [--conf 0.25] [--threads 4]

As a library: ``from predict import Model; Model().predict(bgr_image)`` → list of dicts.
This file is cvdeploy's preprocessing, decoding and NMS written again without its dependencies; the
package test runs it against cvdeploy's own pipeline on the same images and requires the same results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if (HERE / "lib").is_dir():
    sys.path.insert(0, str(HERE / "lib"))
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a missing file is reported below, once

import cv2  # noqa: E402
import numpy as np  # noqa: E402

_CLASS_OFFSET = 7680.0


# ---- preprocessing (the contract's input spec) ---------------------------------------------------
def _letterbox(img: np.ndarray, height: int, width: int, pad: int) -> tuple[np.ndarray, tuple[float, ...]]:
    h, w = img.shape[:2]
    r = min(height / h, width / w)
    new_w, new_h = max(1, min(round(w * r), width)), max(1, min(round(h * r), height))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    bottom += height - (new_h + top + bottom)
    right += width - (new_w + left + right)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad, pad, pad))
    return img, (h, w, r, r, float(left), float(top))


def _stretch(img: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[float, ...]]:
    h, w = img.shape[:2]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR), (
        h,
        w,
        width / w,
        height / h,
        0.0,
        0.0,
    )


def _center_crop(img: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[float, ...]]:
    h, w = img.shape[:2]
    r = max(height / h, width / w)
    new_w, new_h = max(width, round(w * r)), max(height, round(h * r))
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width], (
        h,
        w,
        new_w / w,
        new_h / h,
        -float(left),
        -float(top),
    )


def preprocess(img: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, tuple[float, ...]]:
    """A BGR uint8 image → a ``(1, 3, H, W)`` (or NHWC) tensor and its geometry."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    h, w = spec["height"], spec["width"]
    resize = {
        "letterbox": lambda i: _letterbox(i, h, w, spec["pad_value"]),
        "stretch": lambda i: _stretch(i, h, w),
    }
    out, geom = resize.get(spec["resize"], lambda i: _center_crop(i, h, w))(img)
    x = out[None]
    if spec["color"] == "RGB":
        x = x[..., ::-1]
    if spec["dtype"] == "uint8":
        t = np.ascontiguousarray(x)
    else:
        mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
        t = (x.astype(np.float32) * np.float32(spec["scale"]) - mean) / std
        t = t.astype(np.float16 if spec["dtype"] == "float16" else np.float32)
    if spec["layout"] == "NCHW":
        t = t.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(t), geom


# ---- decoding (the contract's output spec) ----------------------------------------------------------
def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float64)
    areas = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    keep: list[int] = []
    alive = np.ones(len(b), bool)
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        ww = (np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0])).clip(0)
        hh = (np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1])).clip(0)
        inter = ww * hh
        alive &= ~(inter > iou * (areas[i] + areas - inter))
    return order[np.asarray(keep, dtype=np.int64)]


def decode(
    pred: np.ndarray, geom: tuple[float, ...], out: dict[str, Any], classes: list[str]
) -> list[dict[str, Any]]:
    """One image's raw output → detections ``{class_id, class_name, confidence, box: [x1, y1, x2, y2]}``."""
    pred = pred.astype(np.float32)
    if out["format"] == "yolov8":
        cls = pred[4:]
        cid = cls.argmax(0)
        score = cls[cid, np.arange(cls.shape[1])]
        keep = score > out["conf"]
        xywh, score, cid = pred[:4, keep].T, score[keep], cid[keep]
    else:  # yolov5
        p = pred[pred[:, 4] > out["conf"]]
        cls = p[:, 5:] * p[:, 4:5]
        cid = cls.argmax(1)
        score = cls[np.arange(cls.shape[0]), cid]
        keep = score > out["conf"]
        xywh, score, cid = p[keep, :4], score[keep], cid[keep]
    if score.size > out["max_nms"]:
        top = np.argsort(-score, kind="stable")[: out["max_nms"]]
        xywh, score, cid = xywh[top], score[top], cid[top]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    shifted = xyxy if out["agnostic_nms"] else xyxy + cid[:, None].astype(np.float64) * _CLASS_OFFSET
    kept = _nms(shifted, score, out["iou"])[: out["max_det"]] if score.size else np.zeros(0, np.int64)
    oh, ow, sx, sy, px, py = geom
    boxes = xyxy[kept].copy()
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - px) / sx, 0, ow)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - py) / sy, 0, oh)
    return [
        {
            "class_id": int(c),
            "class_name": classes[c] if c < len(classes) else str(c),
            "confidence": float(s),
            "box": [float(v) for v in bx],
        }
        for bx, s, c in zip(boxes, score[kept], cid[kept], strict=True)
        if bx[2] > bx[0] and bx[3] > bx[1]
    ]


def classify(logits: np.ndarray, out: dict[str, Any], classes: list[str]) -> list[dict[str, Any]]:
    v = logits.reshape(-1).astype(np.float32)
    probs = v if out.get("probabilities") or (v.min() >= 0 and abs(float(v.sum()) - 1) < 1e-3) else None
    if probs is None:
        e = np.exp(v - v.max())
        probs = e / e.sum()
    top = np.argsort(-probs, kind="stable")[: out["top_k"]]
    return [
        {
            "class_id": int(i),
            "class_name": classes[i] if i < len(classes) else str(i),
            "confidence": float(probs[i]),
        }
        for i in top
    ]


# ---- the one runtime -----------------------------------------------------------------------------------
class _LiteRT:
    def __init__(self, path: Path, threads: int, settings: dict[str, Any]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.outs = sorted(self.interp.get_output_details(), key=lambda d: d["index"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        scale, zero = self.inp["quantization"]
        if scale:
            x = np.clip(np.round(x / scale) + zero, -128, 255).astype(self.inp["dtype"])
        self.interp.set_tensor(self.inp["index"], x.astype(self.inp["dtype"]))
        self.interp.invoke()
        res = []
        for d in self.outs:
            y = self.interp.get_tensor(d["index"])
            s, z = d["quantization"]
            res.append((y.astype(np.float32) - z) * s if s else np.array(y))
        return res


class _OnnxRuntime:
    def __init__(self, path: Path, threads: int, settings: dict[str, Any]) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.name: x}))


class _OpenVINO:
    def __init__(self, path: Path, threads: int, settings: dict[str, Any]) -> None:
        import openvino as ov

        # f32 unless the package pins another precision: the plugin's own default is BF16 on some CPUs
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  **settings}  # fmt: skip
        core = ov.Core()
        model = core.read_model(str(path))
        # one image per call: a dynamic batch is fixed to 1 before compiling, as cvdeploy's predict does
        # (OpenVINO's CPU plugin runs a static shape 5-12 % faster); a graph that cannot be reshaped keeps it
        shapes = {}
        for port in model.inputs:
            ps = port.get_partial_shape()
            if ps.rank.is_static and len(ps) > 0 and ps[0].is_dynamic:
                ps[0] = ov.Dimension(1)
                shapes[port] = ps
        if shapes:
            try:
                model.reshape(shapes)
            except Exception:  # OpenVINO raises its own exception types: keep the dynamic batch
                model = core.read_model(str(path))
        self.compiled = core.compile_model(model, "CPU", config)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.compiled(x)
        return [np.asarray(result[o]) for o in self.compiled.outputs]


RUNTIMES: dict[str, Any] = {"litert": _LiteRT, "onnxruntime": _OnnxRuntime, "openvino": _OpenVINO}


class Model:
    """The packaged model: ``predict(bgr_image)`` → detections (or top-k classes, or raw arrays)."""

    def __init__(self, folder: str | Path = HERE / "model", threads: int | None = None) -> None:
        folder = Path(folder)
        self.meta = json.loads((folder / "contract.json").read_text(encoding="utf-8"))
        if threads is None:
            threads = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            )
        runtime = RUNTIMES[self.meta["runtime"]]
        self.run: Any = runtime(folder / self.meta["file"], int(threads), self.meta.get("settings", {}))

    def predict(self, image: np.ndarray, conf: float | None = None) -> list[Any]:
        c = self.meta["contract"]
        x, geom = preprocess(image, c["input"])
        outputs = self.run(x)
        out = dict(c["output"], **({"conf": conf} if conf is not None else {}))
        if out["format"] == "raw":
            return outputs
        if out["format"] == "classify":
            return classify(outputs[0][0], out, c["classes"])
        return decode(outputs[0][0], geom, out, c["classes"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the packaged model on images.")
    ap.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--conf", type=float, default=None, help="confidence threshold (default: the contract's)")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: CPUs available)")
    args = ap.parse_args(argv)
    images = {}
    for name in args.images:
        # the pixels as stored, as cvdeploy reads them (an EXIF orientation tag is not applied: the model was
        # checked on stored pixels; ``cvdeploy doctor`` reports images whose tag would rotate them)
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
        img = cv2.imread(name, flags) if Path(name).is_file() else None
        if img is None:
            print(f"error: cannot read image {name} (missing, or not an image)", file=sys.stderr)
            return 2
        images[name] = img
    model = Model(threads=args.threads)
    results = {}
    for name, img in images.items():
        res = model.predict(img, args.conf)
        results[name] = (
            [r.tolist() for r in res] if model.meta["contract"]["output"]["format"] == "raw" else res
        )
    if args.json:
        print(json.dumps(results))
    else:
        for name, dets in results.items():
            print(f"{name}: {len(dets)} result(s)")
            for d in dets:
                print(f"  {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
