"""Cloud contracts: platform detection, SageMaker /ping + /invocations, Vertex AI predict routes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvdeploy.errors import ConfigError
from cvdeploy.pipeline import Pipeline
from cvdeploy.serve.config import ServerConfig, detect_platform, resolve_platform

from .conftest import run, serving, v2_json

VERTEX_ENV = {"AIP_HTTP_PORT": "9001", "AIP_PREDICT_ROUTE": "/v1/endpoints/e1/deployedModels/m1:predict",
              "AIP_HEALTH_ROUTE": "/health/m1"}  # fmt: skip


@pytest.mark.parametrize(
    ("env", "flag", "host", "port", "expected"),
    [
        ({}, None, None, None, ("local", "127.0.0.1", 8000)),
        ({"SM_MODEL_DIR": "/opt/ml/model"}, None, None, None, ("sagemaker", "0.0.0.0", 8080)),
        ({"SAGEMAKER_BIND_TO_PORT": "9090"}, None, None, None, ("sagemaker", "0.0.0.0", 9090)),
        (VERTEX_ENV, None, None, None, ("vertex", "0.0.0.0", 9001)),
        ({}, "sagemaker", None, None, ("sagemaker", "0.0.0.0", 8080)),
        ({"SM_HOSTS": "x"}, "local", None, None, ("local", "127.0.0.1", 8000)),
        ({"SM_HOSTS": "x"}, None, "127.0.0.1", 7000, ("sagemaker", "127.0.0.1", 7000)),
    ],
)
def test_platform_resolution(env: dict[str, str], flag: str | None, host: str | None, port: int | None,
                             expected: tuple[str, str, int]) -> None:  # fmt: skip
    p = resolve_platform(flag, ServerConfig(), host, port, env)
    assert (p.kind, p.host, p.port) == expected
    assert detect_platform(env) == (expected[0] if flag is None else detect_platform(env))


def test_vertex_routes_come_from_the_environment() -> None:
    p = resolve_platform(None, ServerConfig(), env=VERTEX_ENV)
    assert (p.predict_route, p.health_route) == (VERTEX_ENV["AIP_PREDICT_ROUTE"], "/health/m1")
    assert resolve_platform("vertex", ServerConfig(), env={}).predict_route == "/predict"


@pytest.mark.parametrize(
    ("flag", "env", "match"),
    [("aws", {}, "unknown platform"), (None, {"AIP_HTTP_PORT": "http"}, "not a port number"),
     (None, {"AIP_PREDICT_ROUTE": "predict"}, "must be a path")],
)  # fmt: skip
def test_bad_platform_settings_are_config_errors(flag: str | None, env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_platform(flag, ServerConfig(), env=env)


def test_sagemaker_ping_and_invocations(make_app: Callable[..., Any], photo_bytes: list[bytes],
                                        tiny_bundle_path: Path) -> None:  # fmt: skip
    app = make_app(platform=resolve_platform("sagemaker", ServerConfig(), env={}))
    x = np.round(np.random.default_rng(1).random((1, 3, 320, 320), dtype=np.float32) * 4) / 4

    async def body() -> list[Any]:
        async with serving(app) as c:
            ping = await c.get("/ping")
            img = await c.post("/invocations?conf=0.0001", content=photo_bytes[0],
                               headers={"content-type": "image/jpeg"})  # fmt: skip
            v2 = await c.post("/invocations", json=v2_json(x))
            bad = await c.post("/invocations", content=b"<xml/>", headers={"content-type": "application/xml"})
            return [ping, img, v2, bad]

    ping, img, v2, bad = run(body())
    assert ping.status_code == 200 and ping.json() == {"status": "healthy"}
    assert img.status_code == 200 and len(img.json()["detections"]) > 0
    out = v2.json()["outputs"][0]
    ref = Pipeline.from_bundle(tiny_bundle_path).infer(x)[0]
    np.testing.assert_allclose(
        np.asarray(out["data"], np.float32).reshape(out["shape"]), ref, rtol=1e-4, atol=1e-4
    )
    assert bad.status_code == 415


def test_vertex_predict_with_images_and_tensors(make_app: Callable[..., Any], photo_bytes: list[bytes],
                                                tiny_bundle_path: Path) -> None:  # fmt: skip
    app = make_app(platform=resolve_platform(None, ServerConfig(), env=VERTEX_ENV))
    route = VERTEX_ENV["AIP_PREDICT_ROUTE"]
    x = np.round(np.random.default_rng(2).random((3, 320, 320), dtype=np.float32) * 4) / 4
    b64 = [base64.b64encode(p).decode() for p in photo_bytes[:2]]

    async def body() -> list[Any]:
        async with serving(app) as c:
            health = await c.get("/health/m1")
            images = await c.post(route, json={"instances": [{"b64": b64[0]}, {"image": {"b64": b64[1]}}],
                                               "parameters": {"conf": 0.0001, "max_det": 5}})  # fmt: skip
            tensors = await c.post(route, json={"instances": [x.tolist(), x.tolist()]})
            broken = await c.post(route, json={"instances": [{"b64": "%%%"}]})
            wrong = await c.post(route, json={"instances": [x[0].tolist()]})
            empty = await c.post(route, json={"predictions": []})
            return [health, images, tensors, broken, wrong, empty]

    health, images, tensors, broken, wrong, empty = run(body())
    assert health.status_code == 200
    preds = images.json()["predictions"]
    assert len(preds) == 2 and all(0 < len(p["detections"]) <= 5 for p in preds)
    assert preds[0]["image"]["format"] == "jpeg"
    ref = Pipeline.from_bundle(tiny_bundle_path).infer(x[None])[0][0]
    for p in tensors.json()["predictions"]:
        np.testing.assert_allclose(np.asarray(p["output0"], np.float32), ref, rtol=1e-4, atol=1e-4)
    assert broken.status_code == 400 and "not valid base64" in broken.json()["error"]
    assert wrong.status_code == 400 and "must have shape [3, 320, 320]" in wrong.json()["error"]
    assert empty.status_code == 400 and "instances" in empty.json()["error"]
