"""Cross-cutting behaviour of the app: batching through HTTP, back-pressure, metrics, logs, errors, security."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvdeploy.pipeline import Pipeline
from cvdeploy.serve.errors import Forbidden, Unauthorized
from cvdeploy.serve.security import (
    ACTIONS,
    STATE_CHANGES,
    AnonymousAuthenticator,
    Connection,
    DenyActions,
    Principal,
    RecordingEventSink,
    Security,
)

from .conftest import config, parse_binary_response, run, serving, v2_binary

NAME = "tiny"


def x1(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, 320, 320), dtype=np.float32)


def test_concurrent_requests_are_coalesced_into_batches(
    make_app: Callable[..., Any], tiny_bundle_path: Path
) -> None:
    app = make_app(config(defaults={"batching": "on", "max_batch_size": 6, "max_queue_delay_ms": 2000}))
    xs = [x1(i) for i in range(6)]

    async def body() -> list[Any]:
        async with serving(app) as c:
            reqs = [v2_binary(x, outputs=["output0"]) for x in xs]
            rs = await asyncio.gather(
                *(c.post(f"/v2/models/{NAME}/infer", content=b, headers=h) for b, h in reqs)
            )
            metrics = (await c.get("/metrics")).text
            stats = (await c.get(f"/v2/models/{NAME}/stats")).json()["model_stats"][0]
            return [rs, metrics, stats]

    rs, metrics, stats = run(body())
    assert all(r.status_code == 200 for r in rs)
    ref = Pipeline.from_bundle(tiny_bundle_path)
    for x, r in zip(xs, rs, strict=True):  # each request gets its own rows back
        np.testing.assert_allclose(parse_binary_response(r)["output0"], ref.infer(x)[0], rtol=1e-4, atol=1e-4)
    mv = app.state.service.repository  # stopped now; the stats document was read while serving
    assert mv is not None
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1
    assert stats["execution_count"] < 6
    # the batch-size histogram saw a batch of more than one row
    line = next(
        s for s in metrics.splitlines() if s.startswith('cvdeploy_batch_size_bucket{le="1.0",model="tiny"}')
    )
    count = next(s for s in metrics.splitlines() if s.startswith('cvdeploy_batch_size_count{model="tiny"}'))
    assert float(line.split()[-1]) < float(count.split()[-1])


def test_full_queue_answers_503_with_retry_after(make_app: Callable[..., Any]) -> None:
    app = make_app(config(defaults={"max_batch_size": 1, "queue_size": 1}))
    gate, entered = threading.Event(), threading.Event()
    mv = app.state.service.repository.get(NAME)
    real = mv.batcher.runners[0]

    def held(feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
        entered.set()
        gate.wait(10)
        return real(feeds)

    mv.batcher.runners[0] = held

    async def body() -> None:
        async with serving(app) as c:
            b, h = v2_binary(x1())
            first = asyncio.ensure_future(c.post(f"/v2/models/{NAME}/infer", content=b, headers=h))
            while not entered.is_set():
                await asyncio.sleep(0.005)
            second = asyncio.ensure_future(c.post(f"/v2/models/{NAME}/infer", content=b, headers=h))
            while mv.batcher.depth < 1:
                await asyncio.sleep(0.005)
            third = await c.post(f"/v2/models/{NAME}/infer", content=b, headers=h)
            assert third.status_code == 503 and third.headers["retry-after"] == "1"
            assert "busy" in third.json()["error"]
            gate.set()
            assert (await first).status_code == 200 and (await second).status_code == 200
            metrics = (await c.get("/metrics")).text
            assert 'cvdeploy_dropped_requests_total{model="tiny",reason="queue_full"} 1.0' in metrics

    run(body())


def test_metrics_cover_requests_failures_stages_and_model_events(make_app: Callable[..., Any],
                                                                 photo_bytes: list[bytes]) -> None:  # fmt: skip
    app = make_app()

    async def body() -> str:
        async with serving(app) as c:
            await c.post(
                f"/v1/models/{NAME}/detect", files={"image": ("p.jpg", photo_bytes[0], "image/jpeg")}
            )
            await c.get("/v2/models/nope")
            return (await c.get("/metrics")).text

    text = run(body())
    assert 'cvdeploy_requests_total{code="200",endpoint="/v1/models/{name}/detect",model="tiny"} 1.0' in text
    assert 'cvdeploy_request_failures_total{code="404",endpoint="/v2/models/{name}",model="-"} 1.0' in text
    for stage in ("queue", "preprocess", "inference", "postprocess"):
        assert f'cvdeploy_stage_duration_seconds_count{{model="tiny",stage="{stage}"}} 1.0' in text
    assert 'cvdeploy_queue_depth{model="tiny"} 0.0' in text
    assert 'cvdeploy_model_events_total{action="load",model="tiny",outcome="success"} 1.0' in text
    assert "cvdeploy_request_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("trace-42.a:b", True), ("bad id with spaces", False), ("x" * 200, False), (None, False)],
)
def test_request_id_is_echoed_when_sane(client: Any, sent: str | None, echoed: bool) -> None:
    r = client.get("/v2/health/live", headers={"X-Request-ID": sent} if sent else {})
    rid = r.headers["x-request-id"]
    assert (rid == sent) is echoed and 0 < len(rid) <= 128


def test_internal_errors_are_a_plain_500_logged_with_the_request_id(make_app: Callable[..., Any],
                                                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    app = make_app()
    mv = app.state.service.repository.get(NAME)

    def broken(feeds: Any) -> list[np.ndarray]:
        raise RuntimeError("secret path /srv/keys/model.key exploded")

    mv.batcher.runners[0] = broken

    async def body() -> Any:
        async with serving(app) as c:
            b, h = v2_binary(x1())
            bad = await c.post(
                f"/v2/models/{NAME}/infer", content=b, headers={**h, "X-Request-ID": "req-500"}
            )
            live = await c.get("/v2/health/live")
            return bad, live

    with caplog.at_level(logging.ERROR, logger="cvdeploy"):
        bad, live = run(body())
    assert bad.status_code == 500
    assert bad.json() == {"error": "internal server error", "request_id": "req-500"}
    assert "secret" not in bad.text
    assert live.status_code == 200
    logged = [r for r in caplog.records if r.exc_info and "secret" in str(r.exc_info[1])]
    assert logged, "the cause is logged"
    from cvdeploy.serve.logs import JsonFormatter

    assert any('"request_id": "req-500"' in JsonFormatter().format(r) for r in logged)


class TokenAuthenticator:
    """A stand-in for next round's authentication: a bearer token names the principal."""

    async def authenticate(self, conn: Connection) -> Principal:
        auth = conn.headers.get("authorization", "")
        if auth == "Bearer admin-token":
            return Principal("alice", "token", frozenset({"admin"}))
        if auth:
            raise Unauthorized("invalid token", {"WWW-Authenticate": "Bearer"})
        return Principal.anonymous()


