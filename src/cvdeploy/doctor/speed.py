"""Check 8 — slowness (``--speed``): measure the deployment as it is configured, then each fix.

The deployment is measured with its own settings (:class:`~cvdeploy.doctor.timing.SpeedSettings`:
threads, concurrency, device, spinning) through the bench harness (real images through the one
pipeline, every stage timed); then — where a fact says a fix may help — the fix is measured side by
side with the deployment (:meth:`~cvdeploy.doctor.timing.Timing.versus`, passes alternating), so each
finding carries the gain measured in the same run:

- ``speed.provider_fallback``: an accelerator was requested, the CPU runs the model;
- ``speed.threads``: more intra-op threads than CPUs this process may use (or far fewer), vs the
  available count;
- ``speed.concurrency``: thread spinning on with several requests in flight, vs off;
- ``speed.precision``: FP16 on a CPU without FP16 arithmetic, S8S8 INT8 where only U8S8 is fast,
  INT8 without VNNI (vs the FP32 artifact), BF16 available but an OpenVINO FP32 artifact (vs BF16);
- ``speed.warmup``: first request vs steady state;
- ``speed.preprocessing``: share of image decode + preprocessing, vs images sent at the model's size;
- ``speed.input_size``: small objects (5th percentile, these images and the reference profile) still
  ≥ 24 px at a smaller input where the model keeps ≥ 80 % of its confident detections, vs that size;
- ``speed.model_size``: another artifact of the bundle as accurate (recorded) and faster.

The loader and clock are seams (as in :mod:`cvdeploy.bench.harness`), so tests can plant a slow
first run or inject timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from cvdeploy import env
from cvdeploy.bench.concurrent import measure_concurrent
from cvdeploy.bench.harness import ImageFeed
from cvdeploy.bundle import Artifact
from cvdeploy.decode import Decoder
from cvdeploy.doctor import figures
from cvdeploy.doctor.context import Context
from cvdeploy.doctor.findings import CheckResult, FigureFn, Finding, Severity
from cvdeploy.doctor.timing import Measured, SpeedSettings, Timing, speedup
from cvdeploy.doctor.variants import other_sizes
from cvdeploy.errors import CvdeployError
from cvdeploy.parity import detection_agreement
from cvdeploy.pipeline import Pipeline
from cvdeploy.preprocess import Preprocessor, resize_bgr
from cvdeploy.reports.document import Figure, Table
from cvdeploy.results import Detections, Result
from cvdeploy.runtimes import registry

CHECK, TITLE = "speed", "Slowness"
#: Small-object side (model pixels) a YOLO head finds reliably: three cells of its finest stride (8).
MIN_OBJECT_PX = 24
CONFIDENT = 0.5  # detections a smaller input must keep ...
KEEP = 0.8  # ... at least this share of them (a warning below 0.95: validate before deploying)
MIN_CONFIDENT = 5


def run(ctx: Context, settings: SpeedSettings) -> list[CheckResult]:
    t0 = time.perf_counter()
    paths = ctx.images.paths[: max(1, settings.images)]
    feed = ImageFeed([p.read_bytes() for p in paths], [str(p) for p in paths])
    r = Timing(ctx, settings, feed)
    ctx.progress.begin("measuring speed", (settings.runs + settings.warmup) * 6)
    findings: list[Finding] = []
    details: dict[str, Any] = {"settings": {"threads": settings.threads, "concurrency": settings.concurrency,
                                            "device": settings.device, "spinning": settings.spinning},
                               "available_cpus": env.available_cpus(), "capabilities": env.capabilities_line()}  # fmt: skip
    base = r.measure("as deployed", r.loader(settings.options()))
    for fn in (
        _fallback,
        _threads,
        _concurrency,
        _precision,
        _warmup,
        _preprocessing,
        _input_size,
        _model_size,
    ):
        try:
            f = fn(r, base)
        except CvdeployError as exc:  # an alternative that cannot be loaded here is not measured
            details.setdefault("not_measured", []).append(f"{fn.__name__.strip('_')}: {exc}")
            continue
        if f is not None:
            findings.append(f)
    ctx.progress.end()
    details["measured"] = [{"config": m.label, "p50_ms": round(m.p50(), 2), "first_ms": round(m.m.first_pass_ns / 1e6, 2),
                            "throughput_ips": round(m.throughput, 2),
                            "stages_p50_ms": {k: round(m.p50(k), 2) for k in m.m.samples_ns if k != "total"}}
                           for m in r.rows]  # fmt: skip
    rows = r.rows
    figs: list[FigureFn] = [lambda: _figure(rows)]
    summary = (f"as deployed: p50 {base.p50():.1f} ms per image (first request {base.m.first_pass_ns / 1e6:.0f} ms), "
               f"{len(r.rows)} configurations measured")  # fmt: skip
    res = CheckResult(CHECK, TITLE, "finding" if findings else "ok", summary, details, findings, figs)
    res.tables.append(Table(["configuration", "p50 ms", "first ms", "images/s", "decode+preprocess ms", "inference ms"],
                            [[m.label, f"{m.p50():.1f}", f"{m.m.first_pass_ns / 1e6:.1f}", f"{m.throughput:.1f}",
                              f"{m.p50('image_decode') + m.p50('preprocess'):.1f}", f"{m.p50('inference'):.1f}"]
                             for m in rows], title="Measured (each fix side by side with the deployment)"))  # fmt: skip
    res.seconds = time.perf_counter() - t0
    return [res]


def _severity(gain: float, critical_at: float = 1.3) -> Severity:
    return "critical" if gain >= critical_at else "warning"


def _fallback(r: Timing, base: Measured) -> Finding | None:
    s = r.settings
    if s.device in ("cpu", "auto") or not base.m.fell_back:
        return None
    return Finding("speed.provider_fallback", "critical",
                   f"the deployment asks for device {s.device!r} but the model runs on {base.m.device_used} "
                   f"(p50 {base.p50():.1f} ms): the accelerator's provider is not available in this installation", 0.9,
                   fix=f"install the runtime build for {s.device} (e.g. pip install onnxruntime-gpu) and its drivers, or "
                   "deploy a CPU-optimised artifact (cvdeploy optimize --int8)")  # fmt: skip


def _threads(r: Timing, base: Measured) -> Finding | None:
    avail = env.available_cpus()
    used = int(base.m.execution.get("threads") or r.settings.options().resolved_threads())
    over = used > avail
    under = r.settings.concurrency <= 1 and used * 2 <= avail
    if not (over or under):
        return None
    slow, fixed = r.versus(
        (f"threads={used} (as deployed)", r.loader(r.settings.options()), None),
        (f"threads={avail}", r.loader(r.settings.options().replace(threads=avail)), None),
    )
    gain = speedup(slow.p50(), fixed.p50())
    if over:
        ev = (f"{used} intra-op threads on {avail} available CPU(s) oversubscribe them: p50 {slow.p50():.1f} ms, with "
              f"{avail} thread(s) {fixed.p50():.1f} ms ({gain:.2f}× faster, measured)")  # fmt: skip
        score = 0.75 + 0.2 * min(1.0, max(0.0, gain - 1.0))
        return Finding("speed.threads", _severity(gain, 1.15) if used < 2 * avail else "critical", ev, score,
                       fix=f"set intra-op threads to {avail} (RuntimeOptions(threads=None) in cvdeploy; "
                       "OMP_NUM_THREADS/intra_op_num_threads elsewhere)")  # fmt: skip
    if gain < 1.3:
        return None
    ev = f"{used} thread(s) on {avail} available CPUs: p50 {slow.p50():.1f} ms, {fixed.p50():.1f} ms with {avail} ({gain:.2f}×, measured)"
    return Finding(
        "speed.threads", "warning", ev, 0.5 + 0.2 * min(1.0, gain - 1.0), fix=f"use {avail} intra-op threads"
    )


def _concurrency(r: Timing, base: Measured) -> Finding | None:
    s = r.settings
    opts = s.options()
    if s.concurrency <= 1 or not opts.resolved_spinning():
        return None
    on = measure_concurrent(
        r.loader(opts), r.feed, s.concurrency, runs=s.runs * 2, warmup=s.warmup, clock=s.clock
    )
    off = measure_concurrent(r.loader(opts.replace(spinning=False)), r.feed, s.concurrency, runs=s.runs * 2,
                             warmup=s.warmup, clock=s.clock)  # fmt: skip
    r.rows += [
        Measured(f"{s.concurrency} in flight, spinning", on),
        Measured(f"{s.concurrency} in flight, no spinning", off),
    ]
    gain = off.throughput / on.throughput if on.throughput > 0 else 1.0
    ev = (f"{s.concurrency} requests in flight with intra-op threads spin-waiting: {on.throughput:.1f} images/s; "
          f"with spinning off {off.throughput:.1f} images/s ({gain:.2f}×, measured)")  # fmt: skip
    score = 0.6 + 0.3 * min(1.0, max(0.0, gain - 1.0) * 2)
    return Finding("speed.concurrency", _severity(gain, 1.15), ev, score,
                   fix="turn intra-op spinning off when several requests run at once (session.intra_op.allow_spinning=0; "
                   "cvdeploy does it for concurrency > 1)")  # fmt: skip


def _alternative(r: Timing, art: Artifact, precision: str | None = None) -> tuple[Measured, Measured]:
    """The deployment and ``art`` (at ``precision``) measured side by side."""
    b = r.ctx.bundle
    options = r.settings.options()

    def load() -> Pipeline:
        opts = options.replace(precision=precision or art.precision)
        rt = registry.engine(art.runtime).load(b.file(art), opts)
        return Pipeline(b.contract.model_copy(deep=True), rt, art)

    return r.versus((f"{r.ctx.deployment.label} (as deployed)", r.loader(options), None),
                    (f"{art.name}" + (f" at {precision}" if precision else ""), load, None))  # fmt: skip


def _fp32_sibling(r: Timing) -> Artifact | None:
    dep = r.ctx.deployment
    same = [
        a for a in r.ctx.bundle.manifest.artifacts if a.precision == "fp32" and a.runtime == dep.runtime.name
    ]
    anyfp32 = [a for a in r.ctx.bundle.manifest.artifacts if a.precision == "fp32"]
    found = same or anyfp32
    return found[0] if found else None


def _s8s8(path: Any) -> bool:
    """Whether an ONNX QDQ graph quantises activations to signed INT8 (zero points of type int8)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[0] not in inits:
            zp = inits.get(n.input[2])
            if zp is not None:
                return bool(zp.data_type == onnx.TensorProto.INT8)
    return False


