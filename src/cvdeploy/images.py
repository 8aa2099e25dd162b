"""Reading images from paths or bytes, finding images in folders, and bundled sample photographs.

``decode_image`` is lenient, as image viewers are. ``decode_image_strict`` is what a server facing
untrusted bytes uses: JPEG, PNG and WebP only, and only what decodes completely and exactly —
truncated files, corrupt data, trailing bytes and headers whose size disagrees with their data are
refused (:func:`inspect_image` checks the structure from the bytes, without decoding pixels).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
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


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG/WebP/BMP/TIFF) to ``(h, w, 3)`` uint8 BGR."""
    if not data:
        raise ImageError(f"{source}: empty file, not an image")
    if data[:2] == b"\xff\xd8":
        img = _decode_jpeg_turbo(data)
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
    data: bytes, min_height: int, min_width: int, strict: bool = False
) -> np.ndarray | None:
    """A JPEG decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8) still at least ``min_height`` ×
    ``min_width`` (accurate IDCT); None where libjpeg-turbo cannot decode it (use :func:`decode_image`)."""
    if jpeg_size(data) is None:
        return None
    import simplejpeg

    try:
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=strict, min_height=max(1, min_height),
                                     min_width=max(1, min_width))  # fmt: skip
    except (ValueError, RuntimeError):
        if strict:
            raise
        return None
    return np.asarray(img)


def _decode_jpeg_turbo(data: bytes, strict: bool = False) -> np.ndarray | None:
    """A YCbCr or grayscale JPEG decoded by libjpeg-turbo through ``simplejpeg``; None to let OpenCV do it.

    The pixels are the ones OpenCV's decoder gives (both run the accurate integer IDCT with fancy chroma
    upsampling; ``tests/test_images.py`` pins it bit for bit), in about half the time on a 1080p photo here
    (7.5 vs 16.3 ms): the JPEG decode is most of the non-model time of a request. CMYK/YCCK files, files
    simplejpeg refuses and installs without it fall back to OpenCV, as before. ``strict``: corrupt or cut
    entropy-coded data raises instead of being filled in (for untrusted bytes).
    """
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):
            return None
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=strict)
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
MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class ImageInfo:
    """What an image's bytes declare: format (jpeg | png | webp) and size in pixels."""

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
    """``"jpeg"``, ``"png"`` or ``"webp"`` from the first bytes; None for anything else."""
    if data.startswith(_PNG_SIG):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def inspect_image(data: bytes, source: str = "image", max_pixels: int | None = None) -> ImageInfo:
    """Format and size, after checking the file's structure end to end without decoding its pixels.

    JPEG: every segment, the entropy-coded scans and the end marker, with nothing after it. PNG:
    every chunk's CRC, nothing after ``IEND``, and the compressed data inflates to exactly the size
    its header declares (counted in 1 MB steps, never held). WebP: the RIFF size equals the file
    size. A declared size over ``max_pixels`` raises :class:`ImageTooLarge` as soon as the header
    is read; anything else raises :class:`ImageError`.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{source}: not a JPEG, PNG or WebP image" if data else f"{source}: empty")
    inspect = {"jpeg": _inspect_jpeg, "png": _inspect_png, "webp": _inspect_webp}[fmt]
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
    """Decode untrusted JPEG/PNG/WebP bytes to ``(h, w, 3)`` uint8 BGR, or raise :class:`ImageError`.

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
