"""The variants table: every artifact of a bundle with what it costs in accuracy and wins in speed.

Latency is measured with the bench harness (real JPEG images through the one pipeline, warm-up,
percentiles), all artifacts interleaved round by round so that background load hits them alike.
Accuracy comes from the artifacts' recorded metrics: mAP50-95 and its drop against ``onnx-fp32``
with labels, fidelity (mAP50 against FP32) without. The table goes into the manifest (each
artifact's ``metrics["variant"]``), to the terminal, and into an HTML and a JSON report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy import env
from cvdeploy.bundle import Artifact, Bundle, now_iso
from cvdeploy.reports.document import Callout, Document, KeyValues, Paragraph, Table

log = logging.getLogger("cvdeploy")

REFERENCE = "onnx-fp32"
NO_SPEEDUP = 1.05  # below this a variant is "no faster" on this machine


@dataclass
class Variant:
    """One row of the variants table."""

    artifact: str
    runtime: str
    precision: str
    size_mb: float
    p50_ms: float | None = None  # end-to-end (decode → preprocess → model → NMS), batch 1
    model_p50_ms: float | None = None  # the runtime alone
    speedup: float | None = None  # FP32 model p50 / this model p50
    map50_95: float | None = None  # points (0-100)
    top1: float | None = None  # classifiers: top-1 accuracy, points (0-100)
    drop: float | None = None  # points vs onnx-fp32 (mAP50-95; top-1 for classifiers)
    fidelity: float | None = None  # fidelity mAP50 vs FP32, points
    parity_cosine: float | None = None
    box_agreement: float | None = None
    made_by: str = "export"
    executes: str | None = None  # the precision the runtime read back when the artifact was checked
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def artifact_size_mb(bundle: Bundle, art: Artifact) -> float:
    """Size of the model files a runtime loads (kept training weights under ``source/`` not counted)."""
    files = [f for f in art.sha256 if not f.startswith("source/")] or [art.file]
    return sum((bundle.path / f).stat().st_size for f in files if (bundle.path / f).is_file()) / 1e6


def measure_latency(
    bundle: Bundle,
    names: Sequence[str],
    images: Sequence[np.ndarray] | None = None,
    runs: int = 30,
    rounds: int = 3,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """p50 of the whole request and of the model alone (ms, batch 1) per artifact, via the bench harness.

    The artifacts take turns, ``rounds`` times ``runs // rounds`` passes each, so a burst of
    background load affects all of them; each pipeline is loaded once.
    """
    from cvdeploy.bench.harness import ImageFeed, measure
    from cvdeploy.images import sample_images
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions

    feed = ImageFeed.from_arrays(list(images) if images is not None else sample_images(8))
    # batch 1 as predict --batch 1 runs it (OpenVINO compiles a dynamic-batch IR for one image)
    pipes = {n: Pipeline.from_bundle(bundle, n, RuntimeOptions(threads=threads, batch=1)) for n in names}
    totals: dict[str, list[np.ndarray]] = {n: [] for n in names}
    model: dict[str, list[np.ndarray]] = {n: [] for n in names}
    per_round = max(5, runs // rounds)
    for r in range(rounds):
        for n in names:
            m = measure(
                partial(pipes.__getitem__, n), feed, batch=1, runs=per_round, warmup=3 if r == 0 else 1
            )
            totals[n].append(m.samples_ns["total"])
            model[n].append(m.samples_ns["inference"])
    return {
        n: {
            "p50_ms": float(np.median(np.concatenate(totals[n]))) / 1e6,
            "model_p50_ms": float(np.median(np.concatenate(model[n]))) / 1e6,
            "runs": int(sum(a.size for a in totals[n])),
        }
        for n in names
    }


def variants(
    bundle: Bundle,
    latency: dict[str, dict[str, float]] | None = None,
    names: Sequence[str] | None = None,
) -> list[Variant]:
    """Rows for ``names`` (default: every artifact), from recorded metrics and ``latency``."""
    latency = latency or {}
    arts = [bundle.artifact(n) for n in (names or bundle.artifact_names)]
    ref = bundle.artifact(REFERENCE) if REFERENCE in bundle.artifact_names else None
    ref_map = _map(ref) if ref is not None else None
    ref_top1 = _map(ref, "top1") if ref is not None else None
    ref_lat = latency.get(REFERENCE, {}).get("model_p50_ms") or _recorded(ref, "model_p50_ms")
    rows = []
    for art in arts:
        lat = latency.get(art.name) or art.metrics.get("variant", {})
        m, t1 = _map(art), _map(art, "top1")
        raw_fid = art.metrics.get("fidelity")
        fid_doc: dict[str, Any] = raw_fid if isinstance(raw_fid, dict) else {}
        fid = fid_doc.get("mAP50", fid_doc.get("top1_agreement"))
        model_ms = lat.get("model_p50_ms")
        row = Variant(
            artifact=art.name,
            runtime=art.runtime,
            precision=art.precision,
            size_mb=round(artifact_size_mb(bundle, art), 2),
            p50_ms=_r(lat.get("p50_ms")),
            model_p50_ms=_r(model_ms),
            speedup=_r(ref_lat / model_ms) if ref_lat and model_ms else None,
            map50_95=_r(100 * m) if m is not None else None,
            top1=_r(100 * t1) if t1 is not None else None,
            drop=_r(100 * (ref_map - m))
            if m is not None and ref_map is not None
            else _r(100 * (ref_top1 - t1))
            if t1 is not None and ref_top1 is not None
            else None,
            fidelity=_r(100 * float(fid)) if isinstance(fid, int | float) else None,
            parity_cosine=art.parity.cosine if art.parity else None,
            box_agreement=art.parity.box_agreement if art.parity else None,
            made_by=art.made_by,
            executes=str(art.execution.get("precision")) if art.execution else None,
        )
        if art.precision == "fp16" and row.speedup is not None and row.speedup < NO_SPEEDUP:
            row.notes.append(
                f"no speedup from FP16 on this CPU ({row.speedup:.2f}x): without native FP16 arithmetic "
                "ONNX Runtime inserts casts; FP16 pays off on GPUs"
            )
        elif (art.made_by == "optimize" and (art.precision != "fp32" or "pruned" in art.name)
              and row.speedup is not None and row.speedup < NO_SPEEDUP):  # fmt: skip
            row.notes.append(f"no faster than FP32 on this machine ({row.speedup:.2f}x)")
        if art.made_by == "optimize":
            row.notes.extend(art.notes)
            if isinstance(art.details.get("accuracy"), str):
                row.notes.append(f"accuracy {art.details['accuracy']}")
            sparse = art.details.get("sparsity")
            if isinstance(sparse, dict):
                row.notes.append(
                    f"{sparse.get('sparsity', 0):.0%} of weights are zero — {sparse.get('note', '')}"
                )
        within = (
            art.metrics.get("optimize", {}).get("within_budget")
            if isinstance(art.metrics.get("optimize"), dict)
            else None
        )
        if within is False:
            row.notes.append("accuracy drop exceeds the requested budget")
        rows.append(row)
    return rows


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(float(v), nd)


def _map(art: Artifact | None, key: str = "mAP50-95") -> float | None:
    v = art.metrics.get(key) if art is not None else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _recorded(art: Artifact | None, key: str) -> float | None:
    if art is None:
        return None
    v = art.metrics.get("variant", {}).get(key)
    return float(v) if isinstance(v, int | float) else None


def record(bundle: Bundle, rows: Sequence[Variant]) -> None:
    """Write each row into its artifact's ``metrics["variant"]`` and save the manifest."""
    cpu = env.cpu_info()
    for row in rows:
        art = bundle.artifact(row.artifact)
        art.metrics["variant"] = {
            "p50_ms": row.p50_ms,
            "model_p50_ms": row.model_p50_ms,
            "speedup_vs_fp32": row.speedup,
            "size_mb": row.size_mb,
            "measured": now_iso(),
            "cpu": cpu["model"],
            "cores": cpu["cores"],
        }
    bundle.save()