def _precision(r: Timing, base: Measured) -> Finding | None:
    dep = r.ctx.deployment
    caps = env.cpu_capabilities()
    executed = str(base.m.execution.get("precision", dep.runtime.execution().precision))
    on_cpu = "cpu" in base.m.device_used.lower()
    reason = None
    if executed == "fp16" and on_cpu and not caps["fp16"]:
        reason = "FP16 on a CPU without FP16 arithmetic (the engine converts to FP32 and back around every operator)"
    elif (
        executed == "int8"
        and on_cpu
        and dep.onnx_path is not None
        and _s8s8(dep.onnx_path)
        and not env.has_fast_int8_s8s8()
    ):
        reason = "S8S8 INT8 (signed activations) on an x86 CPU, where only U8S8 kernels are fast"
    elif executed == "int8" and on_cpu and not caps["vnni"]:
        reason = "INT8 on a CPU without VNNI (no INT8 dot-product instructions)"
    if reason is not None:
        alt = _fp32_sibling(r)
        if alt is None:
            return Finding(
                "speed.precision",
                "warning",
                f"the deployment runs {reason}; no FP32 artifact to compare",
                0.5,
            )
        slow, fast = _alternative(r, alt)
        gain = speedup(slow.p50(), fast.p50())
        ev = f"the deployment runs {reason}: p50 {slow.p50():.1f} ms; {alt.name} {fast.p50():.1f} ms ({gain:.2f}×, measured)"
        fix = ("quantise U8S8 (cvdeploy optimize --int8 picks it by CPU)" if "S8S8" in reason else
               f"deploy {alt.name}, or a precision this CPU runs fast (cvdeploy optimize --auto)")  # fmt: skip
        return Finding(
            "speed.precision", _severity(gain, 1.1), ev, 0.7 + 0.25 * min(1.0, max(0.0, gain - 1.0)), fix=fix
        )
    if (
        executed == "fp32"
        and on_cpu
        and caps["bf16"]
        and "bf16" in registry.engine(dep.runtime.name).precisions
        and not dep.from_file
    ):
        slow, fast = _alternative(r, dep.artifact, "bf16")
        gain = speedup(slow.p50(), fast.p50())
        if gain >= 1.2:
            ev = (f"this CPU has native BF16 but {dep.label} runs FP32: p50 {slow.p50():.1f} ms, {fast.p50():.1f} ms at "
                  f"BF16 ({gain:.2f}×, measured)")  # fmt: skip
            return Finding("speed.precision", "warning", ev, 0.45, fix="add a BF16 artifact with cvdeploy optimize --bf16 "
                           "(its accuracy is checked) and deploy it")  # fmt: skip
    return None


