"""``cvdeploy advise``: where and how to deploy a bundle, from what was measured and what the user needs.

Inputs, all measured before: each artifact's parity, recorded accuracy (``cvdeploy val --write``) and
variants row (``metrics["variant"]``: p50 and model p50 from ``cvdeploy optimize``), bench reports
(``cvdeploy bench --report DIR`` writes ``DIR/bench.json``: latency, throughput per image size, batch, threads, concurrency)
and the reference profile (the sizes of the images the model sees). Constraints: a latency budget, a
request rate, where it must run, offline, private data.

Each decision carries the number behind it, what was ruled out and why; a decision without data says
which ``bench``/``optimize``/``val`` run would supply it instead of guessing.

    where → artifact (format + precision) → model size → input size → batch → replicas for the rate
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import ConfigError
from cvdeploy.runtimes import registry

WHERE = ("cloud", "edge", "local")
#: Share of a replica's measured capacity planned for, so queues stay short at the target rate.
HEADROOM = 0.7


@dataclass
class Constraints:
    latency_ms: float | None = None  # p95 budget per request
    rps: float | None = None  # requests per second to sustain
    where: str | None = None  # cloud | edge | local
    offline: bool = False
    private_data: bool = False
    max_drop: float = 1.0  # mAP50-95 points an artifact may lose against FP32


@dataclass
class Decision:
    """One recommendation: what, the number behind it, why; what was ruled out; how to get missing data."""

    topic: str
    choice: str | None
    evidence: str
    ruled_out: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class Advice:
    bundle: str
    constraints: dict[str, Any]
    decisions: list[Decision]
    measured_on: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "constraints": self.constraints, "measured_on": self.measured_on,
                "decisions": [asdict(d) for d in self.decisions]}  # fmt: skip

    def decision(self, topic: str) -> Decision:
        return next(d for d in self.decisions if d.topic == topic)


@dataclass
class Measured:
    """One artifact's latency at one configuration: from the variants table or a bench report."""

    artifact: str
    imgsz: tuple[int, int]
    batch: int
    p50_ms: float
    p95_ms: float | None
    throughput_ips: float | None
    threads: int | None
    concurrency: int
    source: str  # "variants table" or the bench report's file name


def load_bench(paths: list[Path]) -> list[dict[str, Any]]:
    """Bench reports (the ``bench.json`` that ``cvdeploy bench --report DIR`` writes); anything else is a one-line error."""
    from cvdeploy.bench.compare import load_report

    return [{**load_report(p), "_file": Path(p).name} for p in paths]


def measurements(bundle: Bundle, reports: list[dict[str, Any]]) -> list[Measured]:
    c = bundle.contract.input
    out: list[Measured] = []
    for art in bundle.manifest.artifacts:
        v = art.metrics.get("variant") or {}
        if isinstance(v.get("p50_ms"), int | float):
            out.append(Measured(art.name, (c.height, c.width), 1, float(v["p50_ms"]), None,
                                1000.0 / float(v["p50_ms"]), None, 1,
                                f"variants table ({v.get('cpu', '?')}, {v.get('cores', '?')} cores)"))  # fmt: skip
    for rep in reports:
        for r in rep.get("results", []):
            cfg = r.get("config", {})
            if cfg.get("artifact") not in bundle.artifact_names:
                continue
            lat = r.get("latency") or {}
            h, w = cfg.get("imgsz", (c.height, c.width))
            out.append(Measured(
                cfg["artifact"], (int(h), int(w)), int(cfg.get("batch", 1)),
                float(r.get("p50_ms") or lat.get("p50_ms") or 0.0), lat.get("p95_ms"), r.get("throughput_ips"),
                cfg.get("threads"), int(cfg.get("concurrency", 1)), rep["_file"],
            ))  # fmt: skip
    return out


