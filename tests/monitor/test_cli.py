"""``cvdeploy monitor report|grafana``, the serve flags, and a reference profile on every export / optimize -o."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cvdeploy.cli.main import run as cli

from .conftest import jpeg, scenes


def _cli(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(list(args))
    return code, buf.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["monitor", "report", "--db", "{db}"], "-o report.html"),
        (["monitor", "report", "--db", "{db}", "--since", "soon", "--json"], "--since"),
        (["monitor", "report", "--db", "{missing}", "--json"], "no such database file"),
        (["monitor", "report", "--db", "{db}", "--model", "ghost", "--json"], "no model 'ghost'"),
        (["monitor", "report", "--db", "mysql://x/y", "--json"], "unsupported database URL"),
        (["serve", "zoo:n", "--check", "--monitor-sample", "2"], "--monitor-sample"),
        (["serve", "zoo:n", "--check", "--monitor-retention", "forever"], "--monitor-retention"),
        (["serve", "zoo:n", "--check", "--db", "{tmp}"], "is a folder"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from cvdeploy.monitor.store import MonitorStore

    db = tmp_path / "m.db"
    MonitorStore.open(str(db)).close()
    filled = [a.format(db=db, missing=tmp_path / "none.db", tmp=tmp_path) for a in args]
    code, _ = _cli(*filled)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_serve_check_opens_the_monitoring_database(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    code, out = _cli("serve", "zoo:n", "--check", "--db", str(db), "--monitor-sample", "0.2", "--redact")
    assert code == 0 and "zoo-n" in out
    from cvdeploy.monitor.store import MonitorStore

    assert db.is_file()
    store = MonitorStore.open(str(db))
    try:  # the tables exist; --check serves nothing, so nothing is recorded
        assert store.counts() == (0, 0)
    finally:
        store.close()


def test_an_empty_database_reports_no_traffic(tmp_path: Path) -> None:
    from cvdeploy.monitor.store import MonitorStore

    MonitorStore.open(str(tmp_path / "m.db")).close()
    code, out = _cli(
        "monitor", "report", "--db", str(tmp_path / "m.db"), "--json", "-o", str(tmp_path / "r.html")
    )
    assert code == 0 and json.loads(out)["models"] == [] and (tmp_path / "r.html").is_file()


def test_grafana_dashboard_and_alert_rules_use_only_exported_series(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    code, _ = _cli("monitor", "grafana", "-o", str(tmp_path / "g"))
    assert code == 0
    dash = json.loads((tmp_path / "g" / "cvdeploy-dashboard.json").read_text())
    rules = yaml.safe_load((tmp_path / "g" / "cvdeploy-alerts.yml").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    alerts = {r["alert"]: r for r in rules["groups"][0]["rules"]}
    assert {"CvdeployDrift", "CvdeployHighLatency", "CvdeployHighErrorRate"} <= set(alerts)
    assert all(r["expr"] and r["for"] and r["labels"]["severity"] and r["annotations"]["summary"]
               for r in alerts.values())  # fmt: skip
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"]) and dash["__inputs"]

    # every series named is one a monitored server exports, once it has served a request
    from cvdeploy.monitor.monitor import Monitor
    from cvdeploy.serve.app import create_app
    from serve.conftest import run, serving

    monitor = Monitor.open(None)
    app = create_app(["zoo:n"], monitor=monitor)

    async def scrape() -> str:
        async with serving(app) as c:
            from cvdeploy.zoo.dataset import generate_image

            img = jpeg(generate_image(5, 0)[0])  # shapes zoo:n detects: every output series exists
            assert (
                await c.post("/v1/models/zoo-n/detect", content=img, headers={"content-type": "image/jpeg"})
            ).status_code == 200
            await c.post("/v1/models/zoo-n/detect", content=b"x", headers={"content-type": "image/jpeg"})
            monitor.flush()
            monitor.refresh()
            monitor.gauges.dropped.labels("queue_full").inc(0)  # type: ignore[union-attr]
            return (await c.get("/metrics")).text

    text = run(scrape())
    exported = {m.group(1) for m in re.finditer(r"^([a-z_:]+)(?:\{| )", text, re.M)}
    named = {
        n for e in exprs + [r["expr"] for r in alerts.values()] for n in re.findall(r"cvdeploy_[a-z_]+", e)
    }
    assert named and named <= exported, named - exported


@pytest.mark.slow
def test_export_writes_a_profile_from_the_given_images(tiny_bundle_path: Path, tmp_path: Path,
                                                       daylight_photos: list[np.ndarray]) -> None:  # fmt: skip
    onnx = tiny_bundle_path / "onnx-fp32.onnx"
    folder = tmp_path / "reference"
    folder.mkdir()
    for i, img in enumerate(scenes(daylight_photos, 9, 12)):
        cv2.imwrite(str(folder / f"r{i}.png"), img)
    code, _ = _cli("export", str(onnx), "-o", str(tmp_path / "a.cvd"), "--profile-images", str(folder))
    assert code == 0
    doc = json.loads((tmp_path / "a.cvd" / "profile.json").read_text())
    assert doc["images"] == 12 and doc["schema"] == "cvdeploy-profile/1"
    assert "reference_profile: profile.json" in (tmp_path / "a.cvd" / "cvdeploy.yaml").read_text()
    code, _ = _cli("export", str(onnx), "-o", str(tmp_path / "b.cvd"))  # default: the parity photographs
    assert code == 0 and json.loads((tmp_path / "b.cvd" / "profile.json").read_text())["images"] == 8


def test_export_refuses_an_empty_profile_folder_before_any_work(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "empty").mkdir()
    code, _ = _cli(
        "export", "zoo:n", "-o", str(tmp_path / "x.cvd"), "--profile-images", str(tmp_path / "empty")
    )
    assert code == 2 and "--profile-images" in capsys.readouterr().err
    assert not (tmp_path / "x.cvd").exists()


def test_optimize_copy_gets_a_profile_when_the_source_has_none(
    tiny_bundle_path: Path, tmp_path: Path
) -> None:
    from cvdeploy.bundle import Bundle
    from cvdeploy.cli.optimize_cmd import _target

    src = tmp_path / "src.cvd"
    shutil.copytree(tiny_bundle_path, src)
    b = Bundle.load(src)
    (src / "profile.json").unlink()
    b.manifest.reference_profile = None
    b.save()
    out = _target(str(src), tmp_path / "out.cvd")
    assert json.loads((out / "profile.json").read_text())["images"] == 8
    assert Bundle.load(out).manifest.reference_profile == "profile.json"
    kept = _target("zoo:n", tmp_path / "zoo.cvd")  # a source with a profile keeps it
    assert (kept / "profile.json").read_bytes() == (Bundle.load("zoo:n").path / "profile.json").read_bytes()
