"""Regression tests for every cause of issue 10 (hostile input): A–M, each a 4xx (or a closed
connection), never a 5xx or a hang, and the server answering valid requests afterwards."""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cvdeploy.errors import ImageError
from cvdeploy.images import decode_image_strict, inspect_image, to_bgr
from cvdeploy.serve import ServerHandle, run_in_background
from cvdeploy.serve.config import ServerConfig, resolve_platform

from .conftest import admin_config, config, run, serving, v2_binary, v2_json
from .test_limits import hostile_bmp_tiff

NAME = "tiny"
REPO = f"/v2/repository/models/{NAME}"


def x1() -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)


def assert_serving(client: Any) -> None:
    body, headers = v2_binary(x1(), outputs=["output0"])
    r = client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text


def assert_4xx(r: Any, status: int | tuple[int, ...], match: str = "") -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert match in r.json()["error"], r.json()["error"]


# ---- A: v2 tensor shapes validated before anything is allocated or reshaped -------------------------


def _header(shape: list[Any], size: int = 0) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return head, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("shape", "status", "match"),
    [
        ([18446744073709551616, 0], 400, "less than or equal to 2147483647"),
        ([2**63 - 1, 0], 400, "less than or equal to 2147483647"),
        ([1] * 65, 400, "at most 16 items"),
        ([2147483647, 0], 400, "is empty"),
        ([2147483647, 2147483647, 3], 413, "over the request limit"),
        ([-1, 3, 320, 320], 400, "greater than or equal to 0"),
        ([1, 3, 320.0, 320], 400, "valid integer"),
    ],
)
def test_A_tensor_shapes_are_checked_before_use(
    client: Any, shape: list[Any], status: int, match: str
) -> None:
    body, headers = _header(shape)
    assert_4xx(client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers), status, match)
    r = client.post(f"/v2/models/{NAME}/infer", json={"inputs": [{"name": "images", "shape": shape,
                                                                   "datatype": "FP32", "data": [0.0]}]})  # fmt: skip
    assert_4xx(r, (400, 413))
    assert_serving(client)


# ---- B: any malformed JSON is a 400, on every JSON route ----------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
BIG_INT = b"9" * 5000
JSON_ROUTES = [
    f"/v2/models/{NAME}/infer", "/v2/repository/index", f"{REPO}/load", f"{REPO}/unload", f"{REPO}/rollback",
    "/invocations",
]  # fmt: skip


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"inputs": ' + DEEP + b"}", b'{"version": ' + BIG_INT + b"}", b"[" + BIG_INT + b"]",
     b'{"a": NaN}', b"\xff\xfe\x00", b'{"a": 1} trailing'],
    ids=["deep", "deep-inside", "big-int", "big-int-list", "nan", "not-utf8", "trailing"],
)  # fmt: skip
def test_B_malformed_json_is_400_on_every_json_route(
    make_app: Callable[..., Any], path: str, body: bytes
) -> None:
    app = make_app(admin_config())

    async def go() -> Any:
        async with serving(app) as c:
            r = await c.post(path, content=body, headers={"content-type": "application/json"})
            ok = await c.post(
                f"/v2/models/{NAME}/infer", content=v2_binary(x1())[0], headers=v2_binary(x1())[1]
            )
            return r, ok

    r, ok = run(go())
    assert r.status_code == 400 and "error" in r.json(), (r.status_code, r.text[:200])
    assert ok.status_code == 200


# ---- C and D: repository parameters and versions -------------------------------------------------------


@pytest.mark.parametrize("route", ["load", "unload", "rollback"])
@pytest.mark.parametrize("params", ["abc", [1, 2], 5, True, {"version": "1"}])
def test_C_repository_parameters_are_type_checked(
    make_app: Callable[..., Any], route: str, params: Any
) -> None:
    app = make_app(admin_config())

    async def go() -> Any:
        async with serving(app) as c:
            r = await c.post(f"{REPO}/{route}", json={"parameters": params})
            index = (await c.post("/v2/repository/index")).json()
            return r, index

    r, index = run(go())
    assert_4xx(r, 400, "parameters")
    assert index == [{"name": NAME, "version": "1", "state": "READY", "reason": "serving"}]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"version": Infinity}', "not valid JSON"),
        (b'{"version": 1e400}', "valid integer"),
        (b'{"version": 1.9}', "valid integer"),
        (b'{"version": -1}', "greater than or equal to 0"),
        (b'{"version": 4294967296}', "less than or equal to"),
        (b'{"version": "1"}', "valid integer"),
    ],
)
def test_D_versions_in_bodies_are_whole_numbers_in_range(
    make_app: Callable[..., Any], body: bytes, match: str
) -> None:
    app = make_app(admin_config())

    async def go() -> Any:
        async with serving(app) as c:
            return await c.post(f"{REPO}/unload", content=body, headers={"content-type": "application/json"})

    assert_4xx(run(go()), 400, match)


