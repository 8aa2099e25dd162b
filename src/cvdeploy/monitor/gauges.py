"""The monitor's Prometheus series, on the server's registry (labels bounded: served models, the
profile's features, the contract's classes).

    cvdeploy_drift_score{model,feature}            Cramér's V of the rolling window vs the profile
    cvdeploy_drift_p_value{model,feature}          its Holm-adjusted p-value
    cvdeploy_drift_flag{model,feature}             1 when flagged (p < alpha and V >= min effect)
    cvdeploy_output_mean_confidence{model}         mean confidence of detections (top-1 for classifiers)
    cvdeploy_output_detections_per_image{model}    mean detections per image
    cvdeploy_output_class_share{model,class}       share of detections per class
    cvdeploy_monitor_window_requests{model}        requests in the rolling window
    cvdeploy_monitor_dropped_total{reason}         observations the capture queue could not take
"""

from __future__ import annotations

from typing import Any

from cvdeploy._deps import require
from cvdeploy.monitor.window import WindowSummary

MAX_CLASSES = 200  # class-share series per model; further classes are summed under "other"


class MonitorGauges:
    """Registers the series above on ``registry`` and sets them from window summaries."""

    def __init__(self, registry: Any) -> None:
        prom = require("prometheus_client", "monitoring metrics")
        r = registry
        self.score = prom.Gauge("cvdeploy_drift_score", "Drift effect size (Cramér's V) of the rolling window "
                                "against the reference profile", ["model", "feature"], registry=r)  # fmt: skip
        self.p_value = prom.Gauge("cvdeploy_drift_p_value", "Holm-adjusted p-value of the drift test",
                                  ["model", "feature"], registry=r)  # fmt: skip
        self.flag = prom.Gauge("cvdeploy_drift_flag", "1 when the feature drifted in the rolling window",
                               ["model", "feature"], registry=r)  # fmt: skip
        self.confidence = prom.Gauge("cvdeploy_output_mean_confidence", "Mean output confidence in the "
                                     "rolling window", ["model"], registry=r)  # fmt: skip
        self.detections = prom.Gauge("cvdeploy_output_detections_per_image", "Mean detections per image in the "
                                     "rolling window", ["model"], registry=r)  # fmt: skip
        self.class_share = prom.Gauge("cvdeploy_output_class_share", "Share of outputs per class in the rolling "
                                      "window", ["model", "class"], registry=r)  # fmt: skip
        self.window_requests = prom.Gauge("cvdeploy_monitor_window_requests", "Requests in the rolling window",
                                          ["model"], registry=r)  # fmt: skip
        self.dropped = prom.Counter("cvdeploy_monitor_dropped", "Observations the monitoring queue could not take",
                                    ["reason"], registry=r)  # fmt: skip
        self._classes: dict[str, set[str]] = {}

    def update(self, s: WindowSummary) -> None:
        """Set every series of ``s.model`` from one window summary."""
        m = s.model
        self.window_requests.labels(m).set(s.requests)
        for d in s.drift:
            self.score.labels(m, d.feature).set(d.effect if d.effect is not None else 0.0)
            self.p_value.labels(m, d.feature).set(d.p_value if d.p_value is not None else 1.0)
            self.flag.labels(m, d.feature).set(1.0 if d.flagged else 0.0)
        conf = s.outputs.get("confidence", {})
        dets = s.outputs.get("detections_per_image", {})
        self.confidence.labels(m).set(conf.get("mean", 0.0) if conf.get("n") else 0.0)
        self.detections.labels(m).set(dets.get("mean", 0.0) if dets.get("n") else 0.0)
        shares = dict(list(s.class_share.items())[:MAX_CLASSES])
        rest = 1.0 - sum(shares.values()) if len(s.class_share) > MAX_CLASSES else 0.0
        if rest > 0:
            shares["other"] = rest
        seen = self._classes.setdefault(m, set())
        for c in seen - set(shares):
            self.class_share.labels(m, c).set(0.0)
        for c, v in shares.items():
            self.class_share.labels(m, c).set(v)
        seen.update(shares)
