"""Monitoring that sees the model, not just the server.

    settings   MonitorConfig (the ``monitor:`` section; --monitor-sample, --monitor-retention, --redact)
    capture    Observation → rows: image features, output statistics, stage I/O of sampled requests
    store      MonitorStore: the monitoring tables in the server's database (SQLite or PostgreSQL)
    writer     BackgroundWriter: bounded queue + thread, so capture never waits for the database
    reference  the bundle's profile.json as histograms
    drift      chi-square test + Cramér's V per feature, Holm-adjusted
    window     summarize(): one window of traffic (the JSON of GET /v1/models/{name}/monitor)
    gauges     cvdeploy_drift_*, cvdeploy_output_* Prometheus series
    monitor    Monitor: the capture hook of the inference service and everything behind it
    report     `cvdeploy monitor report`: a period as self-contained HTML (plots) and JSON
    grafana    `cvdeploy monitor grafana`: dashboard JSON and Prometheus alert rules

Names below are imported on first use (scipy, matplotlib, prometheus-client stay unloaded until needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Monitor", "MonitorConfig", "MonitorStore", "build_report", "parse_duration", "write_grafana"]

if TYPE_CHECKING:
    from cvdeploy.monitor.grafana import write_grafana
    from cvdeploy.monitor.monitor import Monitor
    from cvdeploy.monitor.report import build_report
    from cvdeploy.monitor.settings import MonitorConfig, parse_duration
    from cvdeploy.monitor.store import MonitorStore

_LAZY = {
    "Monitor": "monitor",
    "MonitorConfig": "settings",
    "parse_duration": "settings",
    "MonitorStore": "store",
    "build_report": "report",
    "write_grafana": "grafana",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cvdeploy.monitor.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cvdeploy.monitor' has no attribute {name!r}")