def _map(art: Artifact) -> float | None:
    v = art.metrics.get("mAP50-95")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def advise(
    bundle: Bundle, constraints: Constraints, bench: list[Path] | None = None, ref: str | None = None
) -> Advice:
    """The recommendation for ``bundle`` under ``constraints`` (see the module docstring); ``ref`` is how the
    user named the bundle (``zoo:n``), used in the commands suggested for missing data."""
    cons = constraints
    if cons.where is not None and cons.where not in WHERE:
        raise ConfigError(f"--where {cons.where!r}: use one of {', '.join(WHERE)}")
    for name, v in (("--latency-ms", cons.latency_ms), ("--rps", cons.rps)):
        if v is not None and v <= 0:
            raise ConfigError(f"{name} must be positive, not {v}")
    where_ref = ref or str(bundle.path)
    reports = load_bench(list(bench or []))
    meas = measurements(bundle, reports)
    b = bundle.name
    decisions: list[Decision] = []
    art_d, chosen, best = _artifact(bundle, cons, meas, where_ref)
    where_d = _where(cons, best)
    if where_d.choice == "edge" and not any(
        registry.engine(a.runtime).edge for a in bundle.manifest.artifacts
    ):
        art_d.missing.append(
            f"an edge format: cvdeploy export SOURCE -o {bundle.name}-edge.cvd --format onnx,openvino (or "
            "tflite from a PyTorch source) — an edge package then needs no PyTorch and a smaller runtime"
        )
    decisions += [where_d, art_d]
    decisions.append(_model_size(bundle, cons, best, where_ref))
    decisions.append(_input_size(bundle, cons, meas, chosen, where_ref))
    batch_d, per_replica = _batch(bundle, cons, meas, chosen, where_ref)
    decisions.append(batch_d)
    decisions.append(_replicas(where_ref, cons, per_replica, chosen))
    profile = _profile(bundle)
    if profile:
        decisions.append(profile)
    env = [str(m.source) for m in meas]
    return Advice(b, asdict(cons), decisions, sorted(set(env)))


def _artifact(
    bundle: Bundle, cons: Constraints, meas: list[Measured], ref: str
) -> tuple[Decision, str | None, Measured | None]:
    c = bundle.contract.input
    at_size = {m.artifact: m for m in sorted(meas, key=lambda m: -m.p50_ms)
               if m.imgsz == (c.height, c.width) and m.batch == 1 and m.concurrency == 1}  # fmt: skip
    fp32 = next((a for a in bundle.manifest.artifacts if a.name == "onnx-fp32"), None)
    ref_map = _map(fp32) if fp32 else None
    ruled: list[dict[str, str]] = []
    ok: list[tuple[Measured, Artifact]] = []
    missing: list[str] = []
    for art in bundle.manifest.artifacts:
        eng = registry.engine(art.runtime)
        if not eng.deployable:
            ruled.append({"option": art.name, "why": f"the {eng.name} reference is not a deployment format"})
            continue
        if art.parity is not None and not art.parity.passed:
            ruled.append({"option": art.name, "why": "its parity check failed"})
            continue
        m = _map(art)
        if m is not None and ref_map is not None and 100 * (ref_map - m) > cons.max_drop:
            ruled.append({"option": art.name,
                          "why": f"loses {100 * (ref_map - m):.2f} mAP50-95 points against onnx-fp32 (allowed {cons.max_drop:g})"})  # fmt: skip
            continue
        if art.precision != "fp32" and m is None and art.metrics.get("fidelity") is None:
            missing.append(
                f"accuracy of {art.name}: cvdeploy val {ref} --artifact {art.name} --data DATA --write"
            )
        mm = at_size.get(art.name)
        if mm is None:
            missing.append(f"latency of {art.name}: cvdeploy bench {ref} --artifact {art.name} --report bench "
                           "(then advise --bench bench/bench.json), or cvdeploy optimize (it measures every variant)")  # fmt: skip
            continue
        ok.append((mm, art))
    if not ok:
        return Decision("artifact", None, "no artifact has a measured latency", ruled, missing), None, None
    ok.sort(key=lambda t: t[0].p50_ms)
    best, art = ok[0]
    within = [t for t in ok if cons.latency_ms is None or (t[0].p95_ms or t[0].p50_ms) <= cons.latency_ms]
    if within:
        best, art = within[0]
    for mm, other in ok:
        if other.name == art.name:
            continue
        ruled.append({"option": other.name,
                      "why": f"p50 {mm.p50_ms:.1f} ms vs {best.p50_ms:.1f} ms ({mm.p50_ms / best.p50_ms:.2f}x slower)"})  # fmt: skip
    acc = _map(art)
    drop = f", mAP50-95 {100 * acc:.1f}" if acc is not None else ""
    parity = f", parity cosine {art.parity.cosine:.6f}" if art.parity else ""
    budget = ""
    if cons.latency_ms is not None:
        figure = best.p95_ms or best.p50_ms
        budget = (f"; {'within' if figure <= cons.latency_ms else 'OVER'} the {cons.latency_ms:g} ms budget "
                  f"({'p95' if best.p95_ms else 'p50'} {figure:.1f} ms)")  # fmt: skip
    ev = (f"{art.name} ({registry.engine(art.runtime).name}, executes {(art.execution or {}).get('precision', art.precision)}): "
          f"p50 {best.p50_ms:.1f} ms per image at {best.imgsz[0]}x{best.imgsz[1]}, batch 1 [{best.source}]{drop}{parity}{budget}")  # fmt: skip
    return Decision("artifact", art.name, ev, ruled, missing), art.name, best