@pytest.mark.parametrize("segment", ["%2B1", "%201", "1%20", "%EF%BC%91", "01x", "99999999999", "-1", "1.0"])
def test_D_version_path_segments_are_plain_digits(client: Any, segment: str) -> None:
    r = client.get(f"/v2/models/{NAME}/versions/{segment}")
    assert r.status_code == 404, r.text
    body, headers = v2_binary(x1())
    assert (
        client.post(f"/v2/models/{NAME}/versions/{segment}/infer", content=body, headers=headers).status_code
        == 404
    )
    assert client.get(f"/v2/models/{NAME}/versions/1").status_code == 200


# ---- E: load paths contained, errors revealing nothing ------------------------------------------------


def test_E_load_paths_stay_under_the_roots_and_errors_reveal_nothing(
    make_app: Callable[..., Any], tiny_bundle_path: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(
        tiny_bundle_path.parent
    )  # a link out of the root is followed, then refused
    root = tmp_path
    app = make_app(admin_config(root / "outside"))
    cases = {
        "tilde": "~nosuchuser/x",
        "long": "a" * 300 + "/b",
        "nul": "x\x00y",
        "exists-outside": "/etc",
        "missing-outside": "/no/such/dir",
        "dotdot": str(root / "outside" / ".." / "link"),
        "relative-escape": "../../etc",
        "inside-missing": "nothing-here.cvd",
    }

    async def go() -> dict[str, Any]:
        async with serving(app) as c:
            return {k: await c.post(f"{REPO}/load", json={"path": v}) for k, v in cases.items()}

    got = run(go())
    for key, r in got.items():
        assert 400 <= r.status_code < 500, (key, r.status_code, r.text)
    assert got["exists-outside"].status_code == got["missing-outside"].status_code == 403
    norm = {k: r.json()["error"].replace(repr(cases[k]), "PATH") for k, r in got.items()}
    assert norm["exists-outside"] == norm["missing-outside"]  # existence is not revealed
    assert got["inside-missing"].status_code == 404 and got["tilde"].status_code == 404
    assert got["dotdot"].status_code == 403
    for key, r in got.items():  # no path but the one given appears
        assert str(tiny_bundle_path.parent) not in r.text and str(root) not in r.text.replace(cases[key], "")


# ---- F: overrides range-checked, unknown names refused -------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_det": "Infinity"}, "max_det"),
        ({"conf": "1" * 400}, "conf"),
        ({"conf": "nan"}, "conf"),
        ({"max_det": "2.7"}, "max_det"),
        ({"max_det": "0"}, "greater than or equal to 1"),
        ({"confidence": "0.99"}, "unknown parameter 'confidence'; known: conf, iou, max_det"),
        ({"imgsz": "-1"}, "unknown parameter 'imgsz'"),
    ],
)
def test_F_overrides_are_checked(
    client: Any, photo_bytes: list[bytes], params: dict[str, str], match: str
) -> None:
    files = {"image": ("p.jpg", photo_bytes[0], "image/jpeg")}
    assert_4xx(client.post(f"/v1/models/{NAME}/detect", files=files, params=params), 400, match)
    r = client.post(f"/v1/models/{NAME}/detect", files={**files, **{k: (None, v) for k, v in params.items()}})
    assert_4xx(r, 400)


@pytest.mark.parametrize(
    "parameters", [{"max_det": 2.7}, {"conf": 1e400}, {"iou": -0.1}, {"confidence": 0.9}]
)
def test_F_vertex_parameters_are_checked(make_app: Callable[..., Any], photo_bytes: list[bytes],
                                         parameters: dict[str, Any]) -> None:  # fmt: skip
    app = make_app(platform=resolve_platform("sagemaker", ServerConfig(), env={}))
    b64 = base64.b64encode(photo_bytes[0]).decode()
    raw = json.dumps({"instances": [{"b64": b64}], "parameters": parameters}).replace("Infinity", "1e400")

    async def go() -> Any:
        async with serving(app) as c:
            return await c.post(
                "/invocations", content=raw.encode(), headers={"content-type": "application/json"}
            )

    assert_4xx(run(go()), 400, "parameters")


# ---- G: a request larger than the queue is refused up front, never half run ---------------------------


