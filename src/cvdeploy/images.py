"""Reading images from paths or bytes, finding images in folders, and bundled sample photographs.

``decode_image`` is lenient, as image viewers are. ``decode_image_strict`` is what a server facing
untrusted bytes uses: the same formats (JPEG, PNG, BMP, WebP, TIFF), but only what decodes completely
and exactly — truncated files, corrupt data, trailing bytes and headers whose size disagrees with
their data are refused (:func:`inspect_image` checks the structure from the bytes, without decoding
pixels; OpenCV then decodes, as for ``decode_image``).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cvdeploy.errors import ImageError, ImageTooLarge, InputError

#: The image formats cvdeploy reads everywhere (predict, val, calibration, serve): one list, one decoder
#: (OpenCV's ``imdecode``). ``IMAGE_MEDIA_TYPES`` are the same formats as HTTP content types.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg"),
    "image/png": (".png",),
    "image/bmp": (".bmp",),
    "image/webp": (".webp",),
    "image/tiff": (".tif", ".tiff"),
}
IMAGE_SUFFIXES: tuple[str, ...] = tuple(s for suffixes in IMAGE_FORMATS.values() for s in suffixes)
IMAGE_MEDIA_TYPES: tuple[str, ...] = tuple(IMAGE_FORMATS)
#: Video files ``predict`` reads frame by frame (OpenCV's FFmpeg backend).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def sniff_media_type(data: bytes) -> str | None:
    """The media type of encoded image bytes from their first bytes (magic numbers), or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def read_bytes(path: str | Path) -> bytes:
    """An image file's bytes, or a clear error when the path is missing or not a file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    return p.read_bytes()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(h, w, 3)`` uint8 BGR (grayscale and alpha are converted)."""
    return decode_image(read_bytes(path), source=str(path))


#: Gives a writable buffer of at least the bytes asked for, or None; a JPEG is decoded into it (the
#: array returned is then a view of it).
Buffer = Callable[[int], "np.ndarray | None"]


def decode_image(data: bytes, source: str = "image", buffer: Buffer | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG/WebP/BMP/TIFF) to ``(h, w, 3)`` uint8 BGR.

    ``buffer``: where a JPEG may be decoded into instead of a new array (see :data:`Buffer`)."""
    if not data:
        raise ImageError(f"{source}: empty file, not an image")
    if data[:2] == b"\xff\xd8":
        img = _decode_jpeg_turbo(data, buffer=buffer)
        if img is not None:
            return img
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f"{source}: cannot decode as an image (corrupt or unsupported format)")
    return to_bgr(img)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG header (libjpeg-turbo), or None when it cannot be read that way."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        import simplejpeg

        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except (ImportError, ValueError, RuntimeError):
        return None
    return (int(h), int(w)) if colorspace in ("YCbCr", "Gray") else None


def decode_jpeg_reduced(
    data: bytes,
    min_height: int,
    min_width: int,
    strict: bool = False,
    buffer: Buffer | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """A JPEG decoded at the smallest DCT scale of 1, 1/2, 1/4, 1/8 still at least ``min_height`` ×
    ``min_width`` (accurate IDCT); None where libjpeg-turbo cannot decode it (use :func:`decode_image`).

    Only powers of two: libjpeg-turbo also scales by M/8 (3/8, 5/8, ...), and simplejpeg picks the
    smallest such M, but those scaled IDCTs are plain C — measured on a 1080p JPEG here, 3/8 took 3.6 ms
    and 5/8 5.6 ms where 1/2 took 3.0 ms and the full size 4.0 ms. So the minimum asked for is the
    chosen power-of-two size itself, which libjpeg reaches with M = 4, 2 or 1."""
    size = size or jpeg_size(data)  # ``size``: the (height, width) a caller already read from the header
    if size is None:
        return None
    import simplejpeg

    (h, w), div = size, 1
    while div < 8 and -(-h // (div * 2)) >= min_height and -(-w // (div * 2)) >= min_width:
        div *= 2
    out_h, out_w = max(1, -(-h // div)), max(1, -(-w // div))
    try:
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=strict, min_height=out_h, min_width=out_w,
                                     buffer=buffer(out_h * out_w * 3) if buffer else None)  # fmt: skip
    except (ValueError, RuntimeError):
        if strict:
            raise
        return None
    return np.asarray(img)


def _decode_jpeg_turbo(data: bytes, strict: bool = False, buffer: Buffer | None = None) -> np.ndarray | None:
    """A YCbCr or grayscale JPEG decoded by libjpeg-turbo through ``simplejpeg``; None to let OpenCV do it.

    The pixels are the ones OpenCV's decoder gives (both run the accurate integer IDCT with fancy chroma
    upsampling; ``tests/test_images.py`` pins it bit for bit), in about half the time on a 1080p photo here
    (7.5 vs 16.3 ms): the JPEG decode is most of the non-model time of a request. CMYK/YCCK files, files
    simplejpeg refuses and installs without it fall back to OpenCV, as before. ``strict``: corrupt or cut
    entropy-coded data raises instead of being filled in (for untrusted bytes). ``buffer``: see
    :func:`decode_image`.
    """
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):
            return None
        out = buffer(int(h) * int(w) * 3) if buffer else None
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=strict, buffer=out)
    except (ValueError, RuntimeError):
        if strict:
            raise
        return None
    return np.asarray(img)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Normalise an image array to ``(h, w, 3)`` uint8 BGR: gray, BGRA and 16-bit are converted."""
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = _u16_to_u8(img)
        elif np.issubdtype(img.dtype, np.floating):
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ImageError(f"unsupported image shape {img.shape}: expected (h, w), (h, w, 3) or (h, w, 4)")


