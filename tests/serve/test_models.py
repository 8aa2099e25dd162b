"""Several models and versions at once, a raw-format model, and the JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvdeploy.bundle import Bundle
from cvdeploy.errors import ConfigError
from cvdeploy.images import decode_image
from cvdeploy.pipeline import Pipeline
from cvdeploy.results import RawOutput
from cvdeploy.serve.app import create_app
from cvdeploy.serve.logs import JsonFormatter, configure_logging, request_id_var

from .conftest import parse_binary_response, run, serving, v2_binary


def variant(src: Path, dst: Path, **manifest: Any) -> Path:
    """A copy of a bundle with manifest fields changed (name, version, contract); artifacts untouched."""
    shutil.copytree(src, dst)
    b = Bundle.load(dst)
    contract = manifest.pop("contract", None)
    for key, value in manifest.items():
        setattr(b.manifest, key, value)
    if contract:
        b.manifest.contract = b.manifest.contract.model_copy(update=contract)
    b.save()
    return dst


@pytest.fixture
def raw_and_v2(tiny_bundle_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    from cvdeploy.contract import OutputSpec

    raw = variant(tiny_bundle_path, tmp_path / "raw.cvd", name="tinyraw",
                  contract={"task": "raw", "output": OutputSpec(format="raw")})  # fmt: skip
    v2 = variant(tiny_bundle_path, tmp_path / "tiny-v2.cvd", version=2)
    return raw, v2


def test_two_models_and_two_versions_side_by_side(tiny_bundle_path: Path, raw_and_v2: tuple[Path, Path],
                                                  photo_bytes: list[bytes]) -> None:  # fmt: skip
    raw, v2 = raw_and_v2
    app = create_app([v2, tiny_bundle_path, raw])
    x = np.random.default_rng(4).random((1, 3, 320, 320), dtype=np.float32)

    async def body() -> dict[str, Any]:
        async with serving(app) as c:
            out: dict[str, Any] = {"models": (await c.get("/v1/models")).json()["models"]}
            b, h = v2_binary(x, outputs=["output0"])
            out["raw_v2"] = await c.post("/v2/models/tinyraw/infer", content=b, headers=h)
            out["old"] = await c.post("/v2/models/tiny/versions/1/infer", content=b, headers=h)
            files = {"image": ("p.jpg", photo_bytes[0], "image/jpeg")}
            out["raw_image"] = (await c.post("/v1/models/tinyraw/predict", files=files)).json()
            out["raw_detect"] = await c.post("/v1/models/tinyraw/detect", files=files)
            return out

    out = run(body())
    assert [(m["name"], m["serving_version"], m["versions"], m["task"]) for m in out["models"]] == [
        ("tiny", "2", ["1", "2"], "detect"),  # the highest version serves
        ("tinyraw", "1", ["1"], "raw"),
    ]
    ref = Pipeline.from_bundle(tiny_bundle_path).infer(x)[0]
    for key in ("raw_v2", "old"):
        np.testing.assert_allclose(parse_binary_response(out[key])["output0"], ref, rtol=1e-4, atol=1e-4)
    assert out["raw_image"]["task"] == "raw" and out["raw_image"]["outputs"][0]["shape"] == [10, 2100]
    # a raw model's answer carries the letterbox geometry that maps its outputs back onto the image
    img = decode_image(photo_bytes[0])
    _, (geometry,) = Pipeline.from_bundle(raw).preprocess([img])
    assert out["raw_image"]["geometry"] == RawOutput([], geometry=geometry).geometry_dict()
    assert out["raw_image"]["geometry"]["original"] == [img.shape[0], img.shape[1]]
    assert out["raw_image"]["geometry"]["scale"] == [320 / img.shape[1], 320 / img.shape[0]]
    assert out["raw_detect"].status_code == 400 and "use /v1/models/tinyraw/predict" in out["raw_detect"].text


def test_a_classifier_answers_classify(
    tiny_bundle_path: Path, tmp_path: Path, photo_bytes: list[bytes]
) -> None:
    torch = pytest.importorskip("torch")
    from cvdeploy.bundle import Source
    from cvdeploy.contract import Contract, InputSpec, OutputSpec
    from cvdeploy.export import ExportOptions, export_torch

    # a real classifier (a detector declared as one is refused by the classifier decoder's own checks)
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
    )  # fmt: skip
    contract = Contract(task="classify", classes=list("abcde"), input=InputSpec(height=32, width=32,
                        resize="center_crop"), output=OutputSpec(format="classify", top_k=3))  # fmt: skip
    cls = tmp_path / "cls.cvd"
    export_torch(module, cls, contract, Source(kind="torch", factory="python:x:y"),
                 ExportOptions(parity_count=2, name="tinycls"))  # fmt: skip
    app = create_app([cls])

    async def body() -> list[Any]:
        async with serving(app) as c:
            files = {"image": ("p.jpg", photo_bytes[0], "image/jpeg")}
            return [await c.post("/v1/models/tinycls/classify", files=files),
                    await c.post("/v1/models/tinycls/detect", files=files)]  # fmt: skip

    ok, wrong = run(body())
    top = ok.json()["classification"]
    assert ok.status_code == 200 and len(top) == 3
    assert top[0]["confidence"] >= top[1]["confidence"] >= top[2]["confidence"]
    assert wrong.status_code == 400 and "use /v1/models/tinycls/classify" in wrong.json()["error"]


def test_the_same_version_twice_is_a_config_error(tiny_bundle_path: Path, tmp_path: Path) -> None:
    twin = variant(tiny_bundle_path, tmp_path / "twin.cvd")
    with pytest.raises(ConfigError, match="both version 1 of model 'tiny'"):
        create_app([tiny_bundle_path, twin])


def test_logs_are_json_lines_with_the_request_id(make_app: Callable[..., Any]) -> None:
    stream = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("cvdeploy", "uvicorn.error")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    configure_logging("info", "json", stream)
    try:
        app = make_app()

        async def body() -> None:
            async with serving(app) as c:
                await c.get("/v2/models/nope", headers={"X-Request-ID": "log-1"})

        run(body())
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers, lg.level, lg.propagate = handlers, level, propagate
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [d for d in lines if d["logger"] == "cvdeploy.serve.access"]
    assert access and access[0]["request_id"] == "log-1" and access[0]["status"] == 404
    assert access[0]["path"] == "/v2/models/nope" and access[0]["principal"] == "anonymous"
    events = [d for d in lines if d["logger"] == "cvdeploy.serve.events"]
    assert events[0]["action"] == "load" and events[0]["outcome"] == "success"


def test_json_formatter_takes_the_request_id_from_the_context() -> None:
    token = request_id_var.set("ctx-9")
    try:
        record = logging.LogRecord("cvdeploy.serve", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
        doc = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert doc["msg"] == "hello you" and doc["request_id"] == "ctx-9" and doc["level"] == "warning"
