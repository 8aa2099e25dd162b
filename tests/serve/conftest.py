"""Fixtures for the server tests: apps built on the tiny bundle, driven in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
from fastapi import FastAPI

from cvdeploy.serve.app import create_app
from cvdeploy.serve.config import ServeConfig, parse_config

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async test body (no pytest-asyncio needed)."""
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (batchers) and give an in-process async client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=60) as client:
            yield client


def config(**sections: Any) -> ServeConfig:
    """A config from keyword sections, e.g. ``config(defaults={"max_batch_size": 4})``."""
    return parse_config(sections)


def admin_config(*roots: Path, **sections: Any) -> ServeConfig:
    """A config that lets anonymous callers change models (as ``--allow-anonymous-admin``) and load
    bundles from ``roots`` (plus the folders of the bundles served at start, when no root is given)."""
    sections.setdefault("security", {})["allow_anonymous_admin"] = True
    if roots:
        sections.setdefault("repository", {})["load_roots"] = [str(r) for r in roots]
    return parse_config(sections)


def v2_binary(
    x: np.ndarray, name: str = "images", outputs: list[str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A v2 binary-tensor request body and its header for one input."""
    head: dict[str, Any] = {
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
    }  # fmt: skip
    if outputs is not None:
        head["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    raw = json.dumps(head).encode()
    return raw + x.tobytes(), {"Inference-Header-Content-Length": str(len(raw))}


def v2_json(x: np.ndarray, name: str = "images", datatype: str = "FP32") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]
    }


def parse_binary_response(resp: httpx.Response) -> dict[str, np.ndarray]:
    """Decode a v2 answer with binary outputs into arrays."""
    n = int(resp.headers["inference-header-content-length"])
    head = json.loads(resp.content[:n])
    out, offset = {}, n
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(resp.content[offset : offset + size], np.float32).reshape(o["shape"])
        offset += size
    return out


@pytest.fixture(scope="session")
def photo_bytes(photo_dir: Path) -> list[bytes]:
    """The real photographs as JPEG bytes."""
    return [p.read_bytes() for p in sorted(photo_dir.glob("*.jpg"))]


@pytest.fixture(scope="session")
def png_bytes(photos: list[np.ndarray]) -> bytes:
    ok, buf = cv2.imencode(".png", photos[0][:200, :300])
    assert ok
    return buf.tobytes()


@pytest.fixture
def make_app(tiny_bundle_path: Path) -> Callable[..., FastAPI]:
    """Build an app on the tiny bundle (or given bundles) with a given config."""

    def make(cfg: ServeConfig | None = None, bundles: list[Any] | None = None, **kw: Any) -> FastAPI:
        return create_app(bundles or [tiny_bundle_path], cfg, **kw)

    return make


@pytest.fixture(scope="module")
def client(tiny_bundle_path: Path) -> Iterator[Any]:
    """A started app on the tiny bundle, shared by a module's tests that do not change server state."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    app = create_app([tiny_bundle_path], config(limits={"max_body_bytes": 4_000_000}))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def task_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small bundles of the other box tasks: segment, pose and obb, each a planted (untrained) YOLOv8n
    of that task exported by Ultralytics itself at 128 px (dynamic shapes) and imported by cvdeploy;
    built once per session, about 2 s a task (see tests/core/ultralytics_farm.py for the planting)."""
    pytest.importorskip("ultralytics")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from ultralytics import YOLO
    from ultralytics_farm import SUFFIX, _cwd, plant

    from cvdeploy.export import ExportOptions, export

    root = tmp_path_factory.mktemp("task-bundles")
    out: dict[str, Path] = {}
    for task in ("segment", "pose", "obb"):
        name = f"yolov8n{SUFFIX[task]}"
        folder = root / name
        folder.mkdir()
        with _cwd(folder):
            plant(f"{name}.yaml").save(str(folder / f"{name}.pt"))
            onnx_file = YOLO(str(folder / f"{name}.pt")).export(
                format="onnx", imgsz=128, dynamic=True, verbose=False
            )
        out[task] = root / f"{task}.cvd"
        export(str(onnx_file), out[task], ExportOptions(parity_count=2))
    return out
