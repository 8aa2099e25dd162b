"""A ``BenchReport`` as a generic :class:`~cvdeploy.reports.Document`: tables, callouts and plots."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cvdeploy.bench.harness import STAGE_LABELS, STAGES
from cvdeploy.errors import MissingDependency
from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Section, Table

if TYPE_CHECKING:
    from cvdeploy.bench.compare import Comparison
    from cvdeploy.bench.profile import OperatorProfile
    from cvdeploy.bench.report import BenchReport

log = logging.getLogger("cvdeploy")

NOISY_CV = 0.10  # a coefficient of variation above this makes a figure worth re-measuring
MAX_PLOTTED = 12


def ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def mb(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def executes(execution: dict[str, Any]) -> str:
    """``fp32 · 2 threads · no spin``: the precision and thread settings the engine read back."""
    if not execution:
        return "–"
    parts = [str(execution.get("precision", "?"))]
    if execution.get("threads"):
        parts.append(f"{execution['threads']} threads")
    spin = execution.get("spinning")
    if spin is not None:
        parts.append("spin" if spin else "no spin")
    hint = (execution.get("settings") or {}).get("PERFORMANCE_HINT")
    if hint:
        parts.append(str(hint).lower())
    return " · ".join(parts)


def latency_table(report: BenchReport) -> Table:
    """The headline: end-to-end latency per request, throughput, cold start, memory and size."""
    metric = report.settings.get("metric", "mAP50-95")
    show_acc = any(metric in r.metrics for r in report.results)
    cols = [
        "configuration",
        "device",
        "executes",
        "steady p50 ms",
        "± noise",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "mean ms",
        "CV %",
        "img/s",
        "cold start ms",
        "peak RSS MB",
        "size MB",
    ]
    if show_acc:
        cols.append(f"{metric} (points)")
    rows, highlight = [], []
    chosen = report.recommendation.choice if report.recommendation else None
    for i, r in enumerate(report.results):
        s = r.latency
        row = [
            r.key,
            r.device_used + (" (fell back!)" if r.fell_back else ""),
            executes(r.execution),
            ms(r.steady.p50_ms),
            f"{r.noise_pct:.1f} %" + (" (busy!)" if r.disturbed else ""),
            ms(s.p50_ms),
            ms(s.p90_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            ms(s.mean_ms),
            f"{100 * s.cv:.1f}",
            f"{r.throughput_ips:.1f}",
            ms(r.cold_start.total_ms),
            mb(r.peak_rss_mb),
            "–" if r.artifact_size_mb is None else f"{r.artifact_size_mb:.2f}",
        ]
        if show_acc:
            v = r.metrics.get(metric)
            row.append(
                f"{100 * v:.1f}" if isinstance(v, int | float) else "–"
            )  # recorded 0-1, shown in points
        rows.append(row)
        if r.key == chosen:
            highlight.append(i)
    align = ["left", "left", "left"] + ["right"] * (len(cols) - 3)
    return Table(
        cols,
        rows,
        title="latency per request (end to end)",
        align=align,  # type: ignore[arg-type]
        highlight=highlight,
    )


def stage_table(report: BenchReport) -> Table:
    """Median time of each pipeline stage, so a slow preprocess is as visible as a slow model."""
    cols = ["configuration"] + [f"{STAGE_LABELS[s]} ms" for s in STAGES] + ["inference share"]
    rows = []
    for r in report.results:
        st = r.stages
        total = st["total"].p50_ms
        rows.append(
            [r.key]
            + [ms(st[s].p50_ms) for s in STAGES]
            + [f"{100 * st['inference'].p50_ms / total:.0f} %" if total > 0 else "–"]
        )
    return Table(cols, rows, title="median time per stage")


def cold_table(report: BenchReport) -> Table:
    cols = [
        "configuration",
        "session ms",
        "first inference ms",
        "cold start ms",
        "warm-up runs",
        "warm-up mean ms",
        "measured runs",
        "steady p50 ms",
    ]
    rows = []
    for r in report.results:
        w = r.warmup_ms
        rows.append(
            [
                r.key,
                ms(r.cold_start.session_ms),
                ms(r.cold_start.first_inference_ms),
                ms(r.cold_start.total_ms),
                str(len(w)),
                ms(sum(w) / len(w)) if w else "–",
                str(r.latency.n),
                ms(r.latency.p50_ms),
            ]
        )
    return Table(cols, rows, title="cold start and warm-up (excluded from the figures above)")


def profile_tables(p: OperatorProfile) -> list[Table]:
    head = f"{p.key} — {p.source}, {p.runs} runs, {ms(p.total_ms)} ms of operator time per inference"
    by_type = Table(
        ["op type", "ms / inference", "share", "nodes", "kernel / provider"],
        [[o.op_type, ms(o.ms), f"{100 * o.share:.1f} %", f"{o.calls:g}", o.detail] for o in p.by_type],
        title=f"top operator types: {head}",
        align=["left", "right", "right", "right", "left"],
    )
    by_node = Table(
        ["node", "op type", "ms / inference", "share"],
        [[o.name, o.op_type, ms(o.ms), f"{100 * o.share:.1f} %"] for o in p.by_node],
        title=f"top nodes: {p.key}",
        align=["left", "left", "right", "right"],
    )
    return [by_type, by_node]


def recommendation_table(report: BenchReport) -> Table | None:
    rec = report.recommendation
    if rec is None:
        return None
    cols = ["configuration", "p50 ms", f"{rec.stat} ms", f"{rec.metric} (points)", "within budget", "above floor",
            "Pareto"]  # fmt: skip
    rows, hl = [], []
    for i, c in enumerate(sorted(rec.candidates, key=lambda c: c.p50_ms)):
        rows.append(
            [
                c.key,
                ms(c.p50_ms),
                ms(c.budget_ms_value),
                "–" if c.accuracy is None else f"{100 * c.accuracy:.1f}",
                "yes" if c.meets_budget else "no",
                "yes" if c.meets_accuracy else "no",
                "yes" if c.on_front else "",
            ]
        )
        if c.key == rec.choice:
            hl.append(i)
    return Table(cols, rows, title="candidates", highlight=hl)


def hardware_items(report: BenchReport) -> list[tuple[str, str]]:
    hw = report.hardware
    feats = hw.get("cpu_features", {})
    items = [
        (
            "CPU",
            f"{hw.get('cpu')} ({hw.get('cores')} logical cores, {hw.get('available_cpus', '?')} usable here)",
        ),
        ("CPU features", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in feats.items()) or "unknown"),
        ("GPU", ", ".join(hw.get("gpu") or []) or "none"),
        ("providers used", ", ".join(hw.get("providers_used") or []) or "–"),
        ("ONNX Runtime providers available", ", ".join(hw.get("onnxruntime_providers") or []) or "–"),
    ]
    libs = report.environment.get("libraries", {})
    items.append(("libraries", ", ".join(f"{k} {v}" for k, v in libs.items())))
    items.append(
        ("python / platform", f"{report.environment.get('python')} / {report.environment.get('platform')}")
    )
    s = report.settings
    runs = s.get("runs")
    dur = s.get("duration_s")
    plan = f"{runs} measured runs" if runs else ""
    if dur:
        plan += (" or " if plan else "") + f"{dur:g} s per configuration"
    items.append(("measurement", f"{plan}, {s.get('warmup')} warm-up runs, clock time.perf_counter_ns"))
    img = report.images
    items.append(
        ("images", f"{img.get('count')} real images ({img.get('source')}), mean {img.get('mean_kb')} KB")
    )
    return items


def build_document(report: BenchReport, plots: bool = True) -> Document:
    doc = Document(
        title=f"cvdeploy bench — {report.bundle}",
        subtitle=(
            f"{len(report.results)} configuration(s) measured on {report.hardware.get('cpu')}, {report.created}"
        ),
    )
    summary = doc.section("Summary")
    for w in report.warnings:
        summary.add(Callout(w, "warning"))
    if report.results:
        summary.add(latency_table(report))
        summary.add(
            Paragraph(
                "Latency is the end-to-end time of one request (image decode → preprocess → inference → "
                "decode/NMS) for a batch of the configuration's size; img/s counts images over the wall "
                "clock "
                "of the measured runs. Warm-up runs and the cold start are excluded and shown below."
            )
        )
        for line in stage_findings(report):
            summary.add(Callout(line, "info"))
        noisy = [r.key for r in report.results if r.latency.cv > NOISY_CV]
        if noisy:
            summary.add(
                Callout(
                    f"noisy measurement (CV > {100 * NOISY_CV:.0f} %) for {', '.join(noisy)}: "
                    "the machine was busy; "
                    "re-run with more --runs on an idle machine before trusting small differences",
                    "warning",
                )
            )
    if report.skipped:
        summary.add(
            Table(
                ["configuration", "why it was skipped"],
                [[s.config.key, s.reason] for s in report.skipped],
                title="skipped",
                align=["left", "left"],
            )
        )
    if report.results:
        stages = doc.section("Per-stage breakdown")
        stages.add(stage_table(report))
        doc.section("Cold start and warm-up").add(cold_table(report))
    if report.recommendation is not None:
        _recommendation_section(doc.section("Recommendation"), report)
    if report.profiles:
        sec = doc.section("Operator profile")
        for p in report.profiles:
            sec.add(*profile_tables(p))
    doc.section("Environment").add(KeyValues(hardware_items(report)))
    if plots and report.results:
        try:
            _add_plots(doc, report)
        except MissingDependency as exc:
            doc.sections[0].add(Callout(f"plots left out: {exc}", "info"))
    return doc


def stage_findings(report: BenchReport) -> list[str]:
    """Plain-language notes where the model is not the slow part."""
    out = []
    for r in report.results:
        st = r.stages
        inf = st["inference"].p50_ms
        other = {s: st[s].p50_ms for s in ("image_decode", "preprocess", "postprocess")}
        slow = max(other, key=lambda k: other[k])
        if sum(other.values()) > inf:
            out.append(
                f"{r.key}: {STAGE_LABELS[slow]} and the other non-model stages take longer "
                f"({ms(sum(other.values()))} ms) than inference ({ms(inf)} ms) — the model is not the "
                "slow part here"
            )
    return out


def _recommendation_section(sec: Section, report: BenchReport) -> None:
    rec = report.recommendation
    assert rec is not None
    if rec.choice:
        sec.add(Callout(f"recommended: {rec.reason}", "success"))
    else:
        sec.add(Callout(rec.reason, "warning"))
    if rec.front:
        sec.add(
            Paragraph(
                "Pareto front (no other configuration is both faster and more accurate): "
                + "; ".join(rec.front)
            )
        )
    else:
        sec.add(
            Paragraph(
                f"No accuracy ({rec.metric}) is recorded for the measured configurations, so there is "
                "no latency-versus-accuracy front; run 'cvdeploy val --write' to record it."
            )
        )
    table = recommendation_table(report)
    if table is not None:
        sec.add(table)


def _add_plots(doc: Document, report: BenchReport) -> None:
    from cvdeploy.reports import plots

    sec = Section("Plots")  # added to the document only once every plot is drawn
    shown = report.results[:MAX_PLOTTED]
    more = f" (first {MAX_PLOTTED} of {len(report.results)})" if len(report.results) > MAX_PLOTTED else ""
    sec.add(
        Figure(
            "Latency distribution" + more,
            plots.distribution(
                {r.key: r.samples_ms["total"] for r in shown}, xlabel="end-to-end latency per request (ms)"
            ),
            "every measured run as a dot; box = quartiles, orange line = median",
        )
    )
    sec.add(
        Figure(
            "Per-stage median time" + more,
            plots.stacked_bars(
                [r.key for r in shown],
                {STAGE_LABELS[s]: [r.stages[s].p50_ms for r in shown] for s in STAGES[:-1]},
                xlabel="median ms per request",
            ),
            "where the time of one request goes",
        )
    )
    rec = report.recommendation
    points = [
        (r.key, r.latency.p50_ms, 100 * float(r.metrics[rec.metric]))
        for r in report.results
        if rec is not None and isinstance(r.metrics.get(rec.metric), int | float)
    ]
    if rec is not None and points:
        sec.add(
            Figure(
                "Latency versus accuracy (Pareto front)",
                plots.pareto(
                    points,
                    rec.front,
                    rec.choice,
                    rec.budget_ms if rec.stat == "p50" else None,
                    None if rec.min_accuracy is None else 100 * rec.min_accuracy,
                    xlabel="median latency (ms)",
                    ylabel=f"{rec.metric} (points)",
                ),
                f"lower-right is worse; the line joins the Pareto front; budget checked on {rec.stat}",
            )
        )
    if len(report.results) > 1:
        rows, cols, grid = heat_grid(report)
        sec.add(
            Figure(
                "Sweep heat-map",
                plots.heatmap(grid, rows, cols, unit="ms / image"),
                "median end-to-end time per image; lighter is faster",
            )
        )
    doc.sections.append(sec)


def heat_grid(report: BenchReport) -> tuple[list[str], list[str], list[list[float | None]]]:
    """Rows: artifacts; columns: the rest of each configuration's key; cells: median ms per image."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for r in report.results:
        row = r.config.artifact
        col = r.key[len(row) :].strip()
        if row not in rows:
            rows.append(row)
        if col not in cols:
            cols.append(col)
        cells[(row, col)] = r.per_image_ms
    return rows, cols, [[cells.get((rw, c)) for c in cols] for rw in rows]


def comparison_table(cmp: Comparison) -> Table:
    cols = ["configuration", "A p50 ms", "B p50 ms", "change", "95 % CI", "p-value", "P(B slower)", "verdict"]
    rows, hl = [], []
    for i, p in enumerate(cmp.pairs):
        verdict = p.verdict + (" — REGRESSION" if p.regression else "")
        rows.append(
            [
                p.label,
                ms(p.p50_a_ms),
                ms(p.p50_b_ms),
                f"{100 * p.change:+.1f} %",
                f"{100 * (p.ci_low - 1):+.1f} … {100 * (p.ci_high - 1):+.1f} %",
                f"{p.p_value:.2g}",
                f"{p.p_superiority:.2f}",
                verdict,
            ]
        )
        if p.regression:
            hl.append(i)
    return Table(
        cols,
        rows,
        title=f"B against A ({cmp.stage} latency; real when p < {cmp.alpha:g}, "
        f"regression when also slower by more than {100 * cmp.threshold:g} %)",
        align=["left", "right", "right", "right", "right", "right", "right", "left"],
        highlight=hl,
    )
