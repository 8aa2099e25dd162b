"""Image header checks: size read before decoding, bombs and truncated files refused."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from cvdeploy.serve.config import LimitsConfig
from cvdeploy.serve.errors import BadRequest, PayloadTooLarge, UnsupportedMedia
from cvdeploy.serve.limits import check_content_type, check_image, probe_image


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("size", [(37, 53), (480, 640)])
def test_probe_reads_the_size_of_real_encodings(
    photos: list[np.ndarray], ext: str, size: tuple[int, int]
) -> None:
    h, w = size
    img = cv2.resize(photos[1], (w, h))
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []  # 101 = lossless (VP8L)
    for extra in ([], params):
        ok, buf = cv2.imencode(ext, img, extra)
        assert ok
        info = probe_image(buf.tobytes())
        assert (info.width, info.height) == (w, h)
        assert info.format == {".jpg": "jpeg", ".png": "png", ".webp": "webp"}[ext]


def test_progressive_jpeg_is_probed(photos: list[np.ndarray]) -> None:
    ok, buf = cv2.imencode(".jpg", photos[0], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    info = probe_image(buf.tobytes())
    assert (info.height, info.width) == photos[0].shape[:2]


def test_bomb_is_refused_from_the_header_alone() -> None:
    data = png_claiming(60000, 60000)
    assert len(data) < 200
    with pytest.raises(PayloadTooLarge, match="60000x60000"):
        check_image(data, LimitsConfig())


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda b: b[: len(b) // 2], BadRequest, "truncated JPEG"),
        (lambda b: b[:40], BadRequest, "truncated or malformed JPEG"),
        (lambda b: b"hello, I am not an image", UnsupportedMedia, "not a JPEG, PNG or WebP"),
        (lambda b: b"", BadRequest, "empty"),
        (lambda b: b"\xff\xd8\x00\x00garbage", BadRequest, "malformed JPEG"),
    ],
)
def test_broken_jpegs_are_refused(photos: list[np.ndarray], mutate, error, match) -> None:  # type: ignore[no-untyped-def]
    _, buf = cv2.imencode(".jpg", photos[0])
    with pytest.raises(error, match=match):
        probe_image(mutate(buf.tobytes()))


@pytest.mark.parametrize(("ext", "match"), [(".png", "truncated PNG"), (".webp", "truncated WebP")])
def test_truncated_png_and_webp_are_refused(photos: list[np.ndarray], ext: str, match: str) -> None:
    _, buf = cv2.imencode(ext, photos[0])
    with pytest.raises(BadRequest, match=match):
        probe_image(buf.tobytes()[: len(buf) * 2 // 3])


def test_formats_outside_the_allowed_list_are_415(photos: list[np.ndarray]) -> None:
    _, buf = cv2.imencode(".png", photos[0])
    with pytest.raises(UnsupportedMedia, match="PNG images are not accepted"):
        check_image(buf.tobytes(), LimitsConfig(allowed_content_types=["image/jpeg"]))


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("image/jpeg", True),
        ("image/PNG; charset=binary", True),
        ("application/octet-stream", True),
        ("text/plain", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_content_types(content_type: str | None, ok: bool) -> None:
    allowed = LimitsConfig().allowed_content_types
    if ok:
        assert check_content_type(content_type, allowed)
    else:
        with pytest.raises(UnsupportedMedia, match="unsupported content type"):
            check_content_type(content_type, allowed)