def _where(cons: Constraints, best: Measured | None) -> Decision:
    ruled = []
    if cons.where:
        return Decision("where", cons.where, "as asked (--where)")
    if cons.offline:
        ruled.append({"option": "cloud", "why": "--offline: a cloud endpoint needs the network"})
        return Decision("where", "edge", "runs with no network: on the device that sees the images", ruled)
    if cons.private_data:
        ruled.append({"option": "cloud", "why": "--private-data: images would leave your premises"})
        return Decision(
            "where", "local", "your own servers (docker/kubernetes target): images stay in-house", ruled
        )
    if cons.rps and best and best.throughput_ips:
        capacity = best.throughput_ips * HEADROOM
        if cons.rps > 4 * capacity:
            ruled.append({"option": "local", "why": f"{cons.rps:g} req/s needs {math.ceil(cons.rps / capacity)} replicas "
                          f"of {capacity:.1f} req/s each: managed autoscaling pays off"})  # fmt: skip
            ruled.append({"option": "edge", "why": "one device cannot serve that rate"})
            return Decision(
                "where",
                "cloud",
                f"{cons.rps:g} req/s exceeds four replicas' capacity ({4 * capacity:.0f} req/s)",
                ruled,
            )
    ruled.append(
        {
            "option": "cloud",
            "why": "no constraint needs its scale; a local server is simpler and keeps data in-house",
        }
    )
    return Decision("where", "local", "no rate beyond a few replicas, no offline or edge requirement", ruled)


def _model_size(bundle: Bundle, cons: Constraints, best: Measured | None, ref: str) -> Decision:
    params = (
        (bundle.manifest.artifacts[0].details.get("training") or {}).get("params")
        if bundle.manifest.artifacts
        else None
    )
    size = f"{bundle.name}" + (
        f" ({params / 1e6:.1f} M parameters)" if isinstance(params, int | float) else ""
    )
    if best is None:
        return Decision(
            "model size", size, "no latency measured", missing=[f"cvdeploy bench {ref} --report bench"]
        )
    if cons.latency_ms is None:
        return Decision(
            "model size", size, f"no latency budget given; fastest artifact p50 {best.p50_ms:.1f} ms"
        )
    figure = best.p95_ms or best.p50_ms
    if figure > cons.latency_ms:
        return Decision("model size", "smaller",
                        f"the fastest artifact needs {figure:.1f} ms > {cons.latency_ms:g} ms: a smaller model or a smaller "
                        "input size is needed", [{"option": size, "why": "over the latency budget"}])  # fmt: skip
    if figure < cons.latency_ms / 3:
        return Decision("model size", size,
                        f"{figure:.1f} ms uses {100 * figure / cons.latency_ms:.0f}% of the budget: a larger model (zoo:s, a YOLO 's') "
                        "would fit if it is more accurate — bench it to know")  # fmt: skip
    return Decision("model size", size, f"{figure:.1f} ms fits the {cons.latency_ms:g} ms budget")


def _input_size(
    bundle: Bundle, cons: Constraints, meas: list[Measured], chosen: str | None, ref: str
) -> Decision:
    c = bundle.contract.input
    size = f"{c.height}x{c.width}"
    sizes = sorted({m.imgsz for m in meas if m.artifact == chosen and m.batch == 1})
    if len(sizes) <= 1:
        return Decision("input size", size, "the contract's size, where accuracy was measured; no other size benchmarked",
                        missing=[f"cvdeploy bench {ref} --artifact {chosen or 'ARTIFACT'} --imgsz 320 --imgsz 480 --imgsz {c.height} --report bench"])  # fmt: skip
    by = {
        s: min(m.p50_ms for m in meas if m.artifact == chosen and m.imgsz == s and m.batch == 1)
        for s in sizes
    }
    ruled = []
    pick = (c.height, c.width)
    if cons.latency_ms is not None and by.get(pick, 0) > cons.latency_ms:
        fits = [s for s in sizes if by[s] <= cons.latency_ms]
        if fits:
            pick = max(fits)
    for s in sizes:
        if s != pick:
            why = (f"p50 {by[s]:.1f} ms; accuracy at this size not measured (cvdeploy val --imgsz {s[0]})"
                   if s < pick else f"p50 {by[s]:.1f} ms, slower")  # fmt: skip
            ruled.append({"option": f"{s[0]}x{s[1]}", "why": why})
    return Decision(
        "input size",
        f"{pick[0]}x{pick[1]}",
        f"p50 {by.get(pick, float('nan')):.1f} ms at {pick[0]}x{pick[1]}",
        ruled,
    )


