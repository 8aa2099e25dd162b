"""Reading images from paths or bytes, finding images in folders, and bundled sample photographs."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from cvdeploy.errors import ImageError, InputError

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


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(h, w, 3)`` uint8 BGR (grayscale and alpha are converted)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    data = np.fromfile(str(p), dtype=np.uint8)
    return decode_image(data.tobytes(), source=str(p))


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG/WebP/BMP/TIFF) to ``(h, w, 3)`` uint8 BGR."""
    if not data:
        raise ImageError(f"{source}: empty file, not an image")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f"{source}: cannot decode as an image (corrupt or unsupported format)")
    return to_bgr(img)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Normalise an image array to ``(h, w, 3)`` uint8 BGR: gray, BGRA and 16-bit are converted."""
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img / 257).astype(np.uint8)
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