def _u16_to_u8(img: np.ndarray) -> np.ndarray:
    """``floor(v / 257)`` in integer arithmetic, a slab of rows at a time: no float64 copy of the image
    (a 25-megapixel 16-bit RGB image would need 600 MB for one)."""
    out = np.empty(img.shape, np.uint8)
    step = max(1, (1 << 20) // max(1, img[0].size))  # about a million values per slab
    for r in range(0, img.shape[0], step):
        out[r : r + step] = img[r : r + step] // np.uint16(257)
    return out


# ---- strict decoding for untrusted bytes -----------------------------------------------------------

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
#: format name (as :class:`ImageInfo` and error messages give it) → media type, for every format read
MIME = {mt.split("/", 1)[1]: mt for mt in IMAGE_MEDIA_TYPES}
_SHOWN = [{"webp": "WebP"}.get(f, f.upper()) for f in MIME]
#: The formats by name, for messages: "JPEG, PNG, BMP, WebP or TIFF".
FORMAT_NAMES = ", ".join(_SHOWN[:-1]) + " or " + _SHOWN[-1]


@dataclass(frozen=True)
class ImageInfo:
    """What an image's bytes declare: format (jpeg | png | bmp | webp | tiff) and size in pixels."""

    format: str
    width: int
    height: int

    @property
    def mime(self) -> str:
        return MIME[self.format]

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff_format(data: bytes) -> str | None:
    """The format name (a key of :data:`MIME`) from the first bytes; None for anything else.

    Any ``FF D8`` start counts as JPEG here (a broken one is then refused as a malformed JPEG, not
    as an unknown format); the others are :func:`sniff_media_type`'s magic numbers.
    """
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    mt = sniff_media_type(data)
    return mt.split("/", 1)[1] if mt else None


def inspect_image(data: bytes, source: str = "image", max_pixels: int | None = None) -> ImageInfo:
    """Format and size, after checking the file's structure end to end without decoding its pixels.

    JPEG: every segment, the entropy-coded scans and the end marker, with nothing after it. PNG:
    every chunk's CRC, nothing after ``IEND``, and the compressed data inflates to exactly the size
    its header declares (counted in 1 MB steps, never held). WebP: the RIFF size equals the file
    size. BMP: the file size the header declares is the file's, and the pixel data is all there —
    exactly the rows the header's size and depth need (uncompressed), or the declared RLE data —
    with nothing after it. TIFF: the first image's directory, its size, depth and layout, and every
    strip or tile of it lies inside the file; uncompressed strips and tiles hold exactly the bytes
    their rows need. A declared size over ``max_pixels`` raises :class:`ImageTooLarge` as soon as
    the header is read; anything else raises :class:`ImageError`.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{source}: not a {FORMAT_NAMES} image" if data else f"{source}: empty")
    inspect = {"jpeg": _inspect_jpeg, "png": _inspect_png, "webp": _inspect_webp, "bmp": _inspect_bmp,
               "tiff": _inspect_tiff}[fmt]  # fmt: skip
    return inspect(data, source, max_pixels)


def _within(width: int, height: int, max_pixels: int | None, source: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"{source}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,}; downscale it first"
        )


def decode_image_strict(
    data: bytes, source: str = "image", info: ImageInfo | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode untrusted JPEG/PNG/BMP/WebP/TIFF bytes to ``(h, w, 3)`` uint8 BGR, or raise :class:`ImageError`.

    Work is bounded by the declared size (checked against ``max_pixels`` before any pixel is
    decoded) and by the decoded size (it must equal the declared one). JPEG data is decoded by
    libjpeg-turbo in strict mode (via ``simplejpeg``), which refuses the corrupt or cut scans libjpeg
    would otherwise fill with grey, into the pixels :func:`decode_image` gives (CMYK JPEGs: verified
    that way at 1/8 scale, decoded by OpenCV). ``info`` is :func:`inspect_image`'s answer when known.
    """
    info = info or inspect_image(data, source, max_pixels)
    _within(info.width, info.height, max_pixels, source)
    img: np.ndarray | None = None
    if info.format == "jpeg":
        try:  # libjpeg-turbo in strict mode decodes and verifies the scans in one pass
            img = _decode_jpeg_turbo(data, strict=True)
        except (ValueError, RuntimeError) as exc:
            raise ImageError(f"{source}: corrupt JPEG data ({str(exc).splitlines()[0][:120]})") from None
        if img is None:  # CMYK/YCCK or no simplejpeg: verify at 1/8 scale, then OpenCV decodes
            _verify_jpeg_data(data, source)
    if img is None:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f"{source}: the {info.format.upper()} data cannot be decoded (corrupt)")
    if img.shape[:2] != (info.height, info.width):
        raise ImageError(
            f"{source}: the header says {info.width}x{info.height} but the data decodes to "
            f"{img.shape[1]}x{img.shape[0]}"
        )
    return to_bgr(img)


