"""A real uvicorn on 127.0.0.1 and Triton's own client, unmodified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.pipeline import Pipeline
from cvdeploy.serve import ServerHandle, run_in_background
from cvdeploy.serve.config import parse_config

httpclient = pytest.importorskip("tritonclient.http")
NAME = "tiny"


@pytest.fixture(scope="module")
def server(tiny_bundle_path: Path) -> Iterator[ServerHandle]:
    cfg = parse_config({"security": {"allow_anonymous_admin": True}})
    handle = run_in_background([tiny_bundle_path], host="127.0.0.1", port=0, config=cfg)
    try:
        yield handle
    finally:
        handle.stop()
    assert not handle.running


@pytest.fixture(scope="module")
def triton(server: ServerHandle):  # type: ignore[no-untyped-def]
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))


def test_health_metadata_and_config(triton) -> None:  # type: ignore[no-untyped-def]
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(NAME)
    assert not triton.is_model_ready("nope")
    assert triton.get_server_metadata()["name"] == "cvdeploy"
    meta = triton.get_model_metadata(NAME)
    assert meta["inputs"][0]["shape"] == [-1, 3, 320, 320]
    cfg = triton.get_model_config(NAME)
    assert cfg["max_batch_size"] == 8 and cfg["input"][0]["dims"] == [3, 320, 320]
    assert triton.get_model_repository_index()[0]["state"] == "READY"


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_in_process(triton, tiny_bundle_path: Path, binary: bool) -> None:  # type: ignore[no-untyped-def]
    x = np.round(np.random.default_rng(5).random((2, 3, 320, 320), dtype=np.float32) * 8) / 8
    inp = httpclient.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output0", binary_data=binary)
    result = triton.infer(NAME, [inp], outputs=[out], request_id="t-1")
    ref = Pipeline.from_bundle(tiny_bundle_path).infer(x)[0]
    np.testing.assert_allclose(result.as_numpy("output0"), ref, rtol=1e-4, atol=1e-4)
    assert result.get_response()["id"] == "t-1"


def test_errors_arrive_as_triton_exceptions(triton) -> None:  # type: ignore[no-untyped-def]
    from tritonclient.utils import InferenceServerException

    x = np.zeros((1, 3, 64, 64), np.float32)
    inp = httpclient.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="must have shape"):
        triton.infer(NAME, [inp])
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.infer("nope", [inp])
    assert triton.is_server_live()


def test_repository_control_through_the_client(triton) -> None:  # type: ignore[no-untyped-def]
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="Content-Type: application/json"):
        triton.unload_model(NAME)  # tritonclient sends no content type: a browser could send the same
    json_type = {"Content-Type": "application/json"}
    triton.unload_model(NAME, headers=json_type)
    assert not triton.is_model_ready(NAME)
    triton.load_model(NAME, headers=json_type)
    assert triton.is_model_ready(NAME)
