"""``cvdeploy monitor report``: a period of monitored traffic as a self-contained HTML page and JSON.

For each model: the period against its reference profile (drift per feature), a drift timeline
(Cramér's V per feature and time slice, flagged slices boxed), traffic and errors, latency
percentiles, output statistics over time, and incidents — runs of slices where a feature drifted,
the error rate reached 5 % (at least 3 errors), or the p95 latency reached twice the period's median
slice p95 (at least 5 requests). The database is all it needs: the server stores each served
version's profile beside the traffic.

The statistics read at most ``per_slice × slices`` requests of a model (the latest); request and
error counts are exact whatever the volume.
"""

from __future__ import annotations

import collections
import datetime as _dt
import statistics
from dataclasses import dataclass, field
from typing import Any

from cvdeploy.monitor.reference import Reference, reference_from_profile
from cvdeploy.monitor.settings import MonitorConfig, format_duration
from cvdeploy.monitor.store import MonitorStore
from cvdeploy.monitor.window import WindowSummary, iso, summarize
from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Table

ERROR_RATE = 0.05
LATENCY_FACTOR = 2.0


@dataclass
class Slice:
    """One time slice of one model."""

    start: float
    end: float
    requests: int
    errors: int
    flagged: list[str]
    effects: dict[str, float | None]
    mean_confidence: float | None
    detections_per_image: float | None
    latency_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"from": iso(self.start), "to": iso(self.end), "requests": self.requests, "errors": self.errors,
                "flagged": self.flagged, "effects": self.effects, "mean_confidence": self.mean_confidence,
                "detections_per_image": self.detections_per_image, "latency_ms": self.latency_ms}  # fmt: skip


@dataclass
class ModelReport:
    model: str
    versions: list[int]
    summary: WindowSummary | None
    slices: list[Slice] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "versions": self.versions,
                "period": self.summary.to_dict() if self.summary else None,
                "timeline": [s.to_dict() for s in self.slices], "incidents": self.incidents}  # fmt: skip


@dataclass
class MonitorReport:
    start: float
    end: float
    database: str
    models: list[ModelReport]
    config: MonitorConfig

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "cvdeploy-monitor-report/1", "from": iso(self.start), "to": iso(self.end),
                "database": self.database, "alpha": self.config.alpha, "min_effect": self.config.min_effect,
                "models": [m.to_dict() for m in self.models]}  # fmt: skip

    def to_document(self) -> Document:
        return document(self)