def _fmt(v: float | None, pattern: str = "{:.2f}") -> str:
    return "—" if v is None else pattern.format(v)


def table(rows: Sequence[Variant], highlight: str | None = None) -> Table:
    """The variants table as a report :class:`Table` (for terminal, HTML and Markdown)."""
    columns = ["artifact", "runtime", "precision", "executes", "size MB", "p50 ms", "model p50 ms", "speedup",
               "mAP50-95", "top-1", "Δ", "fidelity", "parity cos", "agreement"]  # fmt: skip
    body = []
    for r in rows:
        body.append([
            r.artifact, r.runtime, r.precision, r.executes or "—", _fmt(r.size_mb, "{:.1f}"), _fmt(r.p50_ms, "{:.1f}"),
            _fmt(r.model_p50_ms, "{:.1f}"), _fmt(r.speedup, "{:.2f}x"), _fmt(r.map50_95, "{:.1f}"),
            _fmt(r.top1, "{:.1f}"), _fmt(None if r.drop is None else 0.0 - r.drop, "{:+.2f}"),
            _fmt(r.fidelity, "{:.1f}"), _fmt(r.parity_cosine, "{:.4f}"), _fmt(r.box_agreement, "{:.2f}"),
        ])  # fmt: skip
    hl = [i for i, r in enumerate(rows) if r.artifact == highlight]
    return Table(columns, body, title="variants", highlight=hl)


