"""The planted drift, end to end: normal traffic, then darker, blurred, larger images through the server.

The JSON of ``GET /v1/models/{name}/monitor``, the Prometheus gauges and the report (library and CLI)
must flag exactly the moved input features in the drifted window, and nothing in the normal one.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("scipy")

import httpx

from cvdeploy.monitor.monitor import Monitor
from cvdeploy.monitor.settings import MonitorConfig
from cvdeploy.profile import image_features
from cvdeploy.serve.app import create_app
from serve.conftest import run, serving

from .conftest import MOVED, STILL, Clock, jpeg, planted, scenes

N = 60


def _gauges(text: str, name: str, model: str) -> dict[str, float]:
    pat = re.compile(rf'^{name}\{{feature="([^"]+)",model="{re.escape(model)}"\}} (\S+)$', re.M)
    pat2 = re.compile(rf'^{name}\{{model="{re.escape(model)}",feature="([^"]+)"\}} (\S+)$', re.M)
    return {f: float(v) for f, v in pat.findall(text) + pat2.findall(text)}


def _flags(doc: dict[str, Any], group: str | None = None) -> set[str]:
    return {d["feature"] for d in doc["drift"] if d["flagged"] and (group is None or d["group"] == group)}


def test_the_planted_drift_moves_the_features_it_should(daylight_photos: list[np.ndarray]) -> None:
    """The expectation itself, checked on the images: the moved features move a lot, the still ones little."""
    normal = [image_features(x) for x in scenes(daylight_photos, 2, N)]
    drifted = [image_features(planted(x)) for x in scenes(daylight_photos, 3, N)]

    def shift(f: str) -> float:  # standardised mean difference
        a, b = np.array([x[f] for x in normal]), np.array([x[f] for x in drifted])
        return abs(b.mean() - a.mean()) / np.sqrt((a.var() + b.var()) / 2)

    assert min(shift(f) for f in MOVED) > 1.0, {f: shift(f) for f in MOVED}
    assert max(shift(f) for f in STILL) < 0.3, {f: shift(f) for f in STILL}


@pytest.mark.slow
def test_drift_is_flagged_exactly_in_json_gauges_and_report(
    drift_bundle: Path, daylight_photos: list[np.ndarray], db_url: str, tmp_path: Path
) -> None:
    clock = Clock(time.time() - 3600)  # an hour ago, so that the CLI's "now" sees both windows
    t0 = clock.now
    monitor = Monitor.open(db_url, MonitorConfig(sample=0.1), clock=clock)
    app = create_app([drift_bundle], monitor=monitor)
    name = "tiny"
    normal = [jpeg(x) for x in scenes(daylight_photos, 2, N)]
    drifted = [jpeg(planted(x)) for x in scenes(daylight_photos, 3, N)]

    async def send(client: httpx.AsyncClient, images: list[bytes]) -> None:
        for data in images:
            r = await client.post(
                f"/v1/models/{name}/detect", content=data, headers={"content-type": "image/jpeg"}
            )
            assert r.status_code == 200, r.text

    async def window(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
        assert monitor.flush(60)
        r = await client.get(f"/v1/models/{name}/monitor", params={"window": "15m"})
        assert r.status_code == 200, r.text
        return r.json(), (await client.get("/metrics")).text

    async def scenario() -> tuple[dict[str, Any], str, dict[str, Any], str]:
        async with serving(app) as client:
            await send(client, normal)
            bad = await client.post(f"/v1/models/{name}/detect", content=b"not an image",
                                    headers={"content-type": "image/jpeg"})  # fmt: skip
            assert bad.status_code == 415
            clock.now += 1
            doc_a, metrics_a = await window(client)
            clock.now = t0 + 1200  # twenty minutes later: the planted drift
            await send(client, drifted)
            clock.now += 1
            doc_b, metrics_b = await window(client)
            return doc_a, metrics_a, doc_b, metrics_b

    doc_a, metrics_a, doc_b, metrics_b = run(scenario())
    for title, doc in (("normal", doc_a), ("planted-drift", doc_b)):
        print(f"\n{title} window (feature, group, mean, reference mean, chi2, p Holm, Cramer's V, flagged):")
        for d in doc["drift"]:
            print("  ", d["feature"], d["group"], d["mean"], d["reference_mean"], d["statistic"], d["p_value"],
                  d["effect"], d["flagged"])  # fmt: skip
    features = {d["feature"] for d in doc_b["drift"]}
    assert features >= MOVED | STILL

    # the normal window: the JSON, the gauges flag nothing
    assert doc_a["requests"] == N + 1 and doc_a["images"] == N
    assert doc_a["errors"] == {
        "total": 1,
        "rate": pytest.approx(1 / (N + 1), rel=1e-3),
        "by_status": {"415": 1},
    }
    assert _flags(doc_a) == set(), doc_a["drift"]
    assert all(d["p_value"] is not None for d in doc_a["drift"] if d["group"] == "input")
    flags_a = _gauges(metrics_a, "cvdeploy_drift_flag", name)
    assert set(flags_a) == features and not any(flags_a.values())

    # the drifted window: exactly the moved input features; the gauges say the same as the JSON
    assert doc_b["requests"] == N and doc_b["errors"]["total"] == 0
    assert _flags(doc_b, "input") == MOVED
    flags_b = _gauges(metrics_b, "cvdeploy_drift_flag", name)
    assert {f for f, v in flags_b.items() if v == 1.0} == _flags(doc_b)
    scores = _gauges(metrics_b, "cvdeploy_drift_score", name)
    assert all(scores[f] >= 0.3 for f in MOVED) and all(scores[f] < 0.3 for f in STILL)
    lat = doc_b["latency_ms"]
    assert {"preprocess", "queue", "inference", "postprocess", "total"} <= set(lat)
    assert 0 < lat["inference"]["p50"] <= lat["inference"]["p95"] <= lat["inference"]["p99"]
    assert doc_b["outputs"]["detections_per_image"]["n"] == N

    # the report: the normal slice flags nothing, the drifted slice what the JSON flagged
    from cvdeploy.monitor.report import build_report
    from cvdeploy.monitor.store import MonitorStore

    store = MonitorStore.open(db_url)
    try:
        rep = build_report(store, name, since_s=2400, now=t0 + 1800, slices=4)
    finally:
        store.close()
    (m,) = rep.models
    by_start = {round(s.start - t0): s for s in m.slices}
    assert by_start[0].requests == N + 1 and by_start[0].flagged == []
    assert by_start[1200].requests == N and set(by_start[1200].flagged) == _flags(doc_b)
    assert [i["kind"] for i in m.incidents] == ["drift"] and set(m.incidents[0]["features"]) == _flags(doc_b)
    from cvdeploy.reports.html import write_html

    html = write_html(rep, tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "Drift timeline" in html and "http://" not in html

    # the same through the command line, against the same database
    from cvdeploy.cli.main import run as cli

    out = tmp_path / "cli.html"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert (
            cli(
                [
                    "monitor",
                    "report",
                    "--db",
                    db_url,
                    "--model",
                    name,
                    "--since",
                    "2h",
                    "-o",
                    str(out),
                    "--json",
                ]
            )
            == 0
        )
    doc = json.loads(buf.getvalue())
    slices = [s for s in doc["models"][0]["timeline"] if s["requests"]]
    assert [sorted(s["flagged"]) for s in slices] == [[], sorted(_flags(doc_b))]
    assert out.is_file() and "Monitoring report" in out.read_text()
