"""The end-to-end demo behind ``make demo``: everything cvdeploy does, on the bundled detector.

Each step is a plain function over the library (no CLI parsing), so the demo doubles as a smoke
test of the public API. Steps: generate a small dataset → export ``zoo:n`` to ONNX and OpenVINO
with parity → validate both → predict on real photographs and generated images → benchmark →
serve and query the server → summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from cvdeploy.bundle import Bundle
from cvdeploy.images import read_image, sample_images
from cvdeploy.results import Detections

Say = Callable[[str], None]

DEMO_SEED = 777  # never used in training (training used seeds 1000-3000)


@dataclass
class DemoSummary:
    """What the demo produced: paths and headline figures, in the order they were made."""

    out_dir: Path
    rows: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, what: str, value: Any) -> None:
        self.rows.append((what, str(value)))


def run_demo(
    out_dir: str | Path = "demo-output",
    images: int = 40,
    bundle: str = "zoo:n",
    say: Say = print,
    bench: bool = True,
    serve: bool = True,
    show: Callable[[Any], None] | None = None,
) -> DemoSummary:
    """Run every step; returns the summary. Nothing is downloaded; everything lands in ``out_dir``.

    ``show`` receives the optimize variants table (a report document) to print it.
    """
    from cvdeploy.draw import annotate
    from cvdeploy.evaluate.validate import validate
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.zoo.dataset import generate_dataset

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(out)

    say(f"1/7 generating {images} labelled images (seed {DEMO_SEED}, never seen in training)")
    # every generated image goes to the val split: the demo evaluates, it does not train
    data_yaml = generate_dataset(
        out / "shapes", images=images, seed=DEMO_SEED, splits=(0.0, 1.0, 0.0), progress=False
    )
    summary.add("dataset", data_yaml)

    say(f"2/7 exporting {bundle} to ONNX and OpenVINO, each checked for parity against PyTorch")
    source = Bundle.load(bundle)
    target = out / f"{source.name}.cvd"
    b = export(
        bundle,
        target,
        ExportOptions(formats=("onnx", "openvino"), dynamic_batch=True, overwrite=True, name=source.name),
        step=lambda m: say("    " + m),
    )
    summary.add("bundle", b.path)
    for art in b.manifest.artifacts:
        p = art.parity
        if p is not None:
            agree = "n/a" if p.box_agreement is None else f"{p.box_agreement:.3f}"
            summary.add(f"parity {art.name}", f"max abs diff {p.max_abs_diff:.2e}, box agreement {agree}")

    say("3/7 validating both artifacts on the generated images (COCO mAP)")
    for name in ("onnx-fp32", "openvino-fp32"):
        res = validate(b, str(data_yaml), artifact=name, split="val", progress=False)
        summary.add(
            f"mAP50-95 {name}",
            f"{100 * res['mAP50-95']:.1f} points (mAP50 {100 * res['mAP50']:.1f}, {res['images']} images)",
        )

    _int8_step(b, out, data_yaml, summary, say, show)

    say("5/7 predicting on real photographs and generated images")
    pred_dir = out / "predictions"
    pred_dir.mkdir(exist_ok=True)
    pipe = Pipeline.from_bundle(b)
    photos = sample_images(3)
    generated = sorted((out / "shapes" / "images" / "val").glob("*.jpg"))[:3]
    inputs = [(f"photo{i}", img) for i, img in enumerate(photos)]
    inputs += [(p.stem, read_image(p)) for p in generated]
    found = 0
    for name, img in inputs:
        (prediction,) = pipe.predict([img])
        found += len(prediction) if isinstance(prediction, Detections) else 0
        cv2.imwrite(str(pred_dir / f"{name}.jpg"), annotate(img, prediction))
    summary.add("predictions", f"{pred_dir} ({len(inputs)} images, {found} detections)")

    if bench:
        _bench_step(b, out, summary, say)
    if serve:
        _serve_step(b, out, summary, say)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _int8_step(
    b: Bundle, out: Path, data_yaml: Path, summary: DemoSummary, say: Say, show: Callable[[Any], None] | None
) -> None:
    say(
        "4/7 quantizing to INT8 (ONNX Runtime, float box head, accuracy-aware within 1 mAP point); BF16 where native"
    )
    from cvdeploy.optimize import Int8Options, quantize_int8
    from cvdeploy.optimize.variants import variants_table

    art = quantize_int8(
        b,
        data_yaml.parent / "images" / "val",
        options=Int8Options(val=data_yaml),
        step=lambda m: say("    " + m),
    )
    opt = art.metrics.get("optimize", {})
    summary.add(
        f"mAP50-95 {art.name}",
        f"{100 * art.metrics.get('mAP50-95', float('nan')):.1f} points "
        f"(drop {opt.get('drop_points', float('nan')):+.2f} points vs onnx-fp32)",
    )
    _bf16(b, data_yaml, summary, say)
    say("    measuring every artifact for the variants table (size, latency, mAP, parity)")
    rows, doc = variants_table(b, measure=True, val=data_yaml, runs=15, report_dir=out / "reports")
    if show is not None:
        show(doc)
    for r in rows:  # speedup is None where there is no FP32 latency to compare with
        if r.artifact != "onnx-fp32" and r.speedup is not None:
            summary.add(f"speedup {r.artifact}", f"{r.speedup:.2f}x vs onnx-fp32 (model alone, batch 1)")
    summary.add("variants report", out / "reports" / "optimize.html")


def _bf16(b: Bundle, data_yaml: Path, summary: DemoSummary, say: Say) -> None:
    """openvino-bf16 where this CPU has native BF16 (OpenVINO told so explicitly); else say why not."""
    from cvdeploy.optimize.reduced import reduced_unsupported, to_openvino_precision

    why = reduced_unsupported("bf16")
    if why:
        summary.add("openvino-bf16", f"not made here: {why}")
        say(f"    openvino-bf16 not made: {why}")
        return
    say("    this CPU has native BF16: adding openvino-bf16 as a measured variant")
    art = to_openvino_precision(b, "bf16", lambda m: say("    " + m), val=data_yaml)
    opt = art.metrics.get("optimize", {})
    summary.add(
        f"mAP50-95 {art.name}",
        f"{100 * art.metrics.get('mAP50-95', float('nan')):.1f} points "
        f"(drop {opt.get('drop_points', float('nan')):+.2f} points vs onnx-fp32; executes "
        f"{(art.execution or {}).get('precision')})",
    )


def _bench_step(b: Bundle, out: Path, summary: DemoSummary, say: Say) -> None:
    say("6/7 benchmarking (warm-up excluded, percentiles, per-stage)")
    try:
        from cvdeploy.bench import run_bench
        from cvdeploy.reports import write_html
    except ImportError as exc:  # bench is optional in trimmed installs
        say(f"    skipped: {exc}")
        return
    report = run_bench(b, runs=30, warmup=5)
    html = write_html(report, out / "bench.html")
    for r in report.results:
        lat = r.latency
        summary.add(
            f"latency {r.key}",
            f"p50 {lat.p50_ms:.1f} ms, p95 {lat.p95_ms:.1f} ms, {r.throughput_ips:.1f} img/s",
        )
    summary.add("bench report", html)


def _serve_step(b: Bundle, out: Path, summary: DemoSummary, say: Say) -> None:
    say("7/7 serving the bundle on 127.0.0.1 and sending real requests")
    try:
        from cvdeploy.serve import run_in_background
    except ImportError as exc:
        say(f"    skipped: {exc}")
        return
    import json
    import urllib.request

    photo = sample_images(1)[0]
    _, jpeg = cv2.imencode(".jpg", photo)
    import logging

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # the demo prints its own summary
        logging.getLogger(name).setLevel(logging.WARNING)
    with run_in_background([b.path], host="127.0.0.1", port=0) as server:
        req = urllib.request.Request(
            f"{server.url}/v1/models/{b.name}/detect",
            data=jpeg.tobytes(),
            headers={"Content-Type": "image/jpeg"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
        n = len(body.get("detections", []))
        summary.add("serve image API", f"POST /v1/models/{b.name}/detect → {n} detections")
        from cvdeploy.pipeline import Pipeline

        tensor, _ = Pipeline.from_bundle(b).preprocess([photo])
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": b.contract.input.name,
                        "shape": list(tensor.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": tensor.nbytes},
                    }
                ],
                "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
            }
        ).encode()
        req = urllib.request.Request(
            f"{server.url}/v2/models/{b.name}/infer",
            data=header + tensor.tobytes(),
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            hlen = int(resp.headers.get("Inference-Header-Content-Length", "0"))
            raw = resp.read()
        meta = json.loads(raw[:hlen] if hlen else raw)
        shape = meta["outputs"][0]["shape"]
        summary.add("serve v2 binary infer", f"POST /v2/models/{b.name}/infer → output0 {shape}")
        summary.add("server", server.url + " (stopped)")
