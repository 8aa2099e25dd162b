"""The model repository over HTTP: load, unload, rollback, failed loads and hot swaps under load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvdeploy.serve.security import RecordingEventSink, Security

from .conftest import admin_config, run, serving

NAME = "tiny"
REPO = f"/v2/repository/models/{NAME}"


def tamper(bundle: Path) -> None:
    """Flip one byte in the middle of the ONNX file, as an attacker or a bad disk would."""
    onnx = bundle / "onnx-fp32.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))


async def detect(c: Any, photo: bytes) -> Any:
    return await c.post(f"/v1/models/{NAME}/detect", files={"image": ("p.jpg", photo, "image/jpeg")})


def test_hot_swap_rollback_and_unload_under_a_stream_of_requests(
    make_app: Callable[..., Any], tiny_bundle_copy: Path, photo_bytes: list[bytes]
) -> None:
    sink = RecordingEventSink()
    app = make_app(
        admin_config(tiny_bundle_copy.parent, defaults={"max_batch_size": 4, "max_queue_delay_ms": 1}),
        security=Security(events=sink),
    )

    async def body() -> list[tuple[int, str]]:
        results: list[tuple[int, str]] = []
        async with serving(app) as c:
            stop = asyncio.Event()

            async def client(i: int) -> None:
                while not stop.is_set():
                    r = await detect(c, photo_bytes[i % len(photo_bytes)])
                    results.append((r.status_code, r.json().get("version", r.text)))

            async def until(pred: Callable[[], bool]) -> None:
                for _ in range(4000):
                    if pred():
                        return
                    await asyncio.sleep(0.005)
                raise AssertionError("stream made no progress")

            def seen(v: str, after: int = 0) -> Callable[[], bool]:
                return lambda: any(ver == v for _, ver in results[after:])

            workers = [asyncio.create_task(client(i)) for i in range(4)]
            await until(lambda: len(results) >= 4)
            r = await c.post(
                f"{REPO}/load", json={"parameters": {"path": str(tiny_bundle_copy), "version": 2}}
            )
            assert r.status_code == 200, r.text
            await until(seen("2", len(results)))
            r = await c.post(f"{REPO}/rollback", json={})
            assert r.status_code == 200 and r.json()["serving"] == "1"
            await until(seen("1", len(results)))
            r = await c.post(f"{REPO}/load", json={"path": str(tiny_bundle_copy), "version": 3})
            assert r.status_code == 200, r.text
            await until(seen("3", len(results)))
            index = (await c.post("/v2/repository/index")).json()
            assert {(x["version"], x["state"]) for x in index} == {
                ("1", "READY"),
                ("2", "UNAVAILABLE"),
                ("3", "READY"),
            }
            r = await c.post(f"{REPO}/unload", json={"parameters": {"version": 1}})
            assert r.status_code == 200 and r.json() == {"name": NAME, "unloaded": ["1"], "serving": "3"}
            mark = len(results)
            await until(lambda: len(results) >= mark + 4)
            stop.set()
            await asyncio.gather(*workers)
        return results

    results = run(body())
    assert [r for r in results if r[0] != 200] == []  # not one request failed
    assert {v for _, v in results} == {"1", "2", "3"}
    state_events = [e for e in sink.events if e.action != "infer"]
    summaries = [e for e in sink.events if e.action == "infer"]
    assert len(summaries) == len(results) and {(e.resource, e.outcome) for e in summaries} == {
        ("model:tiny", "success")
    }, "one inference summary per request"
    changes = [(e.action, e.resource, e.outcome) for e in state_events]
    assert changes == [
        ("load", "model:tiny:1", "success"),  # start-up
        ("load", "model:tiny:2", "success"),
        ("rollback", "model:tiny:1", "success"),
        ("load", "model:tiny:3", "success"),
        ("unload", "model:tiny:1", "success"),
    ]
    assert {e.principal for e in sink.events[1:]} == {"anonymous"}
    assert all(e.request_id for e in sink.events[1:])
    assert {e.details["version"] for e in summaries} == {1, 2, 3}


def test_failed_load_of_a_tampered_bundle_keeps_the_serving_version(
    make_app: Callable[..., Any], tiny_bundle_copy: Path, photo_bytes: list[bytes]
) -> None:
    tamper(tiny_bundle_copy)
    sink = RecordingEventSink()
    app = make_app(admin_config(tiny_bundle_copy.parent), security=Security(events=sink))

    async def body() -> None:
        async with serving(app) as c:
            r = await c.post(
                f"{REPO}/load", json={"parameters": {"path": str(tiny_bundle_copy), "version": 2}}
            )
            assert r.status_code == 400
            assert "does not match its recorded sha256" in r.json()["error"]
            ok = await detect(c, photo_bytes[0])
            assert ok.status_code == 200 and ok.json()["version"] == "1"
            index = {x["version"]: x for x in (await c.post("/v2/repository/index")).json()}
            assert index["1"]["state"] == "READY" and index["1"]["reason"] == "serving"
            assert index["2"]["state"] == "UNAVAILABLE" and "sha256" in index["2"]["reason"]
            meta = (await c.get(f"/v2/models/{NAME}")).json()
            assert meta["versions"] == ["1"]

    run(body())
    changes = [e for e in sink.events if e.action != "infer"]
    assert [(e.action, e.outcome) for e in changes] == [("load", "success"), ("load", "failure")]
    assert "sha256" in changes[1].details["error"]


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        ({"path": "/no/such/bundle.cvd"}, 403, "outside the allowed load roots"),
        ({"parameters": {"path": "{photo_dir}"}}, 403, "outside the allowed load roots"),
        ({"path": "{bundle}/../no-such.cvd"}, 404, "no bundle at"),
        (
            {"path": "{bundle}", "colour": "red"},
            400,
            "unknown parameter 'colour'; known: artifact, bundle, parameters, path, version",
        ),
        ({"path": "{bundle}", "version": "two"}, 400, "version: Input should be a valid integer"),
        ({"path": "{bundle}", "artifact": "onnx-int8"}, 400, "has no artifact 'onnx-int8'"),
    ],
)
def test_bad_load_requests_change_nothing(make_app: Callable[..., Any], tiny_bundle_path: Path, photo_dir: Path,
                                          body: dict[str, Any], status: int, match: str) -> None:  # fmt: skip
    def fill(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v.format(photo_dir=photo_dir, bundle=tiny_bundle_path) if isinstance(v, str) else v

    app = make_app(admin_config())

    async def run_it() -> None:
        async with serving(app) as c:
            r = await c.post(f"{REPO}/load", json=fill(body))
            assert r.status_code == status and match in r.json()["error"]
            assert [x["state"] for x in (await c.post("/v2/repository/index")).json()] == ["READY"]

    run(run_it())


def test_bundle_of_another_name_and_unknown_model(
    make_app: Callable[..., Any], tiny_bundle_path: Path
) -> None:
    app = make_app(admin_config())

    async def body() -> None:
        async with serving(app) as c:
            r = await c.post("/v2/repository/models/other/load", json={"path": str(tiny_bundle_path)})
            assert r.status_code == 400 and "holds model 'tiny', not 'other'" in r.json()["error"]
            r = await c.post("/v2/repository/models/other/load", json={})
            assert r.status_code == 404
            r = await c.post("/v2/repository/models/other/unload", json={})
            assert r.status_code == 404

    run(body())


def test_unload_all_then_reload_and_rollback_limits(make_app: Callable[..., Any]) -> None:
    app = make_app(admin_config())

    async def body() -> None:
        async with serving(app) as c:
            r = await c.post(f"{REPO}/rollback", json={})
            assert r.status_code == 409 and "no earlier version" in r.json()["error"]
            assert (await c.post(f"{REPO}/unload", json={})).status_code == 200
            assert (await c.get("/v2/health/ready")).status_code == 503
            assert (await c.get(f"/v2/models/{NAME}/ready")).status_code == 503
            r = await c.post(
                f"/v1/models/{NAME}/detect", content=b"x", headers={"content-type": "image/jpeg"}
            )
            assert r.status_code == 503 and "no version loaded" in r.json()["error"]
            r = await c.post(f"{REPO}/load", json={})  # no parameters: reload the known bundle
            assert r.status_code == 200 and r.json()["version"] == "1"
            assert (await c.get("/v2/health/ready")).status_code == 200

    run(body())


def test_load_roots_confine_run_time_loads(make_app: Callable[..., Any], tiny_bundle_copy: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    elsewhere = tmp_path_factory.mktemp("allowed")
    app = make_app(admin_config(elsewhere))

    async def body() -> None:
        async with serving(app) as c:
            r = await c.post(f"{REPO}/load", json={"path": str(tiny_bundle_copy), "version": 2})
            assert r.status_code == 403 and "outside the allowed load roots" in r.json()["error"]

    run(body())


def test_an_unloaded_version_is_freed_by_reference_counting_alone(
    make_app: Callable[..., Any], photo_bytes: list[bytes]
) -> None:
    """No reference cycle keeps a model version alive: the foreground server freezes its start-up objects
    out of the garbage collector (serve.process), and an unloaded version must still be freed."""
    import gc
    import weakref

    app = make_app(admin_config())
    service = app.state.service

    async def body() -> dict[str, weakref.ref[Any]]:
        async with serving(app) as c:
            assert (await detect(c, photo_bytes[0])).status_code == 200
            mv = service.repository.get(NAME)
            refs = {"version": weakref.ref(mv), "pipeline": weakref.ref(mv.pipelines[0]),
                    "runtime": weakref.ref(mv.pipelines[0].runtime), "batcher": weakref.ref(mv.batcher)}  # fmt: skip
            del mv
            gc.disable()
            try:
                assert (await c.post(f"{REPO}/unload", json={})).status_code == 200
                await asyncio.sleep(0.1)
                gc_off_alive = [k for k, r in refs.items() if r() is not None]
            finally:
                gc.enable()
            assert gc_off_alive == []
            return refs

    run(body())


def test_the_process_tuning_of_the_foreground_server() -> None:
    import gc
    import platform

    from cvdeploy.serve.process import freeze_startup_objects, keep_large_buffers

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_large_buffers() is glibc  # applied exactly where the C library is glibc
    keep_large_buffers(128 << 10, 128 << 10)  # glibc's initial thresholds again, for the tests that follow
    try:
        assert freeze_startup_objects() > 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_measured_off_choice_serves_from_a_fresh_runtime(
    make_app: Callable[..., Any], photo_bytes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batching measurement runs the largest batch on the first pipeline; when batching is then off
    that pipeline (and its runtime's arena sized for the batch) is replaced and the memory released."""
    import cvdeploy.serve.repository as repo_mod
    from cvdeploy.serve.autobatch import BatchingChoice, Measurement

    measured: list[Any] = []
    released: list[bool] = []

    def off(pipe: Any, setting: str, max_batch_size: int, *args: Any, **kw: Any) -> BatchingChoice:
        measured.append(pipe)
        m = Measurement(max_batch_size, 10.0, 12.0, 0.83, 3)
        return BatchingChoice(setting, False, 1, "measured (test)", m)

    monkeypatch.setattr(repo_mod, "choose_batching", off)
    monkeypatch.setattr(repo_mod, "release_free_memory", lambda: released.append(True) or True)
    app = make_app(admin_config())

    async def body() -> None:
        async with serving(app) as c:
            assert (await detect(c, photo_bytes[0])).status_code == 200
            mv = app.state.service.repository.get(NAME)
            assert measured and all(p is not measured[0] for p in mv.pipelines) and released

    run(body())