def _warmup(r: Timing, base: Measured) -> Finding | None:
    first = base.m.first_pass_ns / 1e6
    steady = base.p50()
    ratio = first / steady if steady > 0 else 1.0
    if ratio < 5 or first - steady < 50:
        return None
    warm = base.m.warmup_ns / 1e6
    settle = next((i + 1 for i, v in enumerate(warm) if v <= 1.5 * steady), len(warm) + 1)
    ev = (f"the first request takes {first:.0f} ms, the steady state {steady:.1f} ms ({ratio:.0f}×); it settles after "
          f"{settle} request(s) (measured)")  # fmt: skip
    score = 0.5 + 0.45 * min(1.0, math.log10(ratio) / 2)
    return Finding("speed.warmup", "critical" if ratio >= 10 else "warning", ev, score,
                   fix=f"send {max(settle, 2)} warm-up requests at startup before taking traffic, and leave them out "
                   "of latency figures (cvdeploy bench and serve do)")  # fmt: skip


def _preprocessing(r: Timing, base: Measured) -> Finding | None:
    pre = base.p50("image_decode") + base.p50("preprocess")
    total = base.p50()
    share = pre / total if total > 0 else 0.0
    # a quarter of the request is worth a measurement: since decode and letterbox reuse their buffers, a
    # 12-megapixel upload is ~36 % of a zoo:n request here (it was over 40 % when each decode faulted in a
    # new array), and sending it at the model's size still measured ~1.5x
    if share < 0.25 or pre < 5:
        return None
    spec = r.ctx.deployment.pipeline.contract.input
    small = []
    for data in r.feed.encoded:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is not None:
            small.append(resize_bgr(img, max(spec.height, spec.width)))
    slow, fixed = r.versus(
        ("images as sent", r.loader(r.settings.options()), None),
        ("images sent at the model size", r.loader(r.settings.options()), ImageFeed.from_arrays(small)),
    )
    gain = speedup(slow.p50(), fixed.p50())
    if gain < 1.1:  # measured: smaller images would not make requests noticeably faster
        return None
    ev = (f"image decode + preprocessing take {pre:.1f} of {total:.1f} ms per request ({share:.0%}); with images sent at "
          f"the model's size ({spec.height}x{spec.width}) a request takes {fixed.p50():.1f} ms instead of {slow.p50():.1f} "
          f"({gain:.2f}×, measured)")  # fmt: skip
    return Finding("speed.preprocessing", _severity(gain, 1.3), ev, 0.5 + 0.4 * min(1.0, share),
                   fix=f"resize images to about {max(spec.height, spec.width)} px on the client (or decode at reduced size: "
                   "cv2.IMREAD_REDUCED_COLOR_2/4) before sending them")  # fmt: skip


