"""The web console (/ui): pages, assets, authorization, redaction, output gauges, and a real headless
browser (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")

import httpx

from cvdeploy.monitor.monitor import Monitor
from cvdeploy.monitor.settings import MonitorConfig
from cvdeploy.serve.app import create_app
from cvdeploy.serve.security import Connection, Principal, Security
from serve.conftest import run, serving

from .conftest import jpeg, planted, scenes

CHROMIUM = "/usr/bin/chromium"


def _traffic(photos: list[np.ndarray], n: int = 24, drift: bool = True) -> list[bytes]:
    return [jpeg(planted(x) if drift else x) for x in scenes(photos, 5, n)]


async def _send(client: httpx.AsyncClient, images: list[bytes], name: str = "tiny", **headers: str) -> None:
    for data in images:
        r = await client.post(f"/v1/models/{name}/detect", content=data,
                              headers={"content-type": "image/jpeg", **headers})  # fmt: skip
        assert r.status_code == 200, r.text


@pytest.mark.slow
def test_console_pages(drift_bundle: Path, daylight_photos: list[np.ndarray], sqlite_url: str) -> None:
    monitor = Monitor.open(sqlite_url, MonitorConfig(sample=0.25))
    app = create_app([drift_bundle], monitor=monitor)

    async def scenario() -> dict[str, Any]:
        async with serving(app) as c:
            await _send(c, _traffic(daylight_photos))
            assert monitor.flush(60)
            out: dict[str, Any] = {}
            for path in ("/ui", "/ui/models/tiny", "/ui/models/tiny?window=1h", "/ui/static/console.css",
                         "/ui/static/console.js", "/ui/static/../app.py", "/ui/static/x.css", "/ui?window=soon",
                         "/ui/models/nope", "/ui?window=30d", "/ui/samples/zz%2F..jpg"):  # fmt: skip
                out[path] = await c.get(path)
            sample = monitor.store.samples("tiny", 1)[0]
            out["thumb"] = await c.get(f"/ui/samples/{sample.id}.jpg")
            return out

    r = run(scenario())
    page = r["/ui"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'data-model="tiny"' in page.text and "drift: " in page.text and "brightness" in page.text
    assert '<script src="/ui/static/console.js"' in page.text and "http" not in page.text.split("<body>")[1]
    model = r["/ui/models/tiny"].text
    assert all(
        f'data-stage="{s}"' in model for s in ("preprocess", "queue", "inference", "postprocess", "total")
    )
    assert model.count('class="flagged"') >= 4 and 'class="ref"' in model and "/ui/samples/" in model
    assert r["/ui/static/console.css"].headers["content-type"].startswith("text/css")
    assert r["/ui/static/console.js"].headers["content-type"].startswith("text/javascript")
    for bad, code in (("/ui/static/../app.py", 404), ("/ui/static/x.css", 404), ("/ui?window=soon", 400),
                      ("/ui/models/nope", 404), ("/ui?window=30d", 400), ("/ui/samples/zz%2F..jpg", 404)):  # fmt: skip
        assert r[bad].status_code == code, (bad, r[bad].text)
        if code != 404 or "static" not in bad:
            assert "error" in r[bad].json()
    thumb = cv2.imdecode(np.frombuffer(r["thumb"].content, np.uint8), cv2.IMREAD_COLOR)
    assert r["thumb"].headers["content-type"] == "image/jpeg" and max(thumb.shape[:2]) == 256


class Tokens:
    """Bearer tokens of the test: 'viewer' and 'nobody' (a principal without a role)."""

    async def authenticate(self, conn: Connection) -> Principal:
        token = conn.headers.get("authorization", "").removeprefix("Bearer ")
        if token == "viewer":
            return Principal("alice", "key", frozenset({"viewer"}))
        if token == "nobody":
            return Principal("bob", "key", frozenset())
        return Principal.anonymous()


@pytest.mark.slow
def test_console_needs_the_viewer_role_and_shows_the_audit_tail(
    drift_bundle: Path, sqlite_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("cryptography")
    from cvdeploy.security.audit import AuditLog
    from cvdeploy.security.authz import RbacAuthorizer
    from cvdeploy.security.serverkeys import ServerKeys

    monitor = Monitor.open(sqlite_url)
    AuditLog(monitor.store.db, ServerKeys(tmp_path / "secrets")).record("load", "model:tiny:1", "carol")
    app = create_app([drift_bundle], security=Security(Tokens(), RbacAuthorizer()), monitor=monitor)

    async def scenario() -> dict[str, httpx.Response]:
        async with serving(app) as c:
            return {
                "anonymous": await c.get("/ui"),
                "nobody": await c.get("/ui", headers={"authorization": "Bearer nobody"}),
                "viewer": await c.get("/ui", headers={"authorization": "Bearer viewer"}),
                "viewer model": await c.get("/ui/models/tiny", headers={"authorization": "Bearer viewer"}),
                "anonymous model": await c.get("/ui/models/tiny"),
                "anonymous json": await c.get("/v1/models/tiny/monitor"),
                "viewer json": await c.get(
                    "/v1/models/tiny/monitor", headers={"authorization": "Bearer viewer"}
                ),
            }

    r = run(scenario())
    assert r["anonymous"].status_code == 401 and r["anonymous model"].status_code == 401
    assert r["anonymous json"].status_code == 401
    assert r["nobody"].status_code == 403
    assert r["viewer"].status_code == 200 and r["viewer model"].status_code == 200
    assert r["viewer json"].status_code == 200
    assert (
        "Audit log" in r["viewer"].text and "carol" in r["viewer"].text and "model:tiny:1" in r["viewer"].text
    )


@pytest.mark.slow
def test_no_audit_section_when_authentication_is_off(drift_bundle: Path, sqlite_url: str) -> None:
    app = create_app([drift_bundle], monitor=Monitor.open(sqlite_url))

    async def scenario() -> httpx.Response:
        async with serving(app) as c:
            return await c.get("/ui")

    assert "Audit log" not in run(scenario()).text


@pytest.mark.slow
@pytest.mark.parametrize("redact", [True, False])
def test_redaction_stores_no_pixels(
    redact: bool, drift_bundle: Path, daylight_photos: list[np.ndarray], tmp_path: Path
) -> None:
    db = tmp_path / f"redact-{redact}.db"
    monitor = Monitor.open(str(db), MonitorConfig(sample=1.0, redact=redact))
    app = create_app([drift_bundle], monitor=monitor)
    images = _traffic(daylight_photos, 4, drift=False)

    async def scenario() -> list[httpx.Response]:
        async with serving(app) as c:
            await _send(c, images)
            assert monitor.flush(60)
            return [await c.get(f"/ui/samples/{s.id}.jpg") for s in monitor.store.samples("tiny", 10)]

    thumbs = run(scenario())
    raw = db.read_bytes() + (Path(str(db) + "-wal").read_bytes() if Path(str(db) + "-wal").exists() else b"")
    stored = [
        s for s in (monitor.store.sample(x.id) for x in monitor.store.samples("tiny", 10)) if s is not None
    ]
    assert len(stored) == 4 and len(thumbs) == 4
    jpeg_in_db = b"/9j/" in raw or b"\xff\xd8\xff" in raw
    if redact:
        assert all(s.redacted and s.thumbnail is None for s in stored)
        assert not jpeg_in_db
        for t in thumbs:  # a blank canvas of the image's shape: one gray, no photograph
            img = cv2.imdecode(np.frombuffer(t.content, np.uint8), cv2.IMREAD_COLOR)
            assert np.median(img) == pytest.approx(200, abs=2) and img.std() < 5
    else:  # the positive control: without --redact the thumbnails are there
        assert all(not s.redacted and s.thumbnail for s in stored) and jpeg_in_db
        assert all(base64.b64decode(s.thumbnail or "")[:3] == b"\xff\xd8\xff" for s in stored)


@pytest.mark.slow
def test_output_gauges_follow_the_window_on_the_shipped_detector() -> None:
    """zoo:n on fresh images of its own synthetic distribution: no drift at all (inputs and outputs),
    and the output gauges equal the JSON's output statistics."""
    from cvdeploy.zoo.dataset import generate_image

    monitor = Monitor.open(None, MonitorConfig(sample=0.0))
    app = create_app(["zoo:n"], monitor=monitor)
    images = [jpeg(generate_image(4242, i)[0]) for i in range(30)]

    async def scenario() -> tuple[dict[str, Any], str]:
        async with serving(app) as c:
            await _send(c, images, "zoo-n")
            assert monitor.flush(60)
            monitor.refresh()
            return (await c.get("/v1/models/zoo-n/monitor")).json(), (await c.get("/metrics")).text

    doc, text = run(scenario())
    assert [d["feature"] for d in doc["drift"] if d["flagged"]] == []
    assert {d["group"] for d in doc["drift"]} == {"input", "output"}
    conf, dets = doc["outputs"]["confidence"]["mean"], doc["outputs"]["detections_per_image"]["mean"]
    assert dets > 1 and 0.25 < conf <= 1

    def gauge(name: str, extra: str = "") -> float:
        m = re.search(rf'^{name}\{{{extra}model="zoo-n"\}} (\S+)$', text, re.M) or re.search(
            rf'^{name}\{{model="zoo-n"{extra}\}} (\S+)$', text, re.M
        )
        assert m, name
        return float(m.group(1))

    assert gauge("cvdeploy_output_mean_confidence") == pytest.approx(conf, rel=1e-3)
    assert gauge("cvdeploy_output_detections_per_image") == pytest.approx(dets, rel=1e-3)
    shares = {c: float(v) for c, v in re.findall(r'^cvdeploy_output_class_share\{class="([^"]+)",model="zoo-n"\} (\S+)$',
                                                 text, re.M)}  # fmt: skip
    assert shares == pytest.approx(doc["outputs"]["class_share"], rel=1e-3) and sum(
        shares.values()
    ) == pytest.approx(1, abs=1e-3)
    assert gauge("cvdeploy_monitor_window_requests") == 30


