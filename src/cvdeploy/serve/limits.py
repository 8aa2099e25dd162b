"""Request limits: content types, and an image's structure and size checked before any pixel is decoded.

The server takes the formats ``predict`` reads (:data:`cvdeploy.images.IMAGE_MEDIA_TYPES`: JPEG, PNG,
BMP, WebP, TIFF) unless ``limits.allowed_content_types`` narrows them.

A decompression bomb (a small PNG that claims 60000×60000 pixels) is refused from its header
alone; a file whose structure is broken — truncated, trailing bytes, a PNG whose data does not
inflate to exactly its declared size — is refused by :func:`cvdeploy.images.inspect_image`
before a decoder sees it. The decode itself (:func:`cvdeploy.images.decode_image_strict`) then
refuses corrupt JPEG scans and any decoded size that differs from the declared one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cvdeploy.errors import ImageError, ImageTooLarge
from cvdeploy.images import FORMAT_NAMES, MIME, ImageInfo, inspect_image, sniff_format
from cvdeploy.serve.config import LimitsConfig
from cvdeploy.serve.errors import BadRequest, PayloadTooLarge, UnsupportedMedia

__all__ = ["RAW_IMAGE_TYPES", "ImageInfo", "check_content_type", "check_image", "media_type", "probe_image"]

RAW_IMAGE_TYPES = ("application/octet-stream", "application/x-image", "image/*")


def media_type(content_type: str | None) -> str:
    """``"image/JPEG; charset=x"`` → ``"image/jpeg"``; missing → ``""``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def probe_image(data: bytes, max_pixels: int | None = None) -> ImageInfo:
    """Format and size from a structurally complete file; unknown formats → 415, broken files → 400,
    a declared size over ``max_pixels`` → 413 (from the header, before the rest is looked at)."""
    if not data:
        raise BadRequest(f"empty body: send a {FORMAT_NAMES} image")
    if sniff_format(data) is None:
        raise UnsupportedMedia(f"not a {FORMAT_NAMES} image (unrecognised file header)")
    try:
        return inspect_image(data, "image", max_pixels)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except ImageError as exc:
        raise BadRequest(str(exc)) from None


def check_image(data: bytes, limits: LimitsConfig) -> ImageInfo:
    """Probe an image and enforce the allowed formats and ``max_image_pixels``, all before decoding."""
    if not data:
        raise BadRequest(f"empty body: send a {FORMAT_NAMES} image")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMedia(f"not a {FORMAT_NAMES} image (unrecognised file header)")
    if MIME[fmt] not in limits.allowed_content_types:
        raise UnsupportedMedia(
            f"{fmt.upper()} images are not accepted here; allowed: {', '.join(limits.allowed_content_types)}"
        )
    return probe_image(data, limits.max_image_pixels)


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