def _object_side(r: Timing) -> tuple[float | None, str]:
    """Small-object side in model pixels: the 5th percentile on these images and in the reference profile."""
    ctx = r.ctx
    spec = ctx.deployment.pipeline.contract.input
    sides = []
    for rec in ctx.passed.records.values():
        res = rec.result
        if isinstance(res, Detections) and len(res):
            w, h = rec.size
            scale = min(spec.width / w, spec.height / h)
            wh = (res.xyxy[:, 2:] - res.xyxy[:, :2]).clip(0) * scale
            sides.extend(np.minimum(wh[:, 0], wh[:, 1]).tolist())
    found = float(np.percentile(sides, 5)) if sides else None
    prof = ((ctx.profile or {}).get("output") or {}).get("box_area_fraction") or {}
    p5 = prof.get("p5")  # profiles written before it was recorded have none
    from_profile = math.sqrt(float(p5)) * min(spec.height, spec.width) if p5 is not None else None
    cands = [v for v in (found, from_profile) if v is not None]
    where = "; ".join(t for t in (f"5th percentile on these images {found:.0f} px" if found is not None else "",
                                  f"in the reference profile {from_profile:.0f} px" if from_profile is not None else "") if t)  # fmt: skip
    return (min(cands) if cands else None), where


def _agreement_at(ctx: Context, resizable: Any, contract: Any) -> float | None:
    """Share of the model's confident detections (≥ 0.5) on the sampled images still found at ``contract``'s size.

    None when there are too few to tell (under ``MIN_CONFIDENT``).
    """
    pre, dec = (
        Preprocessor(contract.input),
        Decoder(contract, [o.name for o in ctx.deployment.runtime.outputs]),
    )
    found: list[Result] = []
    confident: list[Result] = []
    for c in ctx.passed.captures:
        t, g = pre([c.image])
        found.extend(dec(resizable.run(t), g))
        confident.append(
            c.result.filter(c.result.confidence >= CONFIDENT)
            if isinstance(c.result, Detections)
            else c.result
        )
    if sum(len(r) for r in confident if isinstance(r, Detections)) < MIN_CONFIDENT:
        return None
    return detection_agreement(confident, found, iou=0.5)


