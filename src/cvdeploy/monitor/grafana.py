"""``cvdeploy monitor grafana``: a Grafana dashboard and Prometheus alert rules for a cvdeploy server.

    cvdeploy-dashboard.json    import into Grafana (asks for the Prometheus data source): traffic,
                               errors, latency p50/p95/p99 by stage, batch size, queue depth, drift
                               score and flags per feature, output confidence, detections, class share
    cvdeploy-alerts.yml        Prometheus rule file (``rule_files:``): drift, latency, error rate,
                               monitoring dropping data

Every expression uses only series the server exports (``/metrics``); the tests check that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

#: (alert, expression, for, severity, summary, description)
ALERTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    (
        "CvdeployDrift",
        "max by (model, feature) (cvdeploy_drift_flag) == 1",
        "15m",
        "warning",
        "{{ $labels.model }}: {{ $labels.feature }} drifted from the reference profile",
        "The rolling window's {{ $labels.feature }} differs from the bundle's profile.json (Holm-adjusted chi-square "
        "p < alpha and Cramér's V >= min effect) for 15 minutes. Open /ui/models/{{ $labels.model }} to compare the "
        "histograms and recent sampled requests.",
    ),
    (
        "CvdeployHighLatency",
        'histogram_quantile(0.95, sum by (le, model) (rate(cvdeploy_stage_duration_seconds_bucket{stage="inference"}[5m]))) > 0.5',
        "10m",
        "warning",
        "{{ $labels.model }}: p95 inference latency above 500 ms",
        "The 95th percentile of the inference stage has stayed above 500 ms for 10 minutes (adjust the threshold to "
        "the model's budget).",
    ),
    (
        "CvdeployHighErrorRate",
        'sum by (model) (rate(cvdeploy_request_failures_total{code=~"5.."}[5m])) / '
        "sum by (model) (rate(cvdeploy_requests_total[5m])) > 0.05",
        "5m",
        "critical",
        "{{ $labels.model }}: more than 5 % of requests fail with 5xx",
        "Server-side failures (overload, timeouts, internal errors) exceed 5 % of requests for 5 minutes.",
    ),
    (
        "CvdeployMonitoringDropping",
        "sum(rate(cvdeploy_monitor_dropped_total[10m])) > 0",
        "10m",
        "warning",
        "cvdeploy monitoring is dropping observations",
        "The capture queue is full or the database write fails: drift and statistics miss traffic. Check the "
        "database (--db) and the server's log.",
    ),
)


def alert_rules() -> dict[str, Any]:
    """The Prometheus rule file as a document."""
    rules = [{"alert": name, "expr": expr, "for": wait, "labels": {"severity": sev},
              "annotations": {"summary": summary, "description": desc}}
             for name, expr, wait, sev, summary, desc in ALERTS]  # fmt: skip
    return {"groups": [{"name": "cvdeploy", "rules": rules}]}


def _panel(pid: int, title: str, targets: list[tuple[str, str]], x: int, y: int, w: int = 12, h: int = 8,
           unit: str = "short", kind: str = "timeseries", **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "id": pid, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
        **extra,
    }  # fmt: skip


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard (schema 39, importable with its ``__inputs``)."""
    sel = '{model=~"$model"}'
    q = lambda p, stage: (  # noqa: E731
        f'histogram_quantile({p}, sum by (le, model) (rate(cvdeploy_stage_duration_seconds_bucket{{model=~"$model",'
        f'stage="{stage}"}}[$__rate_interval])))',
        f"{{{{model}}}} {stage} p{int(p * 100)}",
    )
    panels = [
        _panel(1, "Requests per second", [(f"sum by (model) (rate(cvdeploy_requests_total{sel}[$__rate_interval]))",
                                            "{{model}}")], 0, 0, unit="reqps"),
        _panel(2, "Error rate (4xx and 5xx)", [(
            f"sum by (model) (rate(cvdeploy_request_failures_total{sel}[$__rate_interval])) / "
            f"sum by (model) (rate(cvdeploy_requests_total{sel}[$__rate_interval]))", "{{model}}")], 12, 0,
            unit="percentunit"),
        _panel(3, "Latency by stage (p50, p95, p99)", [q(p, s) for s in ("preprocess", "queue", "inference",
                                                                         "postprocess") for p in (0.5, 0.95, 0.99)],
               0, 8, 24, 9, unit="s"),
        _panel(4, "Batch size (mean rows per runtime call)", [(
            f"sum by (model) (rate(cvdeploy_batch_size_sum{sel}[$__rate_interval])) / "
            f"sum by (model) (rate(cvdeploy_batch_size_count{sel}[$__rate_interval]))", "{{model}}")], 0, 17),
        _panel(5, "Queue depth", [(f"cvdeploy_queue_depth{sel}", "{{model}}")], 12, 17),
        _panel(6, "Drift score (Cramér's V vs the reference profile)", [(f"cvdeploy_drift_score{sel}",
                                                                          "{{model}} {{feature}}")], 0, 25, unit="none"),
        _panel(7, "Drifted features", [(f"cvdeploy_drift_flag{sel} == 1", "{{model}} {{feature}}")], 12, 25,
               kind="table", options={"showHeader": True}),
        _panel(8, "Mean output confidence", [(f"cvdeploy_output_mean_confidence{sel}", "{{model}}")], 0, 33,
               unit="percentunit"),
        _panel(9, "Detections per image", [(f"cvdeploy_output_detections_per_image{sel}", "{{model}}")], 12, 33),
        _panel(10, "Class share", [(f"cvdeploy_output_class_share{sel}", "{{model}} {{class}}")], 0, 41, 24, 8,
               unit="percentunit"),
        _panel(11, "Monitoring: window requests and dropped observations", [
            (f"cvdeploy_monitor_window_requests{sel}", "{{model}} in window"),
            ("sum by (reason) (rate(cvdeploy_monitor_dropped_total[$__rate_interval]))", "dropped {{reason}}")],
            0, 49, 24, 7),
    ]  # fmt: skip
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus",
                      "pluginName": "Prometheus"}],
        "title": "cvdeploy", "uid": "cvdeploy-serve", "tags": ["cvdeploy"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "model", "label": "model", "type": "query", "datasource": DS,
                                 "query": "label_values(cvdeploy_requests_total, model)", "includeAll": True,
                                 "multi": True, "current": {"text": "All", "value": "$__all"}, "refresh": 2}]},
        "panels": panels,
    }  # fmt: skip


def write_grafana(out: str | Path) -> list[Path]:
    """Write the dashboard and the alert rules into the folder ``out`` (created); → the files."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    dash, rules = d / "cvdeploy-dashboard.json", d / "cvdeploy-alerts.yml"
    dash.write_text(json.dumps(dashboard(), indent=2) + "\n", encoding="utf-8")
    rules.write_text(yaml.safe_dump(alert_rules(), sort_keys=False, width=120), encoding="utf-8")
    return [dash, rules]
