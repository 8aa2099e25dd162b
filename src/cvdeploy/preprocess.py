"""Images → model input tensor, exactly as the contract says."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cvdeploy.contract import InputSpec
from cvdeploy.errors import InputError
from cvdeploy.images import to_bgr
from cvdeploy.ops.letterbox import Geometry, center_crop, letterbox, stretch


class Preprocessor:
    """Turns BGR uint8 images into one batched tensor and remembers each image's geometry."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        self._identity_norm = bool(np.all(mean == 0) and np.all(std == 1))
        # fold scale and normalisation into one multiply-add: x * a + b
        self._a = (spec.scale / std).astype(np.float32)
        self._b = (-mean / std).astype(np.float32)

    def resize(
        self, img: np.ndarray, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, Geometry]:
        """Resize one ``(h, w, 3)`` BGR image to the input size; returns it and its geometry."""
        s = self.spec
        h, w = height or s.height, width or s.width
        img = to_bgr(img)
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise InputError(f"empty image of shape {img.shape}")
        if s.resize == "letterbox":
            return letterbox(img, h, w, s.pad_value)
        if s.resize == "stretch":
            return stretch(img, h, w)
        return center_crop(img, h, w, s.crop_fraction)

    def to_tensor(self, resized: Sequence[np.ndarray]) -> np.ndarray:
        """Stack resized BGR images into the model's layout, colour order, dtype and scale."""
        s = self.spec
        std = s.std
        if s.layout == "NCHW" and s.dtype == "float32" and std[0] == std[1] == std[2]:
            # OpenCV's blob builder does swap, scale, mean and HWC→CHW in one C++ pass (3x faster than
            # numpy at 640); it computes (x - mean') * factor, so mean/std are folded into pixel units
            factor = s.scale / std[0]
            mean = tuple(m / s.scale for m in s.mean)
            h, w = resized[0].shape[:2]
            return np.ascontiguousarray(
                cv2.dnn.blobFromImages(
                    list(resized),
                    factor,
                    (w, h),
                    mean,
                    swapRB=s.color == "RGB",
                    crop=False,
                    ddepth=cv2.CV_32F,
                )
            )
        batch = np.stack(resized)  # (b, h, w, 3) BGR uint8
        if self.spec.color == "RGB":
            batch = batch[..., ::-1]
        if self.spec.dtype == "uint8":
            out = np.ascontiguousarray(batch)
        else:
            out = batch.astype(np.float32)
            if self._identity_norm:
                out *= np.float32(self.spec.scale)
            else:
                out = out * self._a + self._b
        if self.spec.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        out = np.ascontiguousarray(out)
        if self.spec.dtype == "float16":
            out = out.astype(np.float16)
        return out

    def __call__(
        self, images: Sequence[np.ndarray], originals: Sequence[tuple[int, int] | None] | None = None
    ) -> tuple[np.ndarray, list[Geometry]]:
        """``images``: BGR arrays of any size → ``(b, 3, H, W)`` (or NHWC) tensor and geometries.

        ``originals``: per image, its full ``(height, width)`` when it was decoded at a reduced scale
        (:meth:`decode`); the geometries then map back to the full image's pixels.
        """
        if len(images) == 0:
            raise InputError("no images to preprocess")
        resized, geoms = zip(*(self.resize(im) for im in images), strict=True)
        out = list(geoms)
        for i, orig in enumerate(originals or ()):
            if orig is not None:
                out[i] = rescale(out[i], images[i].shape[:2], orig)
        return self.to_tensor(resized), out

    def needed_size(self, height: int, width: int) -> tuple[int, int]:
        """The smallest ``(height, width)`` an image of this size may be decoded at and still be resized
        *down* to the model input (letterbox: the resized image; stretch: the input; crop: its resize)."""
        s = self.spec
        if s.resize == "letterbox":
            r = min(s.height / height, s.width / width)
            return int(np.ceil(height * r)), int(np.ceil(width * r))
        if s.resize == "stretch":
            return s.height, s.width
        r = max(s.height / height, s.width / width) / s.crop_fraction
        return int(np.ceil(height * r)), int(np.ceil(width * r))

    def decode(self, data: bytes, source: str = "image") -> tuple[np.ndarray, tuple[int, int] | None]:
        """Encoded bytes → BGR image, at a reduced JPEG DCT scale when the contract allows it.

        Returns the image and, when it was decoded reduced, the full image's ``(height, width)`` to give
        ``__call__`` (otherwise None).
        """
        from cvdeploy.images import decode_image, decode_jpeg_reduced, jpeg_size

        if self.spec.jpeg_dct_scaling:
            size = jpeg_size(data)
            if size is not None:
                need = self.needed_size(*size)
                if need[0] * 2 <= size[0] and need[1] * 2 <= size[1]:  # at least one halving fits
                    img = decode_jpeg_reduced(data, *need)
                    if img is not None and img.shape[:2] != size:
                        return img, size
                    if img is not None:
                        return img, None
        return decode_image(data, source), None


def rescale(geom: Geometry, decoded: tuple[int, int], original: tuple[int, int]) -> Geometry:
    """The geometry of an image decoded at ``decoded`` ``(h, w)`` re-expressed for its ``original`` size."""
    (dh, dw), (oh, ow) = decoded, original
    return Geometry(oh, ow, geom.scale_x * dw / ow, geom.scale_y * dh / oh, geom.pad_x, geom.pad_y)


def resize_bgr(img: np.ndarray, size: int) -> np.ndarray:
    """Downscale so the long side is at most ``size`` (for thumbnails and reports)."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