def _batch(
    bundle: Bundle, cons: Constraints, meas: list[Measured], chosen: str | None, ref: str
) -> tuple[Decision, float | None]:
    c = bundle.contract.input
    rows = [m for m in meas if m.artifact == chosen and m.imgsz == (c.height, c.width) and m.throughput_ips]
    single = min((m for m in rows if m.batch == 1), key=lambda m: m.p50_ms, default=None)
    batches = sorted({m.batch for m in rows})
    if len(batches) <= 1:
        top = max(rows, key=lambda m: m.throughput_ips or 0, default=None)
        cap = top.throughput_ips if top else None
        ev = "no throughput measured"
        if top is not None and single is not None:
            ev = f"{single.throughput_ips:.1f} images/s one request at a time"
            if top is not single and top.concurrency > 1:
                ev += f", {top.throughput_ips:.1f} images/s with {top.concurrency} in flight (used for replicas)"
            ev += f" [{top.source}]"
        return Decision("batch", "1", ev,
                        missing=[f"cvdeploy bench {ref} --artifact {chosen or 'ARTIFACT'} --batch 1,4,8 --report bench"]), cap  # fmt: skip
    best = {b: max((m for m in rows if m.batch == b), key=lambda m: m.throughput_ips or 0) for b in batches}
    ok = [
        b for b in batches if cons.latency_ms is None or (best[b].p95_ms or best[b].p50_ms) <= cons.latency_ms
    ]
    # a larger batch only where it measurably pays: the server's own threshold (serve.autobatch), so a
    # few per cent of noise between two bench rows never buys a tripled time per call
    from cvdeploy.serve.autobatch import MIN_GAIN

    base = best[1].throughput_ips if 1 in best and best[1].throughput_ips else None
    worth = [b for b in ok if b == 1 or base is None or (best[b].throughput_ips or 0) >= MIN_GAIN * base]
    pick = max(worth or [1], key=lambda b: best[b].throughput_ips or 0)
    ruled = []
    for b in batches:
        if b == pick:
            continue
        m = best[b]
        why = f"{m.throughput_ips:.1f} images/s, p50 {m.p50_ms:.1f} ms per call"
        if b not in ok:
            why += f" (over the {cons.latency_ms:g} ms budget)"
        elif b not in worth and base is not None:
            why += f" ({(m.throughput_ips or 0) / base:.2f}x batch 1: under the {MIN_GAIN:g}x that batching needs)"
        ruled.append({"option": str(b), "why": why})
    m = best[pick]
    return Decision(
        "batch",
        str(pick),
        f"{m.throughput_ips:.1f} images/s, p50 {m.p50_ms:.1f} ms per call [{m.source}]",
        ruled,
    ), m.throughput_ips


def _replicas(ref: str, cons: Constraints, per_replica: float | None, chosen: str | None) -> Decision:
    if cons.rps is None:
        return Decision("replicas", "1", "no request rate given (--rps)")
    if not per_replica:
        return Decision("replicas", None, "no throughput measured",
                        missing=[f"cvdeploy bench {ref} --artifact {chosen or 'ARTIFACT'} --concurrency 1,4 --report bench"])  # fmt: skip
    n = max(1, math.ceil(cons.rps / (per_replica * HEADROOM)))
    return Decision("replicas", str(n),
                    f"{cons.rps:g} req/s ÷ ({per_replica:.1f} images/s measured per replica × {HEADROOM:.0%} headroom) "
                    f"= {cons.rps / (per_replica * HEADROOM):.2f} → {n}")  # fmt: skip


def _profile(bundle: Bundle) -> Decision | None:
    ref = bundle.manifest.reference_profile
    if not ref or not (bundle.path / ref).is_file():
        return Decision("images seen", None, "no reference profile in the bundle",
                        missing=["a profile.json (the shipped zoo bundles have one; exports will write one)"])  # fmt: skip
    try:
        prof = json.loads((bundle.path / ref).read_text(encoding="utf-8"))
        w, h = prof["input"]["width"]["mean"], prof["input"]["height"]["mean"]
    except (KeyError, TypeError, ValueError):
        return None
    c = bundle.contract.input
    note = ("already at the model's input size" if (round(w), round(h)) == (c.width, c.height)
            else f"the model resizes them to {c.width}x{c.height}")  # fmt: skip
    return Decision(
        "images seen",
        f"{w:.0f}x{h:.0f}",
        f"mean size of the {prof.get('images', '?')} reference images: {note}",
    )
