"""``--target docker``: an image that runs ``cvdeploy serve``, and a compose file with Prometheus and Grafana.

Dockerfile  .dockerignore  requirements.txt  serve.yaml  model/
compose.yaml                       server (read-only root, /tmp tmpfs) + Prometheus + Grafana
monitoring/prometheus.yml          scrapes the server's /metrics
monitoring/grafana/...             datasource + the cvdeploy dashboard, provisioned
"""

from __future__ import annotations

import json
from typing import Any

from cvdeploy.package.base import PORT, Context, Target
from cvdeploy.package.image import write_image
from cvdeploy.package.serveconf import CONFIG_PATH, write_serve_config

PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
GRAFANA_IMAGE = "grafana/grafana:12.1.1"


def server_command(ctx: Context) -> tuple[list[str], list[str]]:
    """``(ENTRYPOINT, CMD)`` of the server image: ``cvdeploy serve`` and its arguments."""
    return ["cvdeploy", "serve"], ctx.serve_args("--config", CONFIG_PATH)


def write_server_image(ctx: Context) -> None:
    conf = write_serve_config(ctx)
    entry, cmd = server_command(ctx)
    write_image(ctx, cmd, entry, extra_files=[(conf, CONFIG_PATH, None)])


def write(ctx: Context) -> None:
    write_server_image(ctx)
    service = ctx.name
    server: dict[str, Any] = {
        "build": ".",
        "image": ctx.image,
        "ports": [f"{PORT}:{PORT}"],
        "read_only": True,
        "tmpfs": ["/tmp"],
        "restart": "unless-stopped",
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
    }
    if ctx.options.model == "mount":
        server["volumes"] = [f"./model:{ctx.model_dir}:ro"]
    compose = {
        "services": {
            service: server,
            "prometheus": {
                "image": PROMETHEUS_IMAGE,
                "volumes": ["./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
                "ports": ["9090:9090"],
                "depends_on": [service],
            },
            "grafana": {
                "image": GRAFANA_IMAGE,
                "volumes": [
                    "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro",
                    "./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro",
                ],
                "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"},
                "ports": ["3000:3000"],
                "depends_on": ["prometheus"],
            },
        }
    }
    ctx.yaml("compose.yaml", [compose])
    ctx.yaml(
        "monitoring/prometheus.yml",
        [{
            "global": {"scrape_interval": "15s"},
            "scrape_configs": [{"job_name": "cvdeploy", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"{service}:{PORT}"]}]}],
        }],
    )  # fmt: skip
    ctx.yaml(
        "monitoring/grafana/provisioning/datasources/prometheus.yml",
        [{"apiVersion": 1, "datasources": [{"name": "Prometheus", "type": "prometheus", "uid": "prometheus",
                                            "access": "proxy", "url": "http://prometheus:9090", "isDefault": True}]}],
    )  # fmt: skip
    ctx.yaml(
        "monitoring/grafana/provisioning/dashboards/cvdeploy.yml",
        [{"apiVersion": 1, "providers": [{"name": "cvdeploy", "type": "file",
                                          "options": {"path": "/var/lib/grafana/dashboards"}}]}],
    )  # fmt: skip
    ctx.text("monitoring/grafana/dashboards/cvdeploy.json", json.dumps(dashboard(ctx.bundle.name), indent=1))
    ctx.result.run = f"cd {ctx.out} && docker compose up --build"


#: The dashboard's panels: title, PromQL (only metrics the server exports), unit.
PANELS = (
    ("Requests per second by endpoint", "sum by (endpoint) (rate(cvdeploy_requests_total[1m]))", "reqps"),
    ("Request latency p50 / p95 / p99",
     "histogram_quantile({q}, sum by (le) (rate(cvdeploy_request_duration_seconds_bucket[5m])))", "s"),
    ("Time per stage (p95)",
     "histogram_quantile(0.95, sum by (le, stage) (rate(cvdeploy_stage_duration_seconds_bucket[5m])))", "s"),
    ("Errors per second (4xx/5xx)", "sum by (code) (rate(cvdeploy_request_failures_total[1m]))", "reqps"),
    ("Queue depth", "sum by (model) (cvdeploy_queue_depth)", "short"),
    ("Rows per runtime call (mean)",
     "sum(rate(cvdeploy_batch_size_sum[5m])) / sum(rate(cvdeploy_batch_size_count[5m]))", "short"),
    ("Dropped requests", "sum by (reason) (rate(cvdeploy_dropped_requests_total[5m]))", "reqps"),
)  # fmt: skip


def dashboard(title: str) -> dict[str, Any]:
    """A Grafana dashboard over the server's Prometheus metrics (request rate, latency, stages, errors)."""
    panels = []
    for i, (name, expr, unit) in enumerate(PANELS):
        exprs = [expr.format(q=q) for q in (0.5, 0.95, 0.99)] if "{q}" in expr else [expr]
        panels.append({
            "id": i + 1, "type": "timeseries", "title": name,
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + k), "expr": e, "datasource": {"type": "prometheus", "uid": "prometheus"}}
                        for k, e in enumerate(exprs)],
        })  # fmt: skip
    return {"title": f"cvdeploy · {title}", "uid": "cvdeploy", "schemaVersion": 39, "time": {"from": "now-1h", "to": "now"},
            "refresh": "10s", "panels": panels}  # fmt: skip


TARGET = Target(
    name="docker",
    summary="Dockerfile, .dockerignore, pinned requirements, compose file with Prometheus and Grafana",
    needs="Docker (or any OCI builder); the bundle's ONNX or OpenVINO artifact",
    write=write,
)
