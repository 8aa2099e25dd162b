"""Open Inference Protocol v2 in-process: metadata, JSON and binary tensors, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cvdeploy.pipeline import Pipeline

from .conftest import parse_binary_response, v2_binary, v2_json

NAME = "tiny"


@pytest.fixture(scope="module")
def pipe(tiny_bundle_path: Path) -> Pipeline:
    return Pipeline.from_bundle(tiny_bundle_path)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    """Values k/8, exact and short in JSON."""
    return np.round(np.random.default_rng(0).random((2, 3, 320, 320), dtype=np.float32) * 8) / 8


def assert_serving(client: Any, x: np.ndarray) -> None:
    """A good request still works."""
    body, headers = v2_binary(x[:1], outputs=["output0"])
    r = client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text


def test_health_and_server_metadata(client: Any) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert meta["name"] == "cvdeploy" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("prefix", [f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/1"])
def test_model_metadata_ready_and_config(client: Any, prefix: str) -> None:
    meta = client.get(prefix).json()
    assert meta["name"] == NAME and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 320, 320]}]
    assert meta["outputs"][0]["shape"][0] == -1
    assert client.get(f"{prefix}/ready").json()["ready"] is True
    cfg = client.get(f"{prefix}/config").json()
    assert cfg["max_batch_size"] == 8
    assert cfg["input"][0] == {
        **cfg["input"][0],
        "name": "images",
        "data_type": "TYPE_FP32",
        "dims": [3, 320, 320],
    }
    # batching: auto measured batch 1 against batch 8 at load; whatever it chose, every document agrees
    batching = meta["parameters"]["batching"]
    m = batching["measurement"]
    assert batching["setting"] == "auto" and m["batch"] == 8 and m["batch1_ms"] > 0 and m["batched_ms"] > 0
    assert batching["enabled"] == (m["gain"] >= m["threshold"])
    assert ("dynamic_batching" in cfg) == batching["enabled"]
    assert cfg["parameters"]["cvdeploy_batching"]["string_value"].startswith(
        "on" if batching["enabled"] else "off"
    )
    if batching["enabled"]:
        assert cfg["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    assert cfg["instance_group"][0]["count"] == 1


def test_binary_infer_equals_in_process(client: Any, pipe: Pipeline, x: np.ndarray) -> None:
    body, headers = v2_binary(x, outputs=["output0"])
    r = client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    got = parse_binary_response(r)["output0"]
    np.testing.assert_allclose(got, pipe.infer(x)[0], rtol=1e-5, atol=1e-5)


def test_json_infer_equals_in_process(client: Any, pipe: Pipeline, x: np.ndarray) -> None:
    xr = x[:1]
    r = client.post(f"/v2/models/{NAME}/versions/1/infer", json={**v2_json(xr), "id": "req-7"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["id"] == "req-7" and doc["model_version"] == "1"
    out = doc["outputs"][0]
    got = np.asarray(out["data"], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, pipe.infer(xr)[0], rtol=1e-5, atol=1e-4)


def test_binary_output_default_for_all_outputs(client: Any, x: np.ndarray) -> None:
    raw = json.dumps({"inputs": v2_json(x[:1])["inputs"], "parameters": {"binary_data_output": True}})
    r = client.post(f"/v2/models/{NAME}/infer", content=raw.encode())
    assert r.status_code == 200 and "inference-header-content-length" in r.headers
    assert parse_binary_response(r)["output0"].shape == (1, 10, 2100)


def _input(**over: Any) -> dict[str, Any]:
    base = {"name": "images", "shape": [1, 3, 320, 320], "datatype": "FP32", "data": [0.0] * (3 * 320 * 320)}
    return {**base, **over}


BAD_JSON: list[tuple[str, Any, int, str]] = [
    ("not json", b"{this is not json", 400, "not valid JSON"),
    ("no inputs", {"outputs": []}, 400, "inputs: Field required"),
    ("empty inputs", {"inputs": []}, 400, "inputs: List should have at least 1 item"),
    ("wrong dtype", {"inputs": [_input(datatype="FP64")]}, 400, "must be FP32, got FP64"),
    ("wrong shape", {"inputs": [_input(shape=[1, 3, 32, 32], data=[0.0] * 3072)]}, 400, "must have shape"),
    ("wrong rank", {"inputs": [_input(shape=[3, 320, 320])]}, 400, "must have shape"),
    ("count mismatch", {"inputs": [_input(data=[0.0] * 10)]}, 400, "holds 10 values"),
    ("unknown input", {"inputs": [_input(name="pixels")]}, 400, "no input 'pixels'"),
    ("unknown output", {"inputs": [_input()], "outputs": [{"name": "boxes"}]}, 400, "no output 'boxes'"),
    ("bytes", {"inputs": [_input(datatype="BYTES")]}, 400, "BYTES"),
    ("over max batch", {"inputs": [_input(shape=[9, 3, 320, 320], data=[0.0] * 9)]}, 413, "limit"),
    ("non-numeric data", {"inputs": [_input(data=["a"] * (3 * 320 * 320))]}, 400, "not a list of FP32"),
]


@pytest.mark.parametrize(("case", "body", "status", "match"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_requests_are_4xx_with_a_message(client: Any, x: np.ndarray, case: str, body: Any, status: int,
                                             match: str) -> None:  # fmt: skip
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(f"/v2/models/{NAME}/infer", content=content)
    assert r.status_code == status, r.text
    assert match in r.json()["error"]
    assert_serving(client, x)


def test_binary_size_mismatch_and_bad_header_length(client: Any, x: np.ndarray) -> None:
    body, headers = v2_binary(x[:1])
    r = client.post(f"/v2/models/{NAME}/infer", content=body[:-100], headers=headers)
    assert r.status_code == 400 and "binary data ends" in r.json()["error"]
    r = client.post(
        f"/v2/models/{NAME}/infer", content=body, headers={"Inference-Header-Content-Length": "999999999"}
    )
    assert r.status_code == 400 and "does not fit" in r.json()["error"]
    r = client.post(
        f"/v2/models/{NAME}/infer", content=body, headers={"Inference-Header-Content-Length": "x"}
    )
    assert r.status_code == 400
    assert_serving(client, x)


@pytest.mark.parametrize(
    ("path", "status", "match"),
    [
        ("/v2/models/nope/infer", 404, "unknown model 'nope'"),
        (f"/v2/models/{NAME}/versions/7/infer", 404, "version 7 of model 'tiny' is not loaded"),
        (f"/v2/models/{NAME}/versions/latest/infer", 404, "versions are whole numbers"),
        ("/v2/nothing/here", 404, "no such endpoint"),
    ],
)
def test_unknown_model_version_or_route(
    client: Any, x: np.ndarray, path: str, status: int, match: str
) -> None:
    body, headers = v2_binary(x[:1])
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status and match in r.json()["error"]
    assert_serving(client, x)


def test_oversized_body_is_413_before_reading(client: Any, x: np.ndarray) -> None:
    big = np.zeros((4, 3, 320, 320), np.float32)  # 4.9 MB > the fixture's 4 MB limit
    body, headers = v2_binary(big)
    r = client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert_serving(client, x)


def test_oversized_chunked_body_is_413_while_streaming(client: Any, x: np.ndarray) -> None:
    body, headers = v2_binary(np.zeros((4, 3, 320, 320), np.float32))
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # no Content-Length: chunked
    r = client.post(f"/v2/models/{NAME}/infer", content=chunks, headers=headers)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert_serving(client, x)


def test_compressed_requests_are_refused_clearly(client: Any, x: np.ndarray) -> None:
    body, headers = v2_binary(x[:1])
    r = client.post(f"/v2/models/{NAME}/infer", content=body, headers={**headers, "Content-Encoding": "gzip"})
    assert r.status_code == 415 and "uncompressed" in r.json()["error"]


def test_statistics_count_inferences(client: Any) -> None:
    stats = client.get(f"/v2/models/{NAME}/stats").json()["model_stats"][0]
    assert stats["name"] == NAME and stats["execution_count"] >= 1
    assert stats["inference_count"] >= stats["execution_count"]