def test_G_too_many_instances_are_refused_before_anything_runs(
    make_app: Callable[..., Any], photo_bytes: list[bytes]
) -> None:
    app = make_app(
        config(defaults={"queue_size": 4}), platform=resolve_platform("sagemaker", ServerConfig(), env={})
    )
    b64 = base64.b64encode(photo_bytes[0]).decode()
    x = np.zeros((3, 320, 320), np.float32).tolist()
    mv = app.state.service.repository.get(NAME)

    async def go() -> list[Any]:
        async with serving(app) as c:
            many = await c.post("/invocations", json={"instances": [{"b64": b64}] * 100})
            queue = await c.post("/invocations", json={"instances": [x] * 5})
            ok = await c.post("/invocations", json={"instances": [x] * 3})
            return [many, queue, ok]

    many, queue, ok = run(go())
    assert_4xx(many, 413, "100 instances; this server takes at most 64 per request (limits.max_instances)")
    assert_4xx(queue, 413, "5 instances; this server takes at most 4 per request (the model's queue_size)")
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3
    assert mv.batcher.stats.requests == 3  # the refused requests queued nothing


def test_G_instances_are_admitted_all_or_nothing(make_app: Callable[..., Any]) -> None:
    app = make_app(config(defaults={"queue_size": 4}))
    mv = app.state.service.repository.get(NAME)

    async def go() -> None:
        async with serving(app):
            with (
                mv.batcher.reserve(3),
                pytest.raises(Exception, match="busy: 3 of 4 queue places taken"),
                mv.batcher.reserve(2),
            ):
                pass
            with mv.batcher.reserve(4):
                pass

    run(go())
    assert mv.batcher.stats.requests == 0


def test_G_a_batch_over_max_batch_size_is_413(make_app: Callable[..., Any]) -> None:
    app = make_app(config(defaults={"max_batch_size": 2}))

    async def go() -> Any:
        async with serving(app) as c:
            b, h = v2_binary(np.zeros((3, 3, 320, 320), np.float32))
            return await c.post(f"/v2/models/{NAME}/infer", content=b, headers=h)

    assert_4xx(run(go()), 413, "a batch of 3 rows is over this model's limit of 2")


# ---- H and J: the HTTP layer, over a real socket -----------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tiny_bundle_path: Path) -> Iterator[ServerHandle]:
    cfg = config(limits={"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_s": 1.0,
                         "max_header_bytes": 8192, "max_headers": 50, "max_connections": 64})  # fmt: skip
    handle = run_in_background([tiny_bundle_path], host="127.0.0.1", port=0, config=cfg)
    try:
        yield handle
    finally:
        handle.stop()


def raw(server: ServerHandle, data: bytes, trickle: float = 0.0, wait: float = 30.0) -> bytes:
    """Send ``data`` (byte by byte every ``trickle`` s if given) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        try:
            if trickle:
                for b in data:
                    s.sendall(bytes([b]))
                    time.sleep(trickle)
            else:
                s.sendall(data)
        except OSError:
            pass  # the server closed on us mid-send: what we want to see
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out  # socket.timeout (the server held the connection) fails the test


def status_of(resp: bytes) -> int | None:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "data", "trickle"),
    [
        ("unfinished head", b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n", 0.0),
        ("trickled head", b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"a" * 20, 0.1),
        ("short body", b"POST /v2/repository/index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n12345678", 0.0),
        ("nothing at all", b"", 0.0),
    ],
)  # fmt: skip
def test_H_slow_clients_are_cut_off(
    strict_server: ServerHandle, case: str, data: bytes, trickle: float
) -> None:
    resp = raw(strict_server, data, trickle)
    assert status_of(resp) in (None, 408), resp[:200]  # closed, with a 408 when a request was under way
    assert b"200 OK" not in resp


@pytest.mark.slow
def test_H_a_body_nobody_reads_still_has_a_deadline(strict_server: ServerHandle) -> None:
    """The route answers without reading the body; the connection is closed at the protocol's deadline."""
    data = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n12345678"
    resp = raw(strict_server, data)  # returns only once the server has closed the connection
    assert status_of(resp) == 200


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "data"),
    [
        (
            "huge header",
            b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        ),
        (
            "many headers",
            b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 10_000 + b"\r\n",
        ),
        ("60 headers", b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 60 + b"\r\n"),
        ("HTTP/2.0 line", b"GET /v2/health/live HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n"),
        ("HTTP/0.9 line", b"GET /v2/health/live\r\n\r\n"),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
        ("evil host", b"GET /v2/health/live HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
        ("two hosts", b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n"),
        (
            "bad length",
            b"POST /v2/repository/index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
        ),
    ],
)
def test_J_the_http_layer_refuses_what_it_does_not_take(
    strict_server: ServerHandle, case: str, data: bytes
) -> None:
    resp = raw(strict_server, data)
    code = status_of(resp)
    assert code is None or 400 <= code < 500, resp[:300]
    ok = raw(strict_server, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == 200


# ---- I: strict image decoding ------------------------------------------------------------------------


def _png(width: int, height: int, raw_bytes: bytes, depth: int = 8, ctype: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw_bytes))
        + chunk(b"IEND", b"")
    )