def _verify_jpeg_data(data: bytes, source: str) -> None:
    from cvdeploy._deps import require

    simplejpeg = require("simplejpeg", "strict JPEG decoding")
    try:  # the smallest DCT scale: every coefficient is entropy-decoded, almost no pixel is computed
        simplejpeg.decode_jpeg(data, strict=True, min_height=1, min_width=1)
    except (ValueError, RuntimeError) as exc:
        raise ImageError(f"{source}: corrupt JPEG data ({str(exc).splitlines()[0][:120]})") from None


def _inspect_jpeg(data: bytes, source: str, max_pixels: int | None) -> ImageInfo:
    """Walk the JPEG's segments and scans to its end marker (a structure check, not a decoder)."""
    i, n = 2, len(data)
    size: tuple[int, int] | None = None
    while True:
        if i >= n:
            raise ImageError(f"{source}: truncated JPEG (the file ends before its end-of-image marker)")
        if data[i] != 0xFF:
            raise ImageError(f"{source}: malformed JPEG (expected a marker at byte {i})")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            continue
        marker = data[i]
        i += 1
        if marker == 0xD9:  # end of image
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if i + 2 > n:
            continue
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2 or i + length > n:
            raise ImageError(f"{source}: truncated or malformed JPEG (segment at byte {i} runs past the end)")
        if marker in _JPEG_SOF:
            if length < 8:
                raise ImageError(f"{source}: malformed JPEG (short frame header)")
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            if width == 0 or height == 0:
                raise ImageError(f"{source}: malformed JPEG (frame size {width}x{height})")
            _within(width, height, max_pixels, source)
            size = (width, height)
        i += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            if size is None:
                raise ImageError(f"{source}: malformed JPEG (image data before the frame header)")
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    raise ImageError(f"{source}: truncated JPEG (the file ends inside its image data)")
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    i = j + 2 if nxt != 0xFF else j + 1
                    continue
                i = j
                break
    if size is None:
        raise ImageError(f"{source}: malformed JPEG (no frame header)")
    if i < n:
        raise ImageError(f"{source}: {n - i} bytes of trailing data after the JPEG end-of-image marker")
    return ImageInfo("jpeg", *size)


