"""The image API on real photographs: same detections as in-process, and malformed images refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cvdeploy.images import decode_image
from cvdeploy.pipeline import Pipeline
from cvdeploy.results import Detections

from .test_limits import hostile_bmp_tiff, png_claiming

NAME = "tiny"
CONF = 1e-4  # the tiny model is untrained: only a very low threshold finds anything


@pytest.fixture(scope="module")
def pipe(tiny_bundle_path: Path) -> Pipeline:
    p = Pipeline.from_bundle(tiny_bundle_path)
    p.contract.output.conf = CONF
    return p


def detect(client: Any, data: bytes, **kw: Any) -> Any:
    return client.post(f"/v1/models/{NAME}/detect", files={"image": ("photo.jpg", data, "image/jpeg")}, **kw)


def assert_serving(client: Any, photo: bytes) -> None:
    assert detect(client, photo).status_code == 200


def test_photographs_match_the_in_process_pipeline(
    client: Any, pipe: Pipeline, photo_bytes: list[bytes]
) -> None:
    assert len(photo_bytes) >= 3
    for data in photo_bytes:
        r = detect(client, data, params={"conf": CONF})
        assert r.status_code == 200, r.text
        doc = r.json()
        img = decode_image(data)
        assert doc["image"] == {"width": img.shape[1], "height": img.shape[0], "format": "jpeg"}
        ref = pipe.predict([img])[0]
        assert isinstance(ref, Detections) and len(ref) > 0
        got = doc["detections"]
        assert len(got) == len(ref)
        np.testing.assert_allclose([d["box"] for d in got], ref.xyxy, atol=0.01)
        assert [d["class_id"] for d in got] == ref.class_id.tolist()
        boxes = np.asarray([d["box"] for d in got])
        assert (
            boxes[:, [0, 2]].max() <= img.shape[1] and boxes[:, [1, 3]].max() <= img.shape[0]
        )  # original pixels
        assert set(doc["timings_ms"]) == {"preprocess", "queue", "inference", "postprocess"}


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream"])
def test_raw_body_equals_multipart(client: Any, photo_bytes: list[bytes], content_type: str) -> None:
    a = detect(client, photo_bytes[0], params={"conf": CONF}).json()["detections"]
    r = client.post(f"/v1/models/{NAME}/detect?conf={CONF}", content=photo_bytes[0],
                    headers={"content-type": content_type})  # fmt: skip
    assert r.status_code == 200 and r.json()["detections"] == a


def test_thresholds_can_be_form_fields_and_change_the_answer(client: Any, photo_bytes: list[bytes]) -> None:
    files = {"image": ("p.jpg", photo_bytes[1], "image/jpeg")}
    many = client.post(f"/v1/models/{NAME}/detect", files=files, data={"conf": str(CONF)}).json()[
        "detections"
    ]
    few = client.post(
        f"/v1/models/{NAME}/detect", files=files, data={"conf": str(CONF), "max_det": "2"}
    ).json()
    assert len(many) > 2 and len(few["detections"]) == 2


IMAGE_FORMATS_OF = {".jpg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp", ".webp": "image/webp",
                    ".tiff": "image/tiff"}  # fmt: skip
# one file per format predict reads; WebP lossless (quality > 100), so only JPEG changes the pixels
ENCODINGS = {".jpg": [], ".png": [], ".bmp": [], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 101], ".tiff": []}


def test_every_format_predict_reads_is_served_with_the_same_detections(
    client: Any, tiny_bundle_path: Path, photos: list[np.ndarray], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from cvdeploy.cli.main import run
    from cvdeploy.images import IMAGE_FORMATS

    assert {s for suffixes in IMAGE_FORMATS.values() for s in suffixes} >= set(ENCODINGS)
    assert {IMAGE_FORMATS_OF[ext] for ext in ENCODINGS} == set(IMAGE_FORMATS)  # every format, no fewer
    folder = tmp_path / "formats"
    folder.mkdir()
    for ext, params in ENCODINGS.items():
        assert cv2.imwrite(str(folder / f"photo{ext}"), photos[1], params)
    assert run(["predict", str(tiny_bundle_path), str(folder), "--json", "--conf", str(CONF)]) == 0
    predicted = {Path(d["image"]).suffix: d["detections"] for d in json.loads(capsys.readouterr().out)}
    assert set(predicted) == set(ENCODINGS)
    served = {}
    for ext in ENCODINGS:
        data = (folder / f"photo{ext}").read_bytes()
        mime = IMAGE_FORMATS_OF[ext]
        r = client.post(
            f"/v1/models/{NAME}/detect", params={"conf": CONF}, files={"image": (f"p{ext}", data, mime)}
        )
        assert r.status_code == 200, (ext, r.text)
        doc = r.json()
        assert doc["image"] == {"width": photos[1].shape[1], "height": photos[1].shape[0], "format": mime[6:]}
        raw = client.post(
            f"/v1/models/{NAME}/detect?conf={CONF}", content=data, headers={"content-type": mime}
        )
        assert raw.status_code == 200 and raw.json()["detections"] == doc["detections"]
        served[ext] = doc["detections"]
        assert len(served[ext]) > 0 and len(served[ext]) == len(predicted[ext]), ext
        np.testing.assert_allclose(
            [d["box"] for d in served[ext]], [d["box"] for d in predicted[ext]], atol=0.01
        )
        assert [d["class_id"] for d in served[ext]] == [d["class_id"] for d in predicted[ext]]
    for ext in (".png", ".bmp", ".webp", ".tiff"):  # the same pixels in any lossless format: the same answer
        assert served[ext] == served[".png"], ext


def _truncated(photo: bytes) -> bytes:
    return photo[: len(photo) // 2]


BAD = [
    ("truncated jpeg", lambda p: detect_args(_truncated(p)), 400, "truncated JPEG"),
    ("not an image", lambda p: detect_args(b"GIF89a, or rather just text"), 415, "not a JPEG, PNG, BMP, WebP or TIFF"),
    ("png bomb header", lambda p: detect_args(png_claiming(60000, 60000)), 413, "60000x60000"),
    ("bmp bomb header", lambda p: detect_args(hostile_bmp_tiff()["bmp huge"][0]), 413, "60000x60000"),
    ("tiff bomb header", lambda p: detect_args(hostile_bmp_tiff()["tiff huge"][0]), 413, "60000x60000"),
    ("tiff strip size lie", lambda p: detect_args(hostile_bmp_tiff()["tiff strip size lie"][0]), 400,
     "where its size needs"),
    ("no image field", lambda p: {"files": {"conf": (None, "0.5")}}, 400, "no field 'image'"),
    ("unknown field", lambda p: {"files": {"picture": ("p.jpg", p, "image/jpeg")}}, 400,
     "unknown form field 'picture'; known: image, conf, iou, max_det"),
    ("text field", lambda p: {"files": {"image": (None, "hello")}}, 400, "must be a file"),
    ("wrong content type", lambda p: {"content": p, "headers": {"content-type": "text/plain"}}, 415,
     "unsupported content type"),
    ("bad conf", lambda p: {**detect_args(p), "params": {"conf": "high"}}, 400, "conf: Input should be a valid number"),
    ("conf out of range", lambda p: {**detect_args(p), "params": {"conf": "1.5"}}, 400,
     "conf: Input should be less than or equal to 1"),
    ("unknown query", lambda p: {**detect_args(p), "params": {"confidence": "0.9"}}, 400,
     "unknown parameter 'confidence'; known: conf, iou, max_det"),
]  # fmt: skip


def detect_args(data: bytes) -> dict[str, Any]:
    return {"files": {"image": ("photo.jpg", data, "image/jpeg")}}


@pytest.mark.parametrize(("case", "make", "status", "match"), BAD, ids=[b[0] for b in BAD])
def test_malformed_images_are_4xx_and_the_server_keeps_serving(client: Any, photo_bytes: list[bytes], case: str,
                                                                make: Any, status: int, match: str) -> None:  # fmt: skip
    r = client.post(f"/v1/models/{NAME}/detect", **make(photo_bytes[0]))
    assert r.status_code == status, r.text
    assert match in r.json()["error"]
    assert_serving(client, photo_bytes[0])


def test_a_corrupt_body_behind_a_valid_header_is_400(client: Any, photo_bytes: list[bytes]) -> None:
    data = bytearray(photo_bytes[0])
    sos = data.index(b"\xff\xda")
    data[sos + 20 : -2] = b"\x00" * (len(data) - sos - 22)  # valid header and end marker, garbage inside
    r = detect(client, bytes(data))
    assert r.status_code == 400 and "corrupt JPEG data" in r.json()["error"]  # not rendered as grey pixels
    assert_serving(client, photo_bytes[0])


@pytest.mark.parametrize(
    ("path", "status", "match"),
    [
        ("/v1/models/nope/detect", 404, "unknown model"),
        (f"/v1/models/{NAME}/versions/3/detect", 404, "version 3"),
        (f"/v1/models/{NAME}/classify", 400, "is a detect model"),
    ],
)
def test_wrong_model_version_or_task(
    client: Any, photo_bytes: list[bytes], path: str, status: int, match: str
) -> None:
    r = client.post(path, **detect_args(photo_bytes[0]))
    assert r.status_code == status and match in r.json()["error"]


def test_predict_and_model_list(client: Any, photo_bytes: list[bytes]) -> None:
    r = client.post(f"/v1/models/{NAME}/versions/1/predict", **detect_args(photo_bytes[0]))
    assert r.status_code == 200 and r.json()["task"] == "detect"
    models = client.get("/v1/models").json()["models"]
    assert (
        models[0]["name"] == NAME and models[0]["serving_version"] == "1" and len(models[0]["classes"]) == 6
    )
