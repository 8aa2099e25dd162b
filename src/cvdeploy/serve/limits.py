"""Request limits: content types, and image size read from the file header before any decoding.

A decompression bomb (a small PNG that claims 60000×60000 pixels) is refused from its first
bytes: :func:`probe_image` reads width and height from the PNG ``IHDR`` chunk, the JPEG ``SOFn``
segment or the WebP ``VP8``/``VP8L``/``VP8X`` header itself, and :func:`check_image` compares
them with ``limits.max_image_pixels``. Truncated files are refused too (JPEG without its end
marker, PNG without ``IEND``, WebP shorter than its RIFF size), because decoders would otherwise
return a half-grey image without complaint.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cvdeploy.serve.config import LimitsConfig
from cvdeploy.serve.errors import BadRequest, PayloadTooLarge, UnsupportedMedia

MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
RAW_IMAGE_TYPES = ("application/octet-stream", "application/x-image", "image/*")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: format (jpeg | png | webp) and size in pixels."""

    format: str
    width: int
    height: int

    @property
    def mime(self) -> str:
        return MIME[self.format]

    @property
    def pixels(self) -> int:
        return self.width * self.height


def media_type(content_type: str | None) -> str:
    """``"image/JPEG; charset=x"`` → ``"image/jpeg"``; missing → ``""``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def probe_image(data: bytes) -> ImageInfo:
    """Format and size from the header; unknown formats → 415, broken or truncated files → 400."""
    if data.startswith(_PNG_SIG):
        return _probe_png(data)
    if data.startswith(b"\xff\xd8"):
        return _probe_jpeg(data)
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _probe_webp(data)
    if not data:
        raise BadRequest("empty body: send a JPEG, PNG or WebP image")
    raise UnsupportedMedia("not a JPEG, PNG or WebP image (unrecognised file header)")


def check_image(data: bytes, limits: LimitsConfig) -> ImageInfo:
    """Probe an image and enforce the allowed formats and ``max_image_pixels``, all before decoding."""
    info = probe_image(data)
    if info.mime not in limits.allowed_content_types:
        raise UnsupportedMedia(
            f"{info.format.upper()} images are not accepted here; "
            f"allowed: {', '.join(limits.allowed_content_types)}"
        )
    if info.pixels > limits.max_image_pixels:
        raise PayloadTooLarge(
            f"image is {info.width}x{info.height} = {info.pixels:,} pixels, over the limit of "
            f"{limits.max_image_pixels:,}; downscale it before sending"
        )
    return info


def check_content_type(content_type: str | None, allowed: Sequence[str]) -> str:
    """Accept an image media type from ``allowed`` or a generic binary one; answer 415 otherwise."""
    mt = media_type(content_type)
    if mt in allowed or mt in RAW_IMAGE_TYPES:
        return mt
    shown = mt or "none"
    raise UnsupportedMedia(
        f"unsupported content type {shown!r}: send multipart/form-data with a file field 'image', "
        f"or a raw body of type {', '.join(allowed)}"
    )


def _probe_png(data: bytes) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise BadRequest("truncated or malformed PNG: no IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise BadRequest(f"malformed PNG: size {width}x{height}")
    if b"IEND" not in data[-16:]:
        raise BadRequest("truncated PNG: the file ends before its IEND chunk")
    return ImageInfo("png", width, height)


def _probe_jpeg(data: bytes) -> ImageInfo:
    i, n = 2, len(data)
    size: tuple[int, int] | None = None
    while i < n:
        if data[i] != 0xFF:
            raise BadRequest(f"malformed JPEG: expected a marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if i + 2 > n:
            break
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise BadRequest("malformed JPEG: bad segment length")
        if marker in _JPEG_SOF:
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            if width == 0 or height == 0:
                raise BadRequest(f"malformed JPEG: frame size {width}x{height}")
            size = (width, height)
        if marker == 0xDA:  # start of scan: entropy-coded data follows until the end marker
            if size is None:
                raise BadRequest("malformed JPEG: image data before the frame header")
            if data.rfind(b"\xff\xd9") < i:
                raise BadRequest("truncated JPEG: the file ends before its end-of-image marker")
            return ImageInfo("jpeg", *size)
        i += length
    raise BadRequest("truncated JPEG: the file ends inside its header")


def _probe_webp(data: bytes) -> ImageInfo:
    (riff_size,) = struct.unpack("<I", data[4:8])
    if len(data) < riff_size + 8:
        raise BadRequest(f"truncated WebP: {len(data)} bytes of {riff_size + 8}")
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        if data[23:26] != b"\x9d\x01\x2a":
            raise BadRequest("malformed WebP: bad VP8 start code")
        w, h = struct.unpack("<HH", data[26:30])
        width, height = w & 0x3FFF, h & 0x3FFF
    elif chunk == b"VP8L" and len(data) >= 25:
        if data[20] != 0x2F:
            raise BadRequest("malformed WebP: bad VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        raise BadRequest("malformed WebP: unknown or truncated first chunk")
    if width == 0 or height == 0:
        raise BadRequest(f"malformed WebP: size {width}x{height}")
    return ImageInfo("webp", width, height)