def _inspect_png(data: bytes, source: str, max_pixels: int | None) -> ImageInfo:
    """Chunks with valid CRCs from IHDR to IEND, and IDAT inflating to exactly the declared size."""
    i, n = 8, len(data)
    header: tuple[int, int, int, int, int] | None = None
    idat: list[bytes] = []
    while True:
        if i + 12 > n:
            raise ImageError(f"{source}: truncated PNG (the file ends before its IEND chunk)")
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > n:
            raise ImageError(f"{source}: truncated PNG (a {kind!r} chunk runs past the end)")
        body = data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) != crc:
            raise ImageError(f"{source}: corrupt PNG (bad CRC in a {kind!r} chunk)")
        if header is None and kind != b"IHDR":
            raise ImageError(f"{source}: malformed PNG (no IHDR header)")
        if kind == b"IHDR":
            if length != 13 or header is not None:
                raise ImageError(f"{source}: malformed PNG (bad IHDR)")
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if w == 0 or h == 0 or ctype not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
                raise ImageError(
                    f"{source}: malformed PNG (size {w}x{h}, colour type {ctype}, depth {depth})"
                )
            _within(w, h, max_pixels, source)
            header = (w, h, depth, ctype, interlace)
        elif kind == b"IDAT":
            idat.append(body)
        i = end
        if kind == b"IEND":
            break
    if i < n:
        raise ImageError(f"{source}: {n - i} bytes of trailing data after the PNG IEND chunk")
    assert header is not None
    w, h, depth, ctype, interlace = header
    if not idat:
        raise ImageError(f"{source}: malformed PNG (no image data)")
    bits = _PNG_CHANNELS[ctype] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        pw, ph = -(-(w - x0) // dx) if w > x0 else 0, -(-(h - y0) // dy) if h > y0 else 0
        if pw and ph:
            expected += ph * (1 + -(-(pw * bits) // 8))
    _check_inflated_size(b"".join(idat), expected, w, h, source)
    return ImageInfo("png", w, h)


def _check_inflated_size(stream: bytes, expected: int, w: int, h: int, source: str) -> None:
    """Inflate in 1 MB steps, counting: no more than ``expected + 1 MB`` is ever produced."""
    d = zlib.decompressobj()
    total, buf = 0, stream
    try:
        while True:
            out = d.decompress(buf, 1 << 20)
            total += len(out)
            if total > expected:
                raise ImageError(f"{source}: the PNG holds more image data than its {w}x{h} header declares")
            buf = d.unconsumed_tail
            if d.eof or (not out and not buf):
                break
    except zlib.error as exc:
        raise ImageError(f"{source}: corrupt PNG data ({exc})") from None
    if not d.eof:
        raise ImageError(f"{source}: truncated PNG data (the compressed stream is cut)")
    if total != expected:
        raise ImageError(f"{source}: the PNG holds less image data than its {w}x{h} header declares")
    if d.unused_data:
        raise ImageError(f"{source}: the PNG holds data after its compressed image stream")


def _inspect_webp(data: bytes, source: str, max_pixels: int | None) -> ImageInfo:
    (riff_size,) = struct.unpack("<I", data[4:8])
    if len(data) < riff_size + 8:
        raise ImageError(f"{source}: truncated WebP ({len(data)} bytes of {riff_size + 8})")
    if len(data) > riff_size + 8:
        raise ImageError(f"{source}: {len(data) - riff_size - 8} bytes of trailing data after the WebP")
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageError(f"{source}: malformed WebP (bad VP8 start code)")
        w, h = struct.unpack("<HH", data[26:30])
        width, height = w & 0x3FFF, h & 0x3FFF
    elif chunk == b"VP8L" and len(data) >= 25:
        if data[20] != 0x2F:
            raise ImageError(f"{source}: malformed WebP (bad VP8L signature)")
        (bits,) = struct.unpack("<I", data[21:25])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        raise ImageError(f"{source}: malformed WebP (unknown or truncated first chunk)")
    if width == 0 or height == 0:
        raise ImageError(f"{source}: malformed WebP (size {width}x{height})")
    _within(width, height, max_pixels, source)
    return ImageInfo("webp", width, height)


# BMP: BITMAPCOREHEADER (OS/2, 12 bytes) or BITMAPINFOHEADER and its extensions (40 … 124 bytes)
_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)
_BMP_RGB, _BMP_RLE8, _BMP_RLE4, _BMP_BITFIELDS, _BMP_ALPHABITFIELDS = 0, 1, 2, 3, 6


def _inspect_bmp(data: bytes, source: str, max_pixels: int | None) -> ImageInfo:
    """File size, header, palette and pixel data of a BMP against each other (a structure check)."""
    n = len(data)
    if n < 18:
        raise ImageError(f"{source}: truncated BMP (the file ends inside its header)")
    declared, _, offset, dib = struct.unpack_from("<IIII", data, 2)
    if declared != n:
        what = "truncated BMP" if declared > n else "malformed BMP"
        raise ImageError(f"{source}: {what} (its header declares {declared:,} bytes, the file has {n:,})")
    if dib not in _BMP_HEADERS:
        raise ImageError(f"{source}: malformed BMP (unknown header size {dib})")
    if n < 14 + dib:
        raise ImageError(f"{source}: truncated BMP (the file ends inside its header)")
    if dib == 12:
        width, height, planes, bpp = struct.unpack_from("<HHHH", data, 18)
        compression, image_size, colors, entry = _BMP_RGB, 0, 0, 3
    else:
        width, height, planes, bpp, compression, image_size = struct.unpack_from("<iiHHII", data, 18)
        (colors,) = struct.unpack_from("<I", data, 46)
        entry = 4
    rows = abs(height)
    if width <= 0 or rows == 0 or planes != 1 or bpp not in (1, 4, 8, 16, 24, 32):
        raise ImageError(f"{source}: malformed BMP (size {width}x{height}, {planes} planes, {bpp} bits)")
    _within(width, rows, max_pixels, source)
    rle = compression in (_BMP_RLE8, _BMP_RLE4)
    if compression not in (_BMP_RGB, _BMP_RLE8, _BMP_RLE4, _BMP_BITFIELDS, _BMP_ALPHABITFIELDS):
        raise ImageError(
            f"{source}: unsupported BMP compression {compression} (embedded JPEG/PNG or unknown)"
        )
    if (
        (compression == _BMP_RLE8 and bpp != 8)
        or (compression == _BMP_RLE4 and bpp != 4)
        or (compression in (_BMP_BITFIELDS, _BMP_ALPHABITFIELDS) and bpp not in (16, 32))
        or (rle and height < 0)
    ):
        raise ImageError(f"{source}: malformed BMP (compression {compression} with {bpp} bits per pixel)")
    palette = colors if colors else (1 << bpp if bpp <= 8 else 0)
    if palette > (1 << bpp if bpp <= 8 else 1 << 16):
        raise ImageError(f"{source}: malformed BMP ({palette:,} palette entries for {bpp} bits per pixel)")
    masks = {_BMP_BITFIELDS: 12, _BMP_ALPHABITFIELDS: 16}.get(compression, 0) if dib == 40 else 0
    if not 14 + dib + masks + palette * entry <= offset <= n:
        raise ImageError(
            f"{source}: malformed BMP (pixel data offset {offset:,} outside the file or inside its header)"
        )
    end, tail = n, n  # where the pixel data must end, and where the file may end
    if dib == 124:  # a V5 header may embed an ICC profile, usually after the pixel data
        cs_type, profile_at, profile_size = struct.unpack_from("<4s52xII", data, 70)
        if cs_type == b"DEBM":  # PROFILE_EMBEDDED ('MBED' as a little-endian DWORD)
            start = 14 + profile_at
            if start + profile_size > n:
                raise ImageError(f"{source}: truncated BMP (its colour profile runs past the end)")
            if start >= offset:
                end, tail = start, start + profile_size
    if rle:
        need = image_size
        if need == 0:
            raise ImageError(f"{source}: malformed BMP (RLE data without its size)")
    else:
        need = (width * bpp + 31) // 32 * 4 * rows  # rows padded to 4 bytes
    have = end - offset
    if have < need:
        raise ImageError(f"{source}: truncated BMP (pixel data is {have:,} of {need:,} bytes)")
    extra = have - need if tail == n else n - tail
    if extra > 3:  # writers may pad the file to 4 bytes, no more
        raise ImageError(f"{source}: {extra:,} bytes of trailing data after the BMP image data")
    return ImageInfo("bmp", width, rows)


# TIFF field types → bytes per value; the tags the structure check reads
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TIFF_UNPACK = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I"}
(_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_BYTES, _PLANAR,
 _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_BYTES) = (256, 257, 258, 259, 273, 277, 278, 279, 284,
                                                           322, 323, 324, 325)  # fmt: skip
_TIFF_TAGS = frozenset({_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP,
                        _STRIP_BYTES, _PLANAR, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_BYTES})  # fmt: skip


def _inspect_tiff(data: bytes, source: str, max_pixels: int | None) -> ImageInfo:
    """The first image of a TIFF (the one decoders read): its directory, size, depth and layout, and
    every strip or tile inside the file. Work is bounded by the file's size (a field's values must
    lie in the file before they are read)."""
    n = len(data)
    order = "<" if data[:2] == b"II" else ">"
    if n < 8:
        raise ImageError(f"{source}: truncated TIFF (the file ends inside its header)")
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd < 8 or ifd + 2 > n:
        raise ImageError(
            f"{source}: truncated or malformed TIFF (its first directory at byte {ifd:,} is outside the file)"
        )
    (count,) = struct.unpack_from(order + "H", data, ifd)
    if count == 0 or ifd + 2 + 12 * count + 4 > n:
        raise ImageError(
            f"{source}: truncated or malformed TIFF (a directory of {count} fields runs past the end)"
        )
    fields: dict[int, tuple[int, ...]] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind, values = struct.unpack_from(order + "HHI", data, at)
        if tag not in _TIFF_TAGS or kind not in _TIFF_SIZES:
            continue  # readers skip what they do not know
        size = _TIFF_SIZES[kind] * values
        where = at + 8
        if size > 4:
            (where,) = struct.unpack_from(order + "I", data, at + 8)
            if where + size > n:
                raise ImageError(f"{source}: truncated TIFF (the values of field {tag} run past the end)")
        if kind not in _TIFF_UNPACK or values == 0:
            raise ImageError(f"{source}: malformed TIFF (field {tag} of type {kind} with {values} values)")
        fields[tag] = struct.unpack_from(f"{order}{values}{_TIFF_UNPACK[kind]}", data, where)
    if _WIDTH not in fields or _HEIGHT not in fields:
        raise ImageError(f"{source}: malformed TIFF (no image width or height)")
    width, height = fields[_WIDTH][0], fields[_HEIGHT][0]
    if width <= 0 or height <= 0:
        raise ImageError(f"{source}: malformed TIFF (size {width}x{height})")
    _within(width, height, max_pixels, source)
    samples = fields.get(_SAMPLES, (1,))[0]
    bits = fields.get(_BITS, (1,) * samples)
    if not 1 <= samples <= 8 or len(set(bits)) != 1 or bits[0] not in (1, 2, 4, 8, 16, 32, 64):
        raise ImageError(f"{source}: malformed TIFF ({samples} samples of {'/'.join(map(str, bits))} bits)")
    planar = fields.get(_PLANAR, (1,))[0]
    planes, per_pixel = (samples, 1) if planar == 2 else (1, samples)
    if _TILE_OFFSETS in fields:
        tw, tl = fields.get(_TILE_WIDTH, (0,))[0], fields.get(_TILE_LENGTH, (0,))[0]
        if tw <= 0 or tl <= 0:
            raise ImageError(f"{source}: malformed TIFF (tile size {tw}x{tl})")
        offsets, counts = fields[_TILE_OFFSETS], fields.get(_TILE_BYTES, ())
        expected = -(-width // tw) * -(-height // tl) * planes
        sizes = [tl * ((tw * per_pixel * bits[0] + 7) // 8)] * len(offsets)  # a tile is whole, edges too
    else:
        offsets, counts = fields.get(_STRIP_OFFSETS, ()), fields.get(_STRIP_BYTES, ())
        rps = min(fields.get(_ROWS_PER_STRIP, (height,))[0] or height, height)
        per_plane = -(-height // rps)
        expected = per_plane * planes
        row = (width * per_pixel * bits[0] + 7) // 8
        sizes = [min(rps, height - (i % per_plane) * rps) * row for i in range(expected)]
    if not offsets or len(offsets) != expected or len(counts) != expected:
        raise ImageError(
            f"{source}: malformed TIFF ({len(offsets)} data offsets and {len(counts)} sizes where its "
            f"{width}x{height} layout needs {expected})"
        )
    for off, size in zip(offsets, counts, strict=True):
        if off + size > n:
            raise ImageError(f"{source}: truncated TIFF (image data at byte {off:,} runs past the end)")
    if fields.get(_COMPRESSION, (1,))[0] == 1:  # uncompressed: each strip/tile holds exactly its rows
        short = [(c, s) for c, s in zip(counts, sizes, strict=True) if c != s]
        if short:
            c, want = short[0]
            raise ImageError(
                f"{source}: malformed TIFF (uncompressed image data of {c:,} bytes where its size needs {want:,})"
            )
    return ImageInfo("tiff", width, height)


def find_images(
    sources: Iterable[str | Path], recursive: bool = True, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[Path]:
    """Expand files and folders into a sorted list of image files; a missing path or a URL is an error.

    Files named explicitly are kept whatever their suffix (reading them decides); in folders only
    ``suffixes`` are listed.
    """
    found: list[Path] = []
    for src in sources:
        if "://" in str(src):
            raise InputError(
                f"{src}: cvdeploy does not download (it never reaches the network); save the file and pass its path"
            )
        p = Path(src)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(f for f in p.glob(pattern) if f.suffix.lower() in suffixes and f.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"no such file or folder: {p}")
    return found


def iter_frames(path: str | Path, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, (h, w, 3) BGR frame)`` for every ``stride``-th frame of a video file."""
    if stride < 1:
        raise InputError(f"frame stride must be at least 1, got {stride}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageError(f"{path}: cannot open as a video (corrupt, or a codec OpenCV's FFmpeg lacks)")
    try:
        index = 0
        while True:
            ok = cap.grab()
            if not ok:
                break
            if index % stride == 0:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    yield index, to_bgr(frame)
            index += 1
        if index == 0:
            raise ImageError(f"{path}: no frames could be read from this video")
    finally:
        cap.release()


_SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "hubble_deep_field",
    "immunohistochemistry",
)


def sample_images(n: int = 8) -> list[np.ndarray]:
    """Real photographs shipped in installed packages, as BGR arrays, for parity checks and demos.

    Tried in order: scikit-image's ``skimage.data``, scikit-learn's sample images, matplotlib's
    sample data. When none is installed, structured synthetic images are used with a warning.
    """
    photos: list[np.ndarray] = []
    try:
        from skimage import data as skdata

        for name in _SKIMAGE_PHOTOS:
            fn = getattr(skdata, name, None)
            if fn is None:
                continue
            try:
                rgb = np.asarray(fn())
            except Exception:  # a data file missing from a slim install
                continue
            photos.append(to_bgr(rgb[..., ::-1].copy() if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb))
    except ImportError:
        pass
    if len(photos) < n:
        try:
            from sklearn.datasets import load_sample_images

            photos.extend(np.ascontiguousarray(im[..., ::-1]) for im in load_sample_images().images)
        except Exception:
            pass
    if not photos:
        warnings.warn(
            "no sample photographs installed (pip install scikit-image); using synthetic images",
            stacklevel=2,
        )
        photos = [_synthetic_image(i) for i in range(n)]
    return [photos[i % len(photos)] for i in range(n)] if len(photos) < n else photos[:n]


def _synthetic_image(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [
            127 + 120 * np.sin(xx / (20 + 10 * c) + rng.uniform(0, 6)) * np.cos(yy / (30 + 5 * c))
            for c in range(3)
        ],
        axis=-1,
    )
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, p, int(rng.integers(10, 80)), c, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Read several image files as BGR arrays."""
    return [read_image(p) for p in paths]
