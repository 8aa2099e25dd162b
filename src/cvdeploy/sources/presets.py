"""Preprocessing and decoding presets for the common model families (``--preset NAME``).

A preset is a partial contract: the values a family was trained with, so that nothing about it is
guessed. Values the model itself states (a fixed input size, Ultralytics metadata) still win over
the preset's size; flags and ``--contract`` win over both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class Preset:
    """What a family of models expects; ``summary`` is printed on import."""

    name: str
    summary: str
    task: str | None = None
    format: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "yolo",
            "Ultralytics/YOLO: letterbox (pad 114), RGB, /255, no mean/std",
            input={
                "resize": "letterbox",
                "pad_value": 114,
                "color": "RGB",
                "scale": 1 / 255,
                "mean": [0.0, 0.0, 0.0],
                "std": [1.0, 1.0, 1.0],
            },
        ),
        Preset(
            "imagenet",
            "torchvision/timm ImageNet classifier: resize 256 + centre crop 224, RGB, /255, ImageNet mean/std",
            task="classify",
            format="classify",
            input={
                "resize": "center_crop",
                "crop_fraction": 0.875,
                "height": 224,
                "width": 224,
                "color": "RGB",
                "scale": 1 / 255,
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
        ),
        Preset(
            "picodet",
            "PaddleDetection PicoDet (exported without NMS): stretch resize, RGB, /255, ImageNet mean/std; "
            "outputs boxes (N, 4) xyxy and scores (nc, N)",
            task="detect",
            format="boxes_scores",
            input={
                "resize": "stretch",
                "color": "RGB",
                "scale": 1 / 255,
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
            output={"iou": 0.6},
        ),
        Preset(
            "raw",
            "raw: no decoding (tensors in, tensors out); stretch resize, RGB, /255 — give the real values with "
            "--contract",
            task="raw",
            format="raw",
            input={"resize": "stretch", "color": "RGB", "scale": 1 / 255},
        ),
    )
}


def preset(name: str) -> Preset:
    from cvdeploy.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def describe_input(spec: Any) -> str:
    """One line of the preprocessing an :class:`~cvdeploy.contract.InputSpec` does, with its values."""
    resize = {"letterbox": f"letterbox (pad {spec.pad_value})", "stretch": "stretch",
              "center_crop": f"centre crop (fraction {spec.crop_fraction:g})"}[spec.resize]  # fmt: skip
    scale = "/255" if abs(spec.scale - 1 / 255) < 1e-9 else f"×{spec.scale:g}"
    return (f"{resize} to {spec.height}x{spec.width}, {spec.color}, {scale}, mean {[round(m, 4) for m in spec.mean]}, "
            f"std {[round(s, 4) for s in spec.std]}, {spec.layout} {spec.dtype}")  # fmt: skip