# ---- a real browser ---------------------------------------------------------------------------------


def _browser_or_skip() -> Any:
    """Playwright's sync API with Debian's Chromium, or a skip saying why (a failure under
    CVDEPLOY_REQUIRE_BROWSER=1, as in CI)."""
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why, sync_playwright = "playwright is not installed (pip install playwright)", None
    if why is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        why = "Chromium is not installed (apt-get install chromium)"
    if why is not None:
        if os.environ.get("CVDEPLOY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required here (CVDEPLOY_REQUIRE_BROWSER=1) but {why}")
        pytest.skip(why)
    return sync_playwright


@pytest.mark.slow
def test_console_in_a_headless_browser(tmp_path: Path) -> None:
    """zoo:n (a trained detector) gets images of its own kind made darker, blurred and larger."""
    sync_playwright = _browser_or_skip()
    from cvdeploy.serve.server import run_in_background
    from cvdeploy.zoo.dataset import generate_image

    monitor = Monitor.open(str(tmp_path / "cvdeploy.db"), MonitorConfig(sample=0.3))
    handle = run_in_background(["zoo:n"], monitor=monitor)
    shot = tmp_path / "console.png"
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as c:
            for i in range(30):
                data = jpeg(planted(generate_image(777, i)[0]))
                assert (
                    c.post(
                        "/v1/models/zoo-n/detect", content=data, headers={"content-type": "image/jpeg"}
                    ).status_code
                    == 200
                )
            assert c.post("/v1/models/zoo-n/detect", content=b"\xff\xd8\xff\xe0broken",
                          headers={"content-type": "image/jpeg"}).status_code == 400  # fmt: skip
        assert monitor.flush(60)
        requested: list[str] = []
        problems: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
                executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                headless=True, viewport={"width": 1360, "height": 900},
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            try:
                page = browser.new_page()
                page.on("request", lambda req: requested.append(req.url))
                page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.goto(f"{handle.url}/ui", wait_until="networkidle")
                row = page.locator("tr[data-model='zoo-n']")
                assert row.count() == 1
                assert re.fullmatch(r"\d+(\.\d+)?", row.locator("td.latency").first.inner_text().strip())
                badge = row.locator("td.drift .badge").inner_text()
                assert badge.startswith("drift:") and "brightness" in badge and "sharpness" in badge
                assert row.locator("td").nth(7).inner_text().strip() == "1"  # the broken image
                page.click("a.model-link")
                page.wait_for_url(re.compile(r".*/ui/models/zoo-n.*"))
                page.wait_for_load_state("networkidle")
                assert page.locator("h1").inner_text().startswith("zoo-n")
                assert page.locator("table.latency tr[data-stage='inference'] td").nth(1).inner_text() != "–"
                flagged = {t.split()[0] for t in page.locator("table.drift tr.flagged").all_inner_texts()}
                assert {"brightness", "sharpness", "width", "height"} <= flagged
                page.locator("figure.sample").last.scroll_into_view_if_needed()  # thumbnails load lazily
                page.wait_for_function(
                    "() => [...document.querySelectorAll('figure.sample img')]"
                    ".every(i => i.complete && i.naturalWidth > 0)",
                    timeout=20_000,
                )
                assert page.locator("figure.sample img").count() >= 3
                captions = page.locator("figure.sample figcaption").all_inner_texts()
                assert any(int(m) > 0 for t in captions for m in re.findall(r"(\d+) detections", t))
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        handle.stop()
    assert shot.stat().st_size > 10_000
    assert requested and all(u.startswith(handle.url) for u in requested), (
        "the console fetched from elsewhere"
    )
    assert problems == [], (problems, requested)