def _label(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%m-%d %H:%M")


def build_report(
    store: MonitorStore, model: str | None = None, since_s: float = 86400.0, now: float | None = None,
    config: MonitorConfig | None = None, slices: int = 24, per_slice: int = 5000,
) -> MonitorReport:  # fmt: skip
    """The report of the period ``[now - since_s, now)`` for ``model`` (every model when None)."""
    import time

    from cvdeploy.errors import InputError
    from cvdeploy.security.db import redact

    cfg = config or MonitorConfig()
    end = time.time() if now is None else now
    start = end - since_s
    names = [model] if model else store.model_names(start)
    if model and model not in store.model_names(0.0):
        known = ", ".join(store.model_names(0.0)) or "none"
        raise InputError(f"the database has no model {model!r}; it has: {known}")
    records: dict[str, dict[int, Reference | None]] = collections.defaultdict(dict)
    for rec in store.models():
        records[rec.model][rec.version] = reference_from_profile(rec.profile)
    out = []
    width = since_s / slices
    for name in names:
        rows = store.requests(name, start, end, limit=per_slice * slices)
        versions = sorted({r.version for r in rows if r.version is not None})
        latest = versions[-1] if versions else max(records[name], default=None)
        period = summarize(name, latest, [r for r in rows if r.version in (latest, None)],
                           records[name].get(latest) if latest is not None else None, cfg, start, end)  # fmt: skip
        counts = [
            store.status_counts(name, start + i * width, start + (i + 1) * width) for i in range(slices)
        ]
        period.requests = sum(sum(c.values()) for c in counts)
        period.errors = {str(k): v for k, v in _merge(counts).items() if k >= 400}
        rep = ModelReport(name, versions, period)
        for i in range(slices):
            a, b = start + i * width, start + (i + 1) * width
            part = [r for r in rows if a <= r.time < b]
            part = part[-per_slice:]
            vs = collections.Counter(r.version for r in part if r.version is not None)
            v = vs.most_common(1)[0][0] if vs else latest
            s = summarize(name, v, part, records[name].get(v) if v is not None else None, cfg, a, b)
            conf, dets, tot = (
                s.outputs.get("confidence", {}),
                s.outputs.get("detections_per_image", {}),
                s.latency_ms.get("total", {}),
            )
            rep.slices.append(Slice(a, b, sum(counts[i].values()), sum(n for k, n in counts[i].items() if k >= 400),
                                    s.flagged, {d.feature: d.effect for d in s.drift}, conf.get("mean"),
                                    dets.get("mean"), {k: tot[k] for k in ("p50", "p95", "p99") if k in tot}))  # fmt: skip
        rep.incidents = incidents(rep.slices)
        out.append(rep)
    return MonitorReport(start, end, redact(store.db.url), out, cfg)


def _merge(counts: list[dict[int, int]]) -> dict[int, int]:
    total: collections.Counter[int] = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def incidents(slices: list[Slice]) -> list[dict[str, Any]]:
    """Runs of consecutive slices with drift, a high error rate, or a slow p95 (see the module docstring)."""
    p95s = [s.latency_ms["p95"] for s in slices if "p95" in s.latency_ms and s.requests >= 5]
    slow = LATENCY_FACTOR * statistics.median(p95s) if len(p95s) >= 3 else float("inf")
    kinds = {
        "drift": lambda s: bool(s.flagged),
        "errors": lambda s: s.requests > 0 and s.errors >= 3 and s.errors / s.requests >= ERROR_RATE,
        "latency": lambda s: s.requests >= 5 and s.latency_ms.get("p95", 0.0) >= slow,
    }
    found = []
    for kind, hit in kinds.items():
        run: list[Slice] = []
        for s in [*slices, None]:
            if s is not None and hit(s):
                run.append(s)
                continue
            if run:
                found.append(_incident(kind, run))
                run = []
    return sorted(found, key=lambda x: x["from"])


def _incident(kind: str, run: list[Slice]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": kind,
        "from": iso(run[0].start),
        "to": iso(run[-1].end),
        "slices": len(run),
    }
    if kind == "drift":
        feats = sorted({f for s in run for f in s.flagged})
        doc["features"] = feats
        doc["peak_effect"] = max((s.effects.get(f) or 0.0) for s in run for f in feats)
        doc["what"] = f"drift in {', '.join(feats)} (peak Cramér's V {doc['peak_effect']:.2f})"
    elif kind == "errors":
        req, err = sum(s.requests for s in run), sum(s.errors for s in run)
        doc.update(
            {
                "requests": req,
                "errors": err,
                "what": f"{err} errors in {req} requests ({err / max(1, req):.0%})",
            }
        )
    else:
        peak = max(s.latency_ms["p95"] for s in run)
        doc.update({"peak_p95_ms": peak, "what": f"p95 latency up to {peak:.1f} ms"})
    return doc


def document(rep: MonitorReport) -> Document:
    """The report as a :class:`~cvdeploy.reports.document.Document` (HTML and Markdown renderers)."""
    from cvdeploy.monitor import plots

    doc = Document("Monitoring report", f"{iso(rep.start)} to {iso(rep.end)} · {format_duration(rep.end - rep.start)} · "
                   f"database {rep.database}")  # fmt: skip
    head = doc.section("Summary")
    rows = []
    all_incidents = []
    for m in rep.models:
        s = m.summary
        rows.append([m.model, ", ".join(f"v{v}" for v in m.versions) or "–", str(s.requests if s else 0),
                     str(s.error_count if s else 0), ", ".join(s.flagged) if s and s.flagged else "none",
                     str(len(m.incidents))])  # fmt: skip
        all_incidents += [[m.model, i["kind"], i["from"], i["to"], i["what"]] for i in m.incidents]
    head.add(Table(["model", "versions", "requests", "errors", "drift over the period", "incidents"], rows))
    if all_incidents:
        head.add(Callout(f"{len(all_incidents)} incident(s) in the period", "warning"),
                 Table(["model", "kind", "from", "to", "what"], all_incidents, "Incidents", align=["left"] * 5))  # fmt: skip
    else:
        head.add(Callout("No incidents: no drift, error or latency run in the period.", "success"))
    head.add(Paragraph(f"Drift: each feature's values binned on the reference profile's edges, Pearson's chi-square "
                       f"test of homogeneity (sparse bins merged to expected counts of at least 5), p-values "
                       f"Holm-adjusted over the features; flagged when p < {rep.config.alpha:g} and Cramér's V ≥ "
                       f"{rep.config.min_effect:g}."))  # fmt: skip
    for m in rep.models:
        sec = doc.section(f"Model {m.model}")
        s = m.summary
        if s is None or not m.slices or s.requests == 0:
            sec.add(Paragraph("No requests in this period."))
            continue
        labels = [_label(x.start) for x in m.slices]
        sec.add(KeyValues([("versions", ", ".join(f"v{v}" for v in m.versions) or "–"), ("requests", str(s.requests)),
                           ("errors", f"{s.error_count} ({s.error_count / max(1, s.requests):.1%})"),
                           ("images", str(s.images)), ("reference profile", "yes" if s.has_reference else "none")]))  # fmt: skip
        if s.drift:
            sec.add(Table(["feature", "kind", "n", "mean", "reference mean", "chi²", "p (Holm)", "Cramér's V", "drift"],
                          [[d.feature, d.group, str(d.n), _f(d.mean), _f(d.reference_mean), _f(d.statistic),
                            _f(d.p_value), _f(d.effect), "DRIFT" if d.flagged else ""] for d in s.drift],
                          "Drift over the whole period", highlight=[i for i, d in enumerate(s.drift) if d.flagged]))  # fmt: skip
            feats = [d.feature for d in s.drift]
            sec.add(Figure("Drift timeline", plots.drift_timeline(
                feats, labels, [[x.effects.get(f) for x in m.slices] for f in feats],
                [[f in x.flagged for x in m.slices] for f in feats], rep.config.min_effect),
                "Cramér's V of each feature against the reference, per time slice."))  # fmt: skip
        sec.add(Figure("Traffic and errors", plots.lines(labels, {"error rate (%)": [
            100 * x.errors / x.requests if x.requests else None for x in m.slices]}, "error rate (%)",
            bars=[x.requests for x in m.slices], bar_label="requests")))  # fmt: skip
        sec.add(Figure("Latency (total, ms)", plots.lines(labels, {
            p: [x.latency_ms.get(p) for x in m.slices] for p in ("p50", "p95", "p99")}, "ms")))  # fmt: skip
        sec.add(Figure("Outputs", plots.lines(labels, {"mean confidence": [x.mean_confidence for x in m.slices]},
                                              "mean confidence", bars=[x.detections_per_image or 0.0 for x in m.slices],
                                              bar_label="detections per image"),
                       "Mean confidence (line) and detections per image (bars) per time slice."))  # fmt: skip
        if s.latency_ms:
            sec.add(Table(["stage", "p50 ms", "p95 ms", "p99 ms"],
                          [[k, _f(v["p50"]), _f(v["p95"]), _f(v["p99"])] for k, v in s.latency_ms.items()],
                          "Latency by stage over the period"))  # fmt: skip
        ref = s.outputs.get("reference_class_share", {})
        if s.class_share or ref:
            names = list(s.class_share) + [c for c in ref if c not in s.class_share]
            sec.add(Table(["class", "share", "reference"], [[c, _pct(s.class_share.get(c)), _pct(ref.get(c))]
                                                           for c in names[:40]], "Class share"))  # fmt: skip
    return doc


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"
