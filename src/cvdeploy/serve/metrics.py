"""Prometheus metrics of one server, in their own registry (so several apps can live in one process).

    cvdeploy_requests_total{endpoint, model, code}          every answered request
    cvdeploy_request_failures_total{endpoint, model, code}  those answered 4xx/5xx
    cvdeploy_request_duration_seconds{endpoint}             end-to-end latency in the server
    cvdeploy_stage_duration_seconds{model, stage}           queue, preprocess, inference, postprocess
    cvdeploy_batch_size{model}                              rows per runtime call
    cvdeploy_queue_depth{model}                             requests waiting for a batch
    cvdeploy_model_events_total{model, action, outcome}     load / unload / rollback events
    cvdeploy_dropped_requests_total{model, reason}          timed out or client gone before inference
    cvdeploy_non_finite_outputs_total{model}                answers whose outputs held NaN or ±Inf

Labels are bounded: ``endpoint`` is a route template (else "unmatched"), ``model`` a model this
server knows (else "-": a request or failed load naming an arbitrary model adds no series),
``code`` an HTTP status, ``action``/``outcome``/``stage``/``reason`` come from fixed sets.
"""

from __future__ import annotations

from cvdeploy._deps import require

require("prometheus_client", "server metrics")  # one-line install hint instead of an ImportError

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from cvdeploy.serve.security import Event

STAGES = ("queue", "preprocess", "inference", "postprocess")
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class ServeMetrics:
    """All metrics of one server and the helpers that record them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cvdeploy_requests", "Requests answered", ["endpoint", "model", "code"], registry=r
        )
        self.failures = Counter(
            "cvdeploy_request_failures",
            "Requests answered with 4xx or 5xx",
            ["endpoint", "model", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "cvdeploy_request_duration_seconds", "Time in the server per request", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage = Histogram(
            "cvdeploy_stage_duration_seconds", "Time per request in each stage", ["model", "stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "cvdeploy_batch_size", "Rows per runtime call", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "cvdeploy_queue_depth", "Requests waiting for a batch", ["model"], registry=r
        )
        self.model_events = Counter(
            "cvdeploy_model_events",
            "Model load/unload/rollback events",
            ["model", "action", "outcome"],
            registry=r,
        )
        self.dropped = Counter(
            "cvdeploy_dropped_requests", "Requests dropped before inference", ["model", "reason"], registry=r
        )
        self.non_finite = Counter(
            "cvdeploy_non_finite_outputs", "Answers whose outputs held NaN or Inf", ["model"], registry=r
        )

    def observe_request(self, endpoint: str, model: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, model, str(code)).inc()
        if code >= 400:
            self.failures.labels(endpoint, model, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_stage(self, model: str, stage: str, seconds: float) -> None:
        self.stage.labels(model, stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsEventSink:
    """Counts model events; sits beside the audit/log sinks behind the one ``emit``.

    ``known(name)`` says whether a model name may be a label value; others are counted under "-".
    """

    def __init__(self, metrics: ServeMetrics, known: Callable[[str], bool]) -> None:
        self.metrics = metrics
        self.known = known

    def emit(self, event: Event) -> None:
        model = event.resource.split(":")[1] if event.resource.startswith("model:") else "-"
        if not self.known(model):
            model = "-"
        self.metrics.model_events.labels(model, event.action[:16], event.outcome).inc()