def document(bundle: Bundle, rows: Sequence[Variant], extra: dict[str, Any] | None = None) -> Document:
    """The optimize report: variants table, notes, what stayed in float and why, the environment."""
    extra = extra or {}
    doc = Document(f"cvdeploy optimize — {bundle.name}", f"{bundle.path} · {now_iso()}")
    sec = doc.section("Variants")
    sec.add(table(rows, extra.get("recommended")))
    sec.add(Paragraph(
        "speedup: FP32 model p50 / this model p50 (runtime alone, batch 1); p50 ms: a whole request "
        "(JPEG decode, preprocessing, model, NMS). executes: the precision the runtime read back after compiling. "
        "mAP50-95 and top-1 (classifiers) in points, 0-100; Δ: points "
        "lost against onnx-fp32 on labelled data (mAP50-95, or top-1 for classifiers); fidelity: mAP50 against "
        "FP32's own detections (top-1 agreement for classifiers) where there are no labels."
    ))  # fmt: skip
    for r in rows:
        for note in r.notes:
            sec.add(Callout(f"{r.artifact}: {note}", "info"))
    if extra.get("recommended"):
        sec.add(Callout(f"recommended: {extra['recommended']} — {extra.get('why', '')}", "success"))
    for art in bundle.manifest.artifacts:
        search = art.details.get("search") if art.made_by == "optimize" else None
        head = art.details.get("float_head")
        quant = art.details.get("quantization") if art.made_by == "optimize" else None
        if not search and not head and not quant:
            continue
        s = doc.section(f"{art.name}: how it was made, what stayed in float and why")
        if quant:
            s.add(KeyValues([(k.replace("_", " "), str(v)) for k, v in quant.items()], title="quantization"))
        for note in art.notes:
            s.add(Callout(note))
        if head:
            ops = ", ".join(f"{k}×{v}" for k, v in (head.get("ops") or {}).items())
            s.add(Paragraph(
                f"box-decode head ({head.get('nodes')} nodes: {ops}) — found from the graph's structure: "
                "everything after the last convolutions; one INT8 scale for pixel boxes and 0–1 scores "
                "would zero the scores."
            ))  # fmt: skip
        if search:
            layers = search.get("float_layers") or []
            rows_t = [[L["tensor"], L.get("op_type", ""), _fmt(L.get("qdq_sqnr_db"), "{:.1f}"), L.get("why", "")]
                      for L in layers]  # fmt: skip
            if rows_t:
                s.add(Table(["tensor", "op", "SQNR dB", "why"], rows_t, title="layers given back to float"))
            rounds = [[str(k), str(r["float_nodes"]), f"{r['score']:.2f}", f"{r['drop']:.2f}"]
                      for k, r in enumerate(search.get("rounds", []))]  # fmt: skip
            s.add(Table(["round", "float nodes", "score", "drop"], rounds, title="accuracy-aware search"))
            if not search.get("within_budget", True):
                s.add(
                    Callout(
                        "the accuracy budget was not reached; the candidate with the smallest drop was kept"
                    )
                )
    cpu = env.cpu_info()
    doc.section("Environment").add(KeyValues([
        ("CPU", f"{cpu['model']} ({cpu['cores']} logical cores, {env.available_cpus()} usable here)"),
        ("capabilities", env.capabilities_line()),
        ("CPU flags", " ".join(cpu["flags"])),
    ]))  # fmt: skip
    return doc


def write_report(
    bundle: Bundle, rows: Sequence[Variant], out_dir: Path | None = None, extra: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``optimize.html`` and ``optimize.json`` (default: ``<bundle>/reports/``); returns both paths."""
    from cvdeploy.reports.html import write_html
    from cvdeploy.reports.jsonio import write_json

    out = out_dir or bundle.path / "reports"
    out.mkdir(parents=True, exist_ok=True)
    doc = document(bundle, rows, extra)
    html = write_html(doc, out / "optimize.html")
    payload = {"bundle": bundle.name, "created": now_iso(), "environment": env.fingerprint(),
               "variants": [r.to_dict() for r in rows], **(extra or {})}  # fmt: skip
    js = write_json(payload, out / "optimize.json")
    return html, js


def variants_table(
    bundle: Bundle | str | Path,
    measure: bool = True,
    val: str | Path | None = None,
    images: Sequence[np.ndarray] | None = None,
    runs: int = 30,
    report_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
    step: Callable[[str], None] | None = None,
) -> tuple[list[Variant], Document]:
    """Measure (``measure``), score missing mAPs on ``val``, record and report every artifact.

    Returns the rows and the report document (already written as HTML + JSON).
    """
    say = step or (lambda msg: log.info(msg))
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    if val is not None and b.contract.task != "raw":
        from cvdeploy.evaluate.datasets import open_detection_dataset, read_classify_folder
        from cvdeploy.evaluate.validate import validate, write_metrics

        classify = b.contract.task == "classify"
        source = str(read_classify_folder(val, b.contract.classes).source if classify
                     else open_detection_dataset(val, None, "val").source)  # fmt: skip
        key = "top1" if classify else "mAP50-95"
        for art in b.manifest.artifacts:
            if _map(art, key) is None or art.metrics.get("dataset") != source:
                say(f"scoring {art.name} on {val}")
                write_metrics(b, validate(b, val, artifact=art.name, progress=False))
    latency = None
    if measure:
        say(f"measuring latency of {len(b.artifact_names)} artifacts with the bench harness")
        latency = measure_latency(b, b.artifact_names, images, runs=runs)
    rows = variants(b, latency)
    if measure:
        record(b, rows)
    write_report(b, rows, report_dir, extra)
    return rows, document(b, rows, extra)
