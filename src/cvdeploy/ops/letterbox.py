"""Resizing an image to a model's input: letterbox, stretch or centre crop, and the way back.

Letterbox follows the Ultralytics geometry exactly so that boxes agree with Ultralytics' own
predictions on the same ONNX file: ``r = min(H/h, W/w)``, new size ``(round(w r), round(h r))``
with INTER_LINEAR, padding split evenly with ``round(d/2 ∓ 0.1)`` on the two sides; the way back
uses each axis' exact scale ``new/old``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """How an original image maps into the model input: ``model = orig * (sx, sy) + (pad_x, pad_y)``."""

    orig_height: int
    orig_width: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(n, 4)`` xyxy boxes in model-input pixels back to original-image pixels, clipped."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.orig_width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.orig_height)
        return out

    def to_model(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(n, 4)`` xyxy boxes in original pixels into model-input pixels."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale_x + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale_y + self.pad_y
        return out


def letterbox_layout(
    h: int, w: int, height: int, width: int, scaleup: bool = True
) -> tuple[tuple[int, int], tuple[int, int, int, int], Geometry]:
    """Where an ``h`` × ``w`` image goes in a ``height`` × ``width`` letterbox: its resized ``(new_w, new_h)``,
    the padding ``(top, bottom, left, right)`` and the geometry."""
    r = min(height / h, width / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    new_w, new_h = max(1, min(new_w, width)), max(1, min(new_h, height))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    # rounding can leave the sum one pixel off the target on odd sizes; put it on the far side
    bottom += height - (new_h + top + bottom)
    right += width - (new_w + left + right)
    # the resized image holds new_w x new_h pixels for w x h: the per-axis scale is exactly that ratio (the
    # rounding of the new size makes it differ from r by up to half a pixel over the image, as Ultralytics accounts)
    return (
        (new_w, new_h),
        (top, bottom, left, right),
        Geometry(h, w, new_w / w, new_h / h, float(left), float(top)),
    )


def letterbox(
    img: np.ndarray, height: int, width: int, pad_value: int = 114, scaleup: bool = True
) -> tuple[np.ndarray, Geometry]:
    """Resize keeping aspect ratio and pad to ``(height, width)``; returns the image and its geometry."""
    h, w = img.shape[:2]
    (new_w, new_h), (top, bottom, left, right), geom = letterbox_layout(h, w, height, width, scaleup)
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(
            img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value, pad_value, pad_value)
        )
    return img, geom


def letterbox_resized(
    img: np.ndarray, height: int, width: int, buffer: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int], Geometry]:
    """The image part of :func:`letterbox` alone, without the padding: the image resized as the letterbox
    resizes it, its ``(top, left)`` offset in the ``height`` × ``width`` input and the geometry. For a
    caller that writes the padding itself, straight into the model's tensor (:func:`fill_border`).

    ``buffer``: a flat array of ``img``'s dtype the resized image is written into when it is large enough
    (the result is then a view of it); ``img`` itself is returned when no resize is needed."""
    h, w = img.shape[:2]
    (new_w, new_h), (top, _, left, _), geom = letterbox_layout(h, w, height, width)
    if (w, h) == (new_w, new_h):
        return img, (top, left), geom
    n = new_h * new_w * img.shape[2]
    fits = buffer is not None and buffer.size >= n and buffer.dtype == img.dtype and img.ndim == 3
    out = buffer[:n].reshape(new_h, new_w, img.shape[2]) if fits and buffer is not None else None
    return cv2.resize(img, (new_w, new_h), dst=out, interpolation=cv2.INTER_LINEAR), (top, left), geom


def fill_border(plane: np.ndarray, top: int, left: int, height: int, width: int, value: float) -> None:
    """Set every element of a 2-D ``plane`` outside the ``height`` × ``width`` rectangle at ``(top, left)``
    to ``value`` (the letterbox padding of one channel)."""
    plane[:top] = value
    plane[top + height :] = value
    plane[top : top + height, :left] = value
    plane[top : top + height, left + width :] = value


def stretch(img: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Geometry]:
    """Resize to ``(height, width)`` ignoring aspect ratio."""
    h, w = img.shape[:2]
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return out, Geometry(h, w, width / w, height / h, 0.0, 0.0)


def center_crop(
    img: np.ndarray, height: int, width: int, crop_fraction: float = 1.0
) -> tuple[np.ndarray, Geometry]:
    """Resize the short side to fit, then crop the centre to ``(height, width)`` (classification style).

    ``crop_fraction`` < 1 resizes the short side to ``size / crop_fraction`` first (torchvision's
    ImageNet evaluation: resize 256, crop 224 is 0.875).
    """
    h, w = img.shape[:2]
    r = max(height / h, width / w) / crop_fraction
    new_w, new_h = max(width, int(round(w * r))), max(height, int(round(h * r)))
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    out = resized[top : top + height, left : left + width]
    return out, Geometry(h, w, new_w / w, new_h / h, -float(left), -float(top))
