"""Photographic backgrounds for the synthetic shapes dataset.

Real photographs ship inside some installed packages (scikit-image's ``skimage/data``, scikit-learn's
sample images, matplotlib's sample data). They are read straight from those package folders, so
nothing is ever downloaded. When none of them is found, procedurally generated textures are used
instead, with a warning.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import cv2
import numpy as np

__all__ = ["BackgroundSource", "find_background_files", "load_backgrounds", "random_background"]

#: ``(package, folder inside the package, file names)``; only files shipped in the wheels are listed.
#: Photographs dominated by shape-like objects (coins, bricks, the round retina) are left out so that
#: the background never shows an unlabelled "circle" or "square".
_SHIPPED_PHOTOS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "skimage",
        "data",
        (
            "astronaut.png",
            "camera.png",
            "chelsea.png",
            "coffee.png",
            "grass.png",
            "gravel.png",
            "hubble_deep_field.jpg",
            "ihc.png",
            "moon.png",
            "motorcycle_left.png",
            "page.png",
            "rocket.jpg",
            "text.png",
        ),
    ),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
)

#: A background source: an ``(h, w, 3)`` uint8 BGR photograph, or ``None`` for "procedural texture".
BackgroundSource = np.ndarray | None

_CACHE: list[np.ndarray] | None = None


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (``None`` when not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_background_files() -> list[Path]:
    """Paths of the shipped photographs that exist in this environment, in a fixed order."""
    files: list[Path] = []
    for package, folder, names in _SHIPPED_PHOTOS:
        root = _package_dir(package)
        if root is None:
            continue
        files.extend(root / folder / name for name in names if (root / folder / name).is_file())
    return files


def load_backgrounds() -> list[np.ndarray]:
    """Load (once per process) the shipped photographs as ``(h, w, 3)`` uint8 BGR arrays.

    Grey-scale photographs are expanded to three channels. Returns an empty list, after a warning,
    when no photograph is available; :func:`random_background` then draws procedural textures.
    """
    global _CACHE
    if _CACHE is None:
        images: list[np.ndarray] = []
        for path in find_background_files():
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None and min(img.shape[:2]) >= 64:
                images.append(np.ascontiguousarray(img))
        if not images:
            warnings.warn(
                "no background photographs found (install scikit-image, scikit-learn or matplotlib: "
                'pip install "cvdeploy[zoo]"); using procedural textures instead',
                RuntimeWarning,
                stacklevel=2,
            )
        _CACHE = images
    return _CACHE


def _procedural(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random texture: multi-scale value noise plus a colour gradient, ``(size, size, 3)`` uint8."""
    img = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
        grid = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        img += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    grad = ramp[:, None, None] * c1[None, None, :] + (1.0 - ramp[:, None, None]) * c0[None, None, :]
    if rng.random() < 0.5:
        grad = grad.transpose(1, 0, 2)
    mixed = 0.6 * img + 0.4 * grad
    for _ in range(int(rng.integers(0, 6))):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.line(mixed, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter in HSV (hue shift, saturation and value gain) plus contrast, ``uint8`` in and out."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-18, 19))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.6, 1.4), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    contrast = rng.uniform(0.7, 1.3)
    mean = float(out.mean())
    return np.clip((out.astype(np.float32) - mean) * contrast + mean, 0, 255).astype(np.uint8)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 BGR background: a random crop of a shipped photograph.

    The crop is randomly scaled (the crop side is 0.35-1.0 of the photograph's short side), flipped
    and colour-jittered; with no photographs available it is a procedural texture.
    """
    photos = load_backgrounds()
    if not photos or rng.random() < 0.05:
        return _jitter(_procedural(rng, size), rng)
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 1.0))
    aspect = rng.uniform(0.8, 1.25)
    ch, cw = min(h, int(side * aspect)), min(w, int(side / aspect))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]
    img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.2:
        img = img[::-1]
    return _jitter(np.ascontiguousarray(img), rng)