def _input_size(r: Timing, base: Measured) -> Finding | None:
    ctx = r.ctx
    spec = ctx.deployment.pipeline.contract.input
    if ctx.deployment.pipeline.contract.task != "detect":
        return None
    side, where = _object_side(r)
    if side is None:
        return None
    smaller = sorted((hw for hw in other_sizes(spec) if hw[0] < spec.height and side * hw[0] / spec.height >= MIN_OBJECT_PX),
                     key=lambda hw: hw[0])  # fmt: skip
    if not smaller:
        return None
    resizable = ctx.workspace.resizable(ctx.deployment)
    if resizable is None:
        return None
    # the smallest size at which the model still finds what it finds now (agreement on the sampled images)
    chosen = None
    for h, w in smaller:
        contract = ctx.deployment.pipeline.contract.model_copy(deep=True)
        contract.input.height, contract.input.width = h, w
        agreement = _agreement_at(ctx, resizable, contract)
        if agreement is not None and agreement >= KEEP:
            chosen = (h, w, contract, agreement)
            break
    if chosen is None:
        return None
    h, w, contract, agreement = chosen

    def at(c: Any) -> Callable[[], Pipeline]:
        return lambda: Pipeline(c, resizable.runtime, ctx.deployment.artifact)

    ref, fast = r.versus((f"input {spec.height}x{spec.width}", at(ctx.deployment.pipeline.contract.model_copy(deep=True)), None),
                         (f"input {h}x{w}", at(contract), None))  # fmt: skip
    gain = speedup(ref.p50(), fast.p50())
    if gain < 1.2:
        return None
    ev = (f"the small objects are {side:.0f} px at {spec.height}x{spec.width} ({where}); at {h}x{w} they stay ≥ "
          f"{MIN_OBJECT_PX} px, the model keeps {agreement:.0%} of its confident detections and runs {gain:.2f}× faster "
          f"({ref.p50():.1f} → {fast.p50():.1f} ms, measured on {resizable.why})")  # fmt: skip
    if agreement < 0.95:
        ev += f"; it loses {1 - agreement:.0%} of them: validate the smaller size on labelled images first"
    return Finding("speed.input_size", "critical" if gain >= 1.5 and agreement >= 0.95 else "warning", ev,
                   0.45 + 0.3 * min(1.0, gain - 1.0),
                   fix=f"re-export at {h}x{w} (cvdeploy export SOURCE --imgsz {h},{w}) and validate it (cvdeploy val)")  # fmt: skip