class AdminsChangeModels:
    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        if action in ("load", "unload", "rollback") and "admin" not in principal.roles:
            raise Forbidden(f"{principal.id} may not {action} {resource}")


def test_security_seam_resolves_principals_authorizes_and_reports(make_app: Callable[..., Any]) -> None:
    sink = RecordingEventSink()
    app = make_app(security=Security(TokenAuthenticator(), AdminsChangeModels(), sink))

    async def body() -> None:
        async with serving(app) as c:
            r = await c.get("/v2", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = await c.get("/v2/health/live", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 200, "probes are answered without looking at credentials"
            r = await c.post(f"/v2/repository/models/{NAME}/unload")
            assert r.status_code == 403 and "anonymous may not unload" in r.json()["error"]
            r = await c.post(
                f"/v2/repository/models/{NAME}/load", json={}, headers={"Authorization": "Bearer admin-token"}
            )
            assert r.status_code == 200

    run(body())
    assert [(e.action, e.principal, e.outcome) for e in sink.events] == [
        ("load", "system", "success"),
        ("load", "alice", "success"),
    ]


def test_default_security_is_anonymous_and_reads_and_infers_only() -> None:
    sec = Security()
    p = run(sec.authenticate(Connection({})))
    assert p == Principal.anonymous() and p.is_anonymous
    for action in ACTIONS:
        if action in STATE_CHANGES:
            with pytest.raises(Unauthorized, match="--allow-anonymous-admin"):
                sec.authorize(p, action, "model:x")
            Security(allow_anonymous_admin=True).authorize(p, action, "model:x")
            Security().authorize(Principal("alice", "token"), action, "model:x")
        else:
            sec.authorize(p, action, "model:x")
    with pytest.raises(Forbidden):
        DenyActions(["load"]).authorize(p, "load", "model:x")
    assert isinstance(sec.authenticator, AnonymousAuthenticator)


def test_openvino_without_batching_runs_compiled_for_one_request_and_still_takes_several_rows(
    make_app: Callable[..., Any], tiny_bundle_path: Path
) -> None:
    """Batching off on a dynamic-batch OpenVINO artifact: the runtimes are compiled for batch 1 (faster on
    the CPU), clients still see the dynamic batch, and a request of three rows gets the three rows' results."""
    app = make_app(config(defaults={"batching": "off"}), artifact="openvino-fp32")
    x = np.concatenate([x1(s) for s in (4, 5, 6)])

    async def body() -> Any:
        async with serving(app) as c:
            meta = (await c.get(f"/v2/models/{NAME}")).json()
            mv = app.state.service.repository.get(NAME)
            assert all(p.runtime.inputs[0].static_batch == 1 for p in mv.pipelines)
            assert "one image per call" in mv.pipeline.runtime.execution().settings["batch"]
            b, h = v2_binary(x, outputs=[o["name"] for o in meta["outputs"]])
            return meta, await c.post(f"/v2/models/{NAME}/infer", content=b, headers=h)

    meta, r = run(body())
    assert meta["inputs"][0]["shape"][0] == -1 and meta["outputs"][0]["shape"][0] == -1
    assert r.status_code == 200, r.text
    out = next(iter(parse_binary_response(r).values()))
    ref = Pipeline.from_bundle(tiny_bundle_path, "openvino-fp32").infer(x)[0]
    assert out.shape == ref.shape and out.shape[0] == 3
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_openvino_auto_batching_measures_batch_one_compiled_for_one_image(
    make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batching: auto`` on a dynamic-batch OpenVINO artifact: the measurement's batch-1 side runs on a runtime
    compiled for batch 1 (what serves when batching is off), and that runtime then serves if it is off."""
    import cvdeploy.serve.repository as repo_mod

    calls: list[dict[str, Any]] = []
    real = repo_mod.choose_batching

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(repo_mod, "choose_batching", spy)
    app = make_app(config(defaults={"max_batch_size": 4}), artifact="openvino-fp32")

    async def body() -> Any:
        async with serving(app) as c:
            assert (await c.get(f"/v2/models/{NAME}")).status_code == 200
            return app.state.service.repository.get(NAME)

    mv = run(body())
    assert calls and calls[0]["single_runner"] is not None
    batches = {p.runtime.inputs[0].static_batch for p in mv.pipelines}
    assert batches == ({None} if mv.batching.enabled else {1})


def test_openvino_artifact_serves_the_same_tensors(
    make_app: Callable[..., Any], tiny_bundle_path: Path
) -> None:
    app = make_app(artifact="openvino-fp32")
    x = x1(3)

    async def body() -> Any:
        async with serving(app) as c:
            meta = (await c.get(f"/v2/models/{NAME}")).json()
            assert meta["platform"] == "openvino"
            b, h = v2_binary(x, outputs=[o["name"] for o in meta["outputs"]])
            return await c.post(f"/v2/models/{NAME}/infer", content=b, headers=h)

    r = run(body())
    assert r.status_code == 200
    out = next(iter(parse_binary_response(r).values()))
    ref = Pipeline.from_bundle(tiny_bundle_path, "openvino-fp32").infer(x)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
