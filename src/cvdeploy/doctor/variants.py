"""Plausible ways a deployment's preprocessing deviates from the contract, each a deviant contract.

Every variant changes one thing (colour order, resize mode, scaling/normalisation, pad value, input
size) on a deep copy of the contract, so the very same :class:`~cvdeploy.preprocess.Preprocessor`
and :class:`~cvdeploy.decode.Decoder` that production uses simulate it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cvdeploy.contract import Contract, InputSpec

#: Normalisations people use, as (label, scale, mean, std) in the contract's terms: x * scale, then (x - mean) / std.
NORMALISATIONS: tuple[tuple[str, float, list[float], list[float]], ...] = (
    ("pixels / 255", 1 / 255, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    ("ImageNet mean/std after / 255", 1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ("no scaling (0-255)", 1.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    ("pixels / 127.5 - 1 (-1 to 1)", 1 / 127.5, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
)
PAD_VALUES = (0, 114, 127, 128, 255)
#: Input sizes deployments commonly use (Ultralytics' defaults and their usual alternatives).
SIZES = (224, 256, 320, 416, 480, 512, 640, 768, 800, 960, 1024, 1280)
RESIZE_WORDS = {"letterbox": "letterboxes", "stretch": "stretches", "center_crop": "centre-crops"}


@dataclass(frozen=True)
class Variant:
    """One deviation: the finding id it supports, what it is, and the deviant contract."""

    key: str  # short unique label, e.g. "color=BGR"
    finding: str  # a finding id of cvdeploy.doctor.findings
    description: str  # what the deployment does, e.g. "feeds BGR (the contract says RGB)"
    fix: str
    contract: Contract
    title: str = ""  # overrides the finding's catalogue title
    decode: Callable[[Path], np.ndarray] | None = None  # reads the image another way than cvdeploy does


def _deviant(contract: Contract, **changes: object) -> Contract:
    c = contract.model_copy(deep=True)
    for k, v in changes.items():
        setattr(c.input, k, v)
    return c


def _same_norm(spec: InputSpec, scale: float, mean: list[float], std: list[float]) -> bool:
    return (
        abs(spec.scale - scale) < 1e-9
        and all(abs(a - b) < 1e-6 for a, b in zip(spec.mean, mean, strict=True))
        and all(abs(a - b) < 1e-6 for a, b in zip(spec.std, std, strict=True))
    )


def describe_norm(spec: InputSpec) -> str:
    for label, scale, mean, std in NORMALISATIONS:
        if _same_norm(spec, scale, mean, std):
            return label
    return f"scale {spec.scale:.6g}, mean {spec.mean}, std {spec.std}"


def other_sizes(spec: InputSpec, low: float = 0.5, high: float = 1.5) -> list[tuple[int, int]]:
    """Common input sizes within ``low``–``high`` times the contract's, stride multiples, nearest first."""
    h, w = spec.height, spec.width
    out = []
    for s in SIZES:
        r = s / max(h, w)
        if not low <= r <= high or s == max(h, w):
            continue
        nh, nw = (
            (s, s)
            if h == w
            else (round(h * r / spec.stride) * spec.stride, round(w * r / spec.stride) * spec.stride)
        )
        if nh % spec.stride or nw % spec.stride or min(nh, nw) < spec.stride:
            continue
        out.append((nh, nw))
    return sorted(set(out), key=lambda hw: abs(hw[0] - h))


def preprocessing_variants(contract: Contract, sizes: bool = True) -> list[Variant]:
    """Every single-setting deviation worth testing; input sizes only when the model can run them."""
    spec = contract.input
    out: list[Variant] = []
    other = "BGR" if spec.color == "RGB" else "RGB"
    out.append(Variant(f"color={other}", "preprocess.channel_order",
                       f"feeds {other} images (the contract says {spec.color})",
                       f"feed {spec.color}: swap the colour channels before the model (cv2.cvtColor(img, "
                       f"cv2.COLOR_{other}2{spec.color})), or run images through cvdeploy's Pipeline",
                       _deviant(contract, color=other)))  # fmt: skip
    for mode in ("letterbox", "stretch", "center_crop"):
        if mode != spec.resize:
            out.append(Variant(f"resize={mode}", "preprocess.resize",
                               f"{RESIZE_WORDS[mode]} images (the contract {RESIZE_WORDS[spec.resize]})",
                               f"{spec.resize.replace('_', ' ')} images to {spec.height}x{spec.width} as the contract "
                               "says, and map boxes back through the same geometry",
                               _deviant(contract, resize=mode)))  # fmt: skip
    current = describe_norm(spec)
    for label, scale, mean, std in NORMALISATIONS:
        if not _same_norm(spec, scale, mean, std):
            out.append(Variant(f"norm={label}", "preprocess.normalization",
                               f"normalises as {label} (the contract: {current})",
                               f"normalise as the contract says: {current}",
                               _deviant(contract, scale=scale, mean=list(mean), std=list(std))))  # fmt: skip
    if spec.resize == "letterbox":
        for pad in PAD_VALUES:
            if pad != spec.pad_value:
                out.append(Variant(f"pad={pad}", "preprocess.pad_value",
                                   f"pads the letterbox with {pad} (the contract: {spec.pad_value})",
                                   f"pad the letterbox with {spec.pad_value}",
                                   _deviant(contract, pad_value=pad)))  # fmt: skip
    if sizes:
        for h, w in other_sizes(spec):
            out.append(Variant(f"size={h}x{w}", "preprocess.input_size",
                               f"feeds {h}x{w} (the contract: {spec.height}x{spec.width})",
                               f"feed the model {spec.height}x{spec.width} as the contract says",
                               _deviant(contract, height=h, width=w)))  # fmt: skip
    return out


def exif_orientation(path: Path) -> int | None:
    """The EXIF orientation tag of an image file (1 = as stored), or None when it has none."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112)
    except Exception:  # unreadable files are reported by the reader that decodes them
        return None
    return int(value) if value else None


def decode_with_exif(path: Path) -> np.ndarray:
    """The image as viewers (and ``cv2.imread``, Ultralytics, PIL's ``exif_transpose``) show it: EXIF orientation applied."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode {path}")
    return img


def exif_variant(contract: Contract, paths: Sequence[Path]) -> Variant | None:
    """The deployment applies EXIF orientation, which cvdeploy does not (pixels as stored) — only when some
    image carries an orientation other than 1."""
    rotated = [p for p in paths if exif_orientation(p) not in (None, 1)]
    if not rotated:
        return None
    return Variant("exif=applied", "preprocess.resize",
                   f"rotates/flips images by their EXIF orientation ({len(rotated)} of the images carry one); "
                   "cvdeploy reads pixels as stored",
                   "decode images the same way on both sides: rotate them upright before sending (PIL "
                   "ImageOps.exif_transpose) so that no reader depends on the EXIF tag",
                   contract.model_copy(deep=True), title="image orientation (EXIF) differs from the contract",
                   decode=decode_with_exif)  # fmt: skip


def at_size(contract: Contract, height: int, width: int) -> Contract:
    """The contract at another input size (what a deployment feeding that size would use otherwise)."""
    return _deviant(contract, height=height, width=width)