def _accuracy(art: Artifact) -> float | None:
    v = art.metrics.get("mAP50-95")
    return float(v) if isinstance(v, int | float) else None


def _model_size(r: Timing, base: Measured) -> Finding | None:
    ctx = r.ctx
    dep = ctx.deployment
    mine = _accuracy(dep.artifact) if not dep.from_file else None
    best: tuple[float, Artifact, Measured, Measured, str] | None = None
    for art in ctx.bundle.manifest.artifacts:
        if art.name == dep.artifact.name or registry.engine(art.runtime).unsupported(art.precision):
            continue
        theirs = _accuracy(art)
        within = (art.metrics.get("optimize") or {}).get("within_budget")
        if theirs is not None and mine is not None:
            ok, why = theirs >= mine - 0.01, f"mAP50-95 {theirs:.3f} vs {mine:.3f} recorded"
        elif within is True:
            ok, why = True, "within its accuracy budget (recorded by cvdeploy optimize)"
        else:
            continue
        if not ok:
            continue
        slow, m = _alternative(r, art)
        gain = speedup(slow.p50(), m.p50())
        if gain >= 1.2 and (best is None or gain > best[0]):
            best = (gain, art, m, slow, why)
    if best is None:
        return None
    gain, art, m, slow, why = best
    ev = (f"{art.name} is as accurate ({why}) and {gain:.2f}× faster here: p50 {m.p50():.1f} ms vs {slow.p50():.1f} ms "
          f"for {dep.label} (measured side by side)")  # fmt: skip
    return Finding("speed.model_size", _severity(gain, 1.5), ev, 0.5 + 0.3 * min(1.0, gain - 1.0),
                   fix=f"deploy {art.name} (cvdeploy serve BUNDLE --artifact {art.name})")  # fmt: skip


def _figure(rows: list[Measured]) -> list[Figure]:
    seq = [m for m in rows if "in flight" not in m.label]
    if not seq:
        return []
    labels = [m.label for m in seq]
    stages = {"image decode": [m.p50("image_decode") for m in seq], "preprocess": [m.p50("preprocess") for m in seq],
              "inference": [m.p50("inference") for m in seq], "decode/NMS": [m.p50("postprocess") for m in seq]}  # fmt: skip
    png = figures.stage_split(labels, stages, "Where a request's time goes (median per stage)")
    return [Figure("Per-stage latency of each configuration measured", png,
                   "the deployment as configured, then each fix measured in the same run")] if png else []  # fmt: skip
