"""Image header checks: size read before decoding, bombs and truncated files refused."""

from __future__ import annotations

import functools
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


def bmp_image(width: int, height: int, bpp: int = 24, pixels: bytes | None = None, declared: int | None = None,
              trailing: bytes = b"", compression: int = 0, header: int = 40) -> bytes:  # fmt: skip
    """A BMP with a 40-byte info header; ``pixels``, ``declared`` (file size) and the rest can lie."""
    stride = (width * bpp + 31) // 32 * 4
    palette = bytes(4 << bpp) if bpp <= 8 else b""
    if pixels is None:
        n = stride * abs(height)
        pixels = bytes(range(256)) * (n // 256) + bytes(n % 256)
    data = pixels
    offset = 14 + 40 + len(palette)
    size = offset + len(data) + len(trailing)
    head = struct.pack("<2sIHHI", b"BM", size if declared is None else declared, 0, 0, offset)
    info = struct.pack(
        "<IiiHHIIiiII", header, width, height, 1, bpp, compression, len(data), 2835, 2835, 0, 0
    )
    return head + info + palette + data + trailing


def tiff_image(width: int, height: int, rows_per_strip: int | None = None, pixels: bytes | None = None,
               counts: list[int] | None = None, offsets: list[int] | None = None, ifd: int | None = None) -> bytes:  # fmt: skip
    """An uncompressed 8-bit grey little-endian TIFF in strips; its strip table and directory can lie."""
    rps = rows_per_strip or height
    strips = -(-height // rps)
    data = bytes((i * 7) % 251 for i in range(width * height)) if pixels is None else pixels
    data += b"\x00" * (len(data) % 2)
    offsets = offsets or [8 + i * rps * width for i in range(strips)]
    counts = counts or [min(rps, height - i * rps) * width for i in range(strips)]
    at = 8 + len(data)  # the directory follows the pixels; arrays of several values follow it
    entries = [(256, 4, [width]), (257, 4, [height]), (258, 3, [8]), (259, 3, [1]), (262, 3, [1]),
               (273, 4, offsets), (277, 3, [1]), (278, 4, [rps]), (279, 4, counts)]  # fmt: skip
    extra = b""
    table = struct.pack("<H", len(entries))
    for tag, kind, values in entries:
        fmt = "H" if kind == 3 else "I"
        raw = struct.pack(f"<{len(values)}{fmt}", *values)
        if len(raw) <= 4:
            table += struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\x00")
        else:
            where = at + 2 + 12 * len(entries) + 4 + len(extra)
            table += struct.pack("<HHII", tag, kind, len(values), where)
            extra += raw
    table += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", at if ifd is None else ifd) + data + table + extra


@functools.cache
def hostile_bmp_tiff() -> dict[str, tuple[bytes, type[Exception], str]]:
    """BMP and TIFF files that lie about themselves → the error the server answers and its message."""
    good_bmp, good_tiff = bmp_image(40, 30), tiff_image(40, 30, rows_per_strip=8)
    return {
        "bmp cut": (good_bmp[: len(good_bmp) // 2], BadRequest, "truncated BMP"),
        "bmp file size lie": (bmp_image(40, 30, declared=len(good_bmp) - 100), BadRequest, "declares"),
        "bmp claims more rows": (bmp_image(40, 60, pixels=good_bmp[54:]), BadRequest, "pixel data is"),
        "bmp trailing": (bmp_image(40, 30, trailing=b"x" * 64), BadRequest, "trailing data"),
        "bmp huge": (bmp_image(60000, 60000, pixels=b"\x00" * 64), PayloadTooLarge, "60000x60000"),
        "bmp unknown header": (bmp_image(40, 30, header=99), BadRequest, "unknown header size"),
        "bmp embedded jpeg": (bmp_image(40, 30, compression=4), BadRequest, "unsupported BMP compression"),
        "bmp zero width": (bmp_image(0, 30, pixels=b""), BadRequest, "malformed BMP"),
        "tiff cut": (good_tiff[: len(good_tiff) * 2 // 3], BadRequest, "TIFF"),
        "tiff directory outside": (tiff_image(40, 30, ifd=1 << 30), BadRequest, "outside the file"),
        "tiff huge": (
            tiff_image(60000, 60000, pixels=b"\x00" * 64, counts=[64], offsets=[8]),
            PayloadTooLarge,
            "60000x60000",
        ),
        "tiff strip past the end": (tiff_image(40, 30, offsets=[1 << 20]), BadRequest, "runs past the end"),
        "tiff strip size lie": (tiff_image(40, 30, counts=[40 * 20]), BadRequest, "where its size needs"),
        "tiff missing strips": (
            tiff_image(40, 30, rows_per_strip=8, offsets=[8], counts=[320]),
            BadRequest,
            "layout needs 4",
        ),
    }


@pytest.mark.parametrize("case", list(hostile_bmp_tiff()))
def test_hostile_bmp_and_tiff_are_refused_from_their_structure(case: str) -> None:
    data, error, match = hostile_bmp_tiff()[case]
    with pytest.raises(error, match=match):
        check_image(data, LimitsConfig())


def test_the_bmp_and_tiff_helpers_make_files_opencv_reads() -> None:
    """The hostile cases above are lies told by otherwise valid files: the truthful ones decode."""
    from cvdeploy.images import decode_image_strict

    for data in (bmp_image(40, 30), bmp_image(40, -30), bmp_image(40, 30, bpp=8), tiff_image(40, 30, 8)):
        info = check_image(data, LimitsConfig())
        assert (info.width, info.height) == (40, 30)
        assert decode_image_strict(data, "x", info).shape == (30, 40, 3)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp", ".tiff"])
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
        assert (
            info.format
            == {".jpg": "jpeg", ".png": "png", ".webp": "webp", ".bmp": "bmp", ".tiff": "tiff"}[ext]
        )


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
        (lambda b: b"hello, I am not an image", UnsupportedMedia, "not a JPEG, PNG, BMP, WebP or TIFF"),
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


def test_the_server_takes_the_formats_predict_reads_by_default() -> None:
    from cvdeploy.images import IMAGE_MEDIA_TYPES

    assert LimitsConfig().allowed_content_types == list(IMAGE_MEDIA_TYPES)
    assert {"image/bmp", "image/tiff"} <= set(IMAGE_MEDIA_TYPES)
    with pytest.raises(ValueError, match="'image/gif' is not an image format cvdeploy reads"):
        LimitsConfig(allowed_content_types=["image/jpeg", "image/gif"])


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
