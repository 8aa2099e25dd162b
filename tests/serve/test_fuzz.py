"""Property-based fuzzing of every route: whatever a client sends, the answer is never a 5xx, a 4xx
always carries a JSON ``{"error": ...}``, and the server keeps serving.

Hypothesis draws the method, path parameters, query, headers and body (random bytes, arbitrary JSON,
near-valid v2 / repository / Vertex documents with mutated fields, valid images cut, flipped or
padded, multipart forms with odd fields) for each route in turn; a principal that may change models
is used so that repository bodies reach validation (a valid unload is undone after the example).
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cvdeploy.monitor.monitor import Monitor  # noqa: E402
from cvdeploy.serve.app import create_app  # noqa: E402
from cvdeploy.serve.config import ServerConfig, resolve_platform  # noqa: E402
from cvdeploy.serve.security import Connection, Principal, Security  # noqa: E402

from .conftest import config  # noqa: E402

NAME = "tiny"
VERTEX = {
    "AIP_HTTP_PORT": "9001",
    "AIP_PREDICT_ROUTE": "/vertex/predict",
    "AIP_HEALTH_ROUTE": "/vertex/health",
}
IMAGE_ROUTES = ("detect", "segment", "pose", "obb", "classify", "predict")
ROUTES: list[tuple[str, str]] = [
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/stats"),
    *[
        (m, f"/v2/models/{{name}}{p}")
        for m, p in (
            ("GET", ""),
            ("GET", "/ready"),
            ("GET", "/config"),
            ("GET", "/stats"),
            ("POST", "/infer"),
        )
    ],
    *[
        (m, f"/v2/models/{{name}}/versions/{{version}}{p}")
        for m, p in (
            ("GET", ""),
            ("GET", "/ready"),
            ("GET", "/config"),
            ("GET", "/stats"),
            ("POST", "/infer"),
        )
    ],
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/{name}/load"),
    ("POST", "/v2/repository/models/{name}/unload"),
    ("POST", "/v2/repository/models/{name}/rollback"),
    *[("POST", f"/v1/models/{{name}}/{t}") for t in IMAGE_ROUTES],
    *[("POST", f"/v1/models/{{name}}/versions/{{version}}/{t}") for t in IMAGE_ROUTES],
    ("GET", "/v1/models"),
    ("GET", "/ping"),
    ("POST", "/invocations"),
    ("GET", "/metrics"),
    ("GET", VERTEX["AIP_HEALTH_ROUTE"]),
    ("POST", VERTEX["AIP_PREDICT_ROUTE"]),
    ("GET", "/v1/models/{name}/monitor"),
    ("GET", "/ui"),
    ("GET", "/ui/models/{name}"),
    ("GET", "/ui/samples/{sample_id}.jpg"),
    ("GET", "/ui/static/{file}"),
]


class Operator:
    """Every request comes from a principal that may change models (so their bodies get validated)."""

    async def authenticate(self, conn: Connection) -> Principal:
        return Principal("fuzzer", "test", frozenset({"admin"}))


@pytest.fixture(scope="module")
def fuzz_client(tiny_bundle_path: Path) -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    cfg = config(
        limits={"max_body_bytes": 2_000_000, "max_json_bytes": 1_000_000},
        repository={"max_loaded_versions": 2},
    )
    app = create_app(
        [tiny_bundle_path],
        cfg,
        platform=resolve_platform(None, ServerConfig(), host="127.0.0.1", env=VERTEX),
        security=Security(authenticator=Operator()),
        monitor=Monitor.open(None),
    )
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        yield c


def _routes(routes: list[Any]) -> Iterator[tuple[str, str]]:
    for r in routes:
        inner = getattr(r, "original_router", None)  # an included router (FastAPI keeps them nested)
        if inner is not None:
            yield from _routes(inner.routes)
            continue
        for m in getattr(r, "methods", None) or ():
            if m != "HEAD":
                yield m, r.path


def test_the_fuzzed_routes_are_all_the_routes(fuzz_client: Any) -> None:
    assert set(_routes(fuzz_client.app.routes)) == set(ROUTES)


# ---- strategies ------------------------------------------------------------------------------------

_photo = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
# every format the server takes (those predict reads), TIFF both LZW-compressed and uncompressed
IMAGES = [cv2.imencode(ext, _photo)[1].tobytes() for ext in (".jpg", ".png", ".webp", ".bmp", ".tiff")]
IMAGES.append(cv2.imencode(".tiff", _photo, [cv2.IMWRITE_TIFF_COMPRESSION, 1])[1].tobytes())
text = st.text(max_size=24)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
    max_leaves=12,
)
numbers = st.one_of(
    st.integers(-(2**66), 2**66), st.floats(allow_nan=False, allow_infinity=False), text, st.none()
)
shapes = st.one_of(st.just([1, 3, 320, 320]), st.lists(st.integers(-3, 2**65), max_size=6), json_values)
datatypes = st.one_of(st.sampled_from(["FP32", "FP16", "INT64", "BYTES", "UINT8", "BOOL"]), text)


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(IMAGES)))
    how = draw(st.sampled_from(["keep", "cut", "flip", "head", "pad", "eoi"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "head":  # the headers, directories and size fields live in the first bytes
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, min(len(data), 160) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "pad":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "eoi":
        data = data[: len(data) // 2] + b"\xff\xd9"
    return bytes(data)


@st.composite
def v2_doc(draw: st.DrawFn) -> Any:
    inp: dict[str, Any] = {
        "name": draw(st.one_of(st.just("images"), text)),
        "shape": draw(shapes),
        "datatype": draw(datatypes),
    }
    if draw(st.booleans()):
        inp["data"] = draw(st.one_of(st.lists(numbers, max_size=8), json_values))
    else:
        inp["parameters"] = draw(st.one_of(st.fixed_dictionaries({"binary_data_size": numbers}), json_values))
    doc: dict[str, Any] = {
        "inputs": draw(st.one_of(st.just([inp]), st.lists(st.just(inp), max_size=3), json_values))
    }
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.one_of(st.just([{"name": "output0", "parameters": {"binary_data": True}}]), json_values)
        )
    if draw(st.booleans()):
        doc["parameters"] = draw(
            st.one_of(st.fixed_dictionaries({"binary_data_output": json_values}), json_values)
        )
    if draw(st.booleans()):
        doc[draw(text)] = draw(json_values)
    return doc


repo_doc = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "path": st.one_of(text, st.just("tiny.cvd"), st.just("/etc"), st.just("~x/y")),
            "version": numbers,
            "artifact": text,
            "unload_dependents": json_values,
            "parameters": json_values,
        },
    ),
    json_values,
)
instances_doc = st.fixed_dictionaries(
    {
        "instances": st.one_of(
            st.lists(
                st.one_of(mutated_image().map(lambda b: {"b64": base64.b64encode(b).decode()}), json_values),
                max_size=3,
            ),
            json_values,
        )
    },
    optional={
        "parameters": st.one_of(
            st.fixed_dictionaries({}, optional={"conf": numbers, "iou": numbers, "max_det": numbers}),
            json_values,
        )
    },
)


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = "fuzzboundary"
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        field = draw(
            st.one_of(
                st.sampled_from(["image", "conf", "max_det", "iou"]), text.filter(lambda t: '"' not in t)
            )
        )
        if draw(st.booleans()):
            head = f'Content-Disposition: form-data; name="{field}"; filename="x.jpg"\r\nContent-Type: image/jpeg'
            payload = draw(mutated_image())
        else:
            head = f'Content-Disposition: form-data; name="{field}"'
            payload = draw(text).encode()
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + payload + b"\r\n")
    tail = draw(st.sampled_from([f"--{boundary}--\r\n".encode(), b"", b"--garbage"]))
    return b"".join(parts) + tail, f"multipart/form-data; boundary={boundary}"


@st.composite
def request_parts(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["bytes", "json", "v2", "repo", "instances", "image", "multipart", "empty"]))
    headers: dict[str, str] = {}
    if kind == "multipart":
        body, ctype = draw(multipart())
        headers["content-type"] = ctype
        return body, headers
    body = {
        "bytes": lambda: draw(st.binary(max_size=512)),
        "json": lambda: json.dumps(draw(json_values)).encode(),
        "v2": lambda: json.dumps(draw(v2_doc())).encode(),
        "repo": lambda: json.dumps(draw(repo_doc)).encode(),
        "instances": lambda: json.dumps(draw(instances_doc)).encode(),
        "image": lambda: draw(mutated_image()),
        "empty": lambda: b"",
    }[kind]()
    ctype = draw(
        st.one_of(
            st.sampled_from(
                [
                    "application/json",
                    "image/jpeg",
                    "image/png",
                    "application/octet-stream",
                    "text/plain",
                    "application/x-image",
                    "",
                ]
            ),
            text,
        )
    )
    if ctype:
        headers["content-type"] = ctype.encode("ascii", "ignore").decode().strip() or "text/plain"
    if draw(st.integers(0, 4)) == 0:
        headers["inference-header-content-length"] = (
            draw(st.one_of(st.integers(-5, len(body) + 5).map(str), text))
            .encode("ascii", "ignore")
            .decode()
            .strip()
            or "x"
        )
    return body, headers


def fill(path: str, draw: st.DrawFn) -> str:
    segment = st.one_of(
        st.just(NAME),
        st.just("1"),
        text.map(lambda t: t.replace("/", "_") or "x"),
        st.integers(-(2**40), 2**70).map(str),
    )
    from urllib.parse import quote

    segment = st.one_of(segment, st.sampled_from(["console.css", "console.js", "0" * 32, "..%2F"]))
    for param in ("{name}", "{version}", "{sample_id}", "{file}"):
        if param in path:
            path = path.replace(param, quote(draw(segment), safe=""))
    return path


queries = st.dictionaries(
    st.one_of(st.sampled_from(["conf", "iou", "max_det", "ready", "window"]), text),
    st.one_of(text, numbers.map(str)),
    max_size=3,
)


@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_no_route_answers_5xx_to_anything(
    fuzz_client: Any, method: str, route: str, data: st.DataObject
) -> None:
    path = fill(route, data.draw)
    verb = data.draw(st.one_of(st.just(method), st.sampled_from(["GET", "POST", "PUT", "DELETE"])), "method")
    body, headers = data.draw(request_parts(), "request")
    params = data.draw(queries, "query")
    r = fuzz_client.request(
        verb, path, content=body if verb != "GET" else None, headers=headers, params=params
    )
    assert r.status_code < 500, (verb, path, headers, body[:200], r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json(), r.text[:300]
    repo = fuzz_client.app.state.service.repository
    if not repo.ready:  # a valid unload: serve the bundle again for the next example
        fuzz_client.post(f"/v2/repository/models/{NAME}/load", json={})
        assert repo.ready