def _jpeg(photos: list[np.ndarray]) -> bytes:
    return cv2.imencode(".jpg", photos[0])[1].tobytes()


def _bad_images(photos: list[np.ndarray]) -> dict[str, bytes]:
    jpg = _jpeg(photos)
    sos = jpg.index(b"\xff\xda")
    corrupt = bytearray(jpg)
    corrupt[sos + 300 : sos + 3000] = bytes(
        np.random.default_rng(1).integers(0, 255, 2700, np.uint8)
    ).replace(b"\xff", b"\x01")
    flat = np.full((7000, 7000), 128, np.uint8)
    small = cv2.imencode(".jpg", np.full((100, 100), 128, np.uint8))[1].tobytes()
    frame = small.index(b"\xff\xc0")
    claims = bytearray(small)
    claims[frame + 5 : frame + 9] = struct.pack(">HH", 7000, 7000)  # a 5 KB JPEG claiming 7000x7000
    del flat
    return {
        "truncated then FFD9": jpg[: len(jpg) // 2] + b"\xff\xd9",
        "corrupt scan data": bytes(corrupt),
        "trailing garbage": jpg + b"GARBAGE",
        "claims 7000x7000": bytes(claims),
        "8x8 png with more data": _png(8, 8, b"\x00" * (8 * 25 + 4000)),
        "8x8 png with less data": _png(8, 8, b"\x00" * 40),
        "png bad crc": _png(8, 8, b"\x00" * 200)[:-5] + b"\x00" + _png(8, 8, b"\x00" * 200)[-4:],
        "png trailing": _png(8, 8, b"\x00" * (8 * 25)) + b"x",
        "webp trailing": cv2.imencode(".webp", photos[1])[1].tobytes() + b"xx",
        # BMP and TIFF, the formats predict also reads: every lie that is not a size over the limit
        **{case: data for case, (data, _, _) in hostile_bmp_tiff().items() if "huge" not in case},
        "real bmp cut": cv2.imencode(".bmp", photos[1])[1].tobytes()[:-1000],
        "real tiff cut": cv2.imencode(".tiff", photos[1])[1].tobytes()[:5000],
    }


def test_I_images_that_do_not_decode_completely_are_refused(photos: list[np.ndarray]) -> None:
    for case, data in _bad_images(photos).items():
        with pytest.raises(ImageError):
            decode_image_strict(data, case)
    good = _png(8, 8, b"\x00" * (8 * 25))
    assert decode_image_strict(good).shape == (8, 8, 3) and inspect_image(good).pixels == 64


def test_I_refused_over_http_and_the_server_keeps_serving(client: Any, photos: list[np.ndarray]) -> None:
    for case, data in _bad_images(photos).items():
        r = client.post(f"/v1/models/{NAME}/detect", content=data, headers={"content-type": "image/jpeg"})
        assert_4xx(r, 400)
        assert "error" in r.json(), case
    assert_serving(client)


def test_I_16_bit_and_alpha_images_convert_without_float_copies() -> None:
    img = (np.random.default_rng(0).random((1500, 1000, 4)) * 65535).astype(np.uint16)
    tracemalloc.start()
    try:
        out = to_bgr(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = (img[..., :3] // 257).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == (1500, 1000, 3) and (out == expected).all()
    assert peak < img.nbytes  # a float64 copy alone would be 4x the input
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert (to_bgr(v)[..., 0] == (v / 257).astype(np.uint8)).all()  # same values as before


# ---- K: bounded metric labels -------------------------------------------------------------------------


def test_K_failed_loads_of_arbitrary_names_add_no_series(make_app: Callable[..., Any]) -> None:
    app = make_app(admin_config())

    async def go() -> str:
        async with serving(app) as c:
            for i in range(30):
                await c.post(f"/v2/repository/models/m{i}x%00{'y' * 200}/load", json={"path": f"/nope/{i}"})
                await c.post(f"/v2/repository/models/m{i}/unload", json={})
                await c.get(f"/v2/models/m{i}/ready")
            return (await c.get("/metrics")).text

    text = run(go())
    events = [line for line in text.splitlines() if line.startswith("cvdeploy_model_events_total{")]
    models = {line.split('model="')[1].split('"')[0] for line in events}
    assert models == {"-", NAME}, models
    labels = {line.split('model="')[1].split('"')[0] for line in text.splitlines() if 'model="' in line}
    assert labels <= {"-", NAME}


def test_K_failed_load_records_are_bounded(make_app: Callable[..., Any]) -> None:
    app = make_app(admin_config())

    async def go() -> list[Any]:
        async with serving(app) as c:
            for v in range(40):
                r = await c.post(f"{REPO}/load", json={"path": "nothing.cvd", "version": 100 + v})
                assert r.status_code == 404
            return (await c.post("/v2/repository/index")).json()

    index = run(go())
    assert len(index) == 1 + 16 and index[-1]["version"] == "139"


# ---- L: no anonymous or cross-site state changes, Host allow-list, no redirects -----------------------


def test_L_state_changes_need_a_principal_json_and_a_known_host(make_app: Callable[..., Any]) -> None:
    strict, relaxed = make_app(), make_app(admin_config())

    async def go() -> list[Any]:
        out = []
        async with serving(strict) as c:
            out.append(await c.post(f"{REPO}/unload", content=b"{}", headers={"content-type": "text/plain"}))
            out.append(await c.post(f"{REPO}/unload", json={}))
            out.append(await c.get("/v2/health/live", headers={"host": "evil.example"}))
            out.append(await c.get("/v2/health/live/"))
            out.append(await c.get("/v2/models/tiny/ready", headers={"host": "127.0.0.1:8000"}))
        async with serving(relaxed) as c:
            out.append(await c.post(f"{REPO}/unload", content=b"{}", headers={"content-type": "text/plain"}))
            out.append(await c.post(f"{REPO}/unload"))
            out.append(await c.post(f"{REPO}/unload", json={}, headers={"host": "evil.example"}))
            out.append(await c.get("/v2/health/ready"))
        return out

    text_plain, anon, evil, slash, port, relaxed_text, relaxed_none, relaxed_evil, still = run(go())
    assert_4xx(text_plain, 401, "--allow-anonymous-admin")
    assert_4xx(anon, 401, "anonymous callers may not unload")
    assert_4xx(evil, 421, "does not answer to Host 'evil.example'")
    assert slash.status_code == 404 and "location" not in slash.headers
    assert port.status_code == 200
    assert_4xx(relaxed_text, 415, "Content-Type: application/json")
    assert_4xx(relaxed_none, 415, "Content-Type: application/json")
    assert_4xx(relaxed_evil, 421)
    assert still.status_code == 200  # nothing was unloaded


# ---- M (part): non-finite outputs are well-formed JSON, flagged and counted --------------------------


def test_non_finite_outputs_are_json_safe_flagged_and_counted(make_app: Callable[..., Any]) -> None:
    app = make_app(platform=resolve_platform("sagemaker", ServerConfig(), env={}))
    mv = app.state.service.repository.get(NAME)
    real = mv.batcher.runners[0]

    def broken(feeds: Any) -> list[np.ndarray]:
        outs = real(feeds)
        outs[0][..., 0] = np.nan
        outs[0][..., 1] = np.inf
        return outs

    mv.batcher.runners[0] = broken
    x = x1()

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))

    async def go() -> list[Any]:
        async with serving(app) as c:
            js = await c.post(f"/v2/models/{NAME}/infer", json=v2_json(x))
            b, h = v2_binary(x, outputs=["output0"])
            binary = await c.post(f"/v2/models/{NAME}/infer", content=b, headers=h)
            inst = await c.post("/invocations", json={"instances": [x[0].tolist()]})
            metrics = (await c.get("/metrics")).text
            return [js, binary, inst, metrics]

    js, binary, inst, metrics = run(go())
    assert js.status_code == 200
    doc = strict(js.text)
    out = doc["outputs"][0]
    assert out["data"][0] is None and out["parameters"]["non_finite"] == 2 * 10  # one column of each, 10 rows
    assert "NaN/Inf" in doc["parameters"]["warnings"][0]
    assert binary.status_code == 200 and "non_finite" in binary.text
    assert inst.status_code == 200 and "warnings" in strict(inst.text)["predictions"][0]
    assert 'cvdeploy_non_finite_outputs_total{model="tiny"} 3.0' in metrics
