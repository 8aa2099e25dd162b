"""Images → model input tensor, exactly as the contract says."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from cvdeploy.contract import InputSpec
from cvdeploy.errors import InputError
from cvdeploy.images import to_bgr
from cvdeploy.ops.letterbox import Geometry, center_crop, fill_border, letterbox, letterbox_resized, stretch

#: Buffers reused up to this many bytes: a JPEG of 21 megapixels, a batch of 13 inputs at 640×640; larger
#: ones get their own array, so one odd upload or one huge batch does not stay alive per thread
_REUSE_MAX_BYTES = 64 << 20


class _Scratch(threading.local):
    """One thread's reused buffers (see :meth:`Preprocessor.into`)."""

    resized: np.ndarray | None = None  # H·W·3 uint8: the resized image (a letterbox's image part)
    planes: np.ndarray | None = None  # 3·H·W uint8: its three channels, one after the other
    # (n, 3, H, W) float32: the model input of :meth:`Preprocessor.reused_tensor`
    tensor: np.ndarray | None = None
    jpeg: np.ndarray | None = None  # decoded JPEG pixels


class Preprocessor:
    """Turns BGR uint8 images into one batched tensor and remembers each image's geometry.

    **Reused buffers.** A fresh multi-megabyte array per image costs its page faults again every
    time: glibc serves blocks that large with ``mmap`` and unmaps them when freed, so building a
    640×640 float32 input (4.9 MB) with ``blobFromImages`` in a loop took 1,300-1,900 page faults and
    3-4 ms a call here, more than the letterbox itself (``resource.getrusage``, AMD EPYC VM; how often
    depends on the process's allocation history — ``benchmarks/buffers.py`` measures whole requests). The
    NCHW float32 path (every YOLO contract) therefore resizes into a per-thread buffer and writes the
    tensor channel by channel into an array the caller passes (:meth:`into`): the image part converted,
    the letterbox padding filled in as its normalised value, so only the image part is resized, split
    and converted (a 16:9 photo fills 56 % of a square input; this made the preprocess stage of a 1080p
    JPEG ~0.13 ms shorter inside ``predict``, ``benchmarks/non_model.py``); ``Pipeline.predict``
    and ``bench`` pass a per-thread tensor they reuse (:meth:`reused_tensor`) and decode JPEGs into a
    per-thread buffer (:meth:`decode` with ``reuse``). ``__call__`` still returns a new tensor, which
    callers may keep. No library offers a letterbox + blob into an existing array (OpenCV's
    ``blobFromImages`` always allocates its output), hence the few lines of :meth:`into`.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._scratch = _Scratch()
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

    def __getstate__(self) -> dict[str, Any]:  # thread-local buffers are neither picklable nor worth copying
        state = dict(self.__dict__)
        state.pop("_scratch", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scratch = _Scratch()

    @property
    def direct(self) -> bool:
        """Whether :meth:`into` applies: an NCHW float32 input with one std for all channels."""
        s = self.spec
        return s.layout == "NCHW" and s.dtype == "float32" and s.std[0] == s.std[1] == s.std[2]

    def reused_tensor(self, n: int) -> np.ndarray:
        """An ``(n, 3, H, W)`` float32 array owned by the calling thread and handed out again by its next
        call: for a caller that is done with the tensor before it preprocesses the next batch. A batch over
        64 MB gets a new array each time."""
        s, sc = self.spec, self._scratch
        shape = (3, s.height, s.width)
        if n * 4 * 3 * s.height * s.width > _REUSE_MAX_BYTES:  # a large batch is not kept alive between calls
            return np.empty((n, *shape), np.float32)
        if sc.tensor is None or sc.tensor.shape[1:] != shape or sc.tensor.shape[0] < n:
            sc.tensor = np.empty((n, *shape), np.float32)
        return sc.tensor[:n]

    def _jpeg_buffer(self, nbytes: int) -> np.ndarray | None:
        if nbytes > _REUSE_MAX_BYTES:
            return None
        sc = self._scratch
        if sc.jpeg is None or sc.jpeg.size < nbytes:
            sc.jpeg = np.empty(nbytes, np.uint8)
        return sc.jpeg

    def into(self, img: np.ndarray, dst: np.ndarray, original: tuple[int, int] | None = None) -> Geometry:
        """Preprocess one BGR image into ``dst`` (``(3, H, W)`` float32, e.g. one row of a batch) and return
        its geometry: the same values as ``__call__`` (only for :attr:`direct` contracts).

        ``original``: the full ``(height, width)`` when ``img`` was decoded at a reduced scale."""
        s, sc = self.spec, self._scratch
        if not self.direct or dst.shape != (3, s.height, s.width) or dst.dtype != np.float32:
            raise ValueError(f"into() needs a direct contract and a (3, {s.height}, {s.width}) float32 row")
        img = to_bgr(img)
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise InputError(f"empty image of shape {img.shape}")
        if sc.resized is None or sc.planes is None or sc.resized.size != s.height * s.width * 3:
            sc.resized = np.empty(s.height * s.width * 3, np.uint8)
            sc.planes = np.empty(3 * s.height * s.width, np.uint8)
        flat = sc.planes
        if s.resize == "letterbox":
            # only the image part is resized, split and converted; the padding is written into the tensor
            # as its value after normalisation: a 16:9 image fills 56 % of a square input, and this row of
            # the tensor was evicted from the cache by the model's last run, so every byte written costs
            part, (top, left), geom = letterbox_resized(img, s.height, s.width, sc.resized)
        else:
            part, geom = self.resize(img)
            top, left = 0, 0
        nh, nw = part.shape[:2]
        planes = cv2.split(part, [flat[k * nh * nw : (k + 1) * nh * nw].reshape(nh, nw) for k in range(3)])
        # what blobFromImages computes, (x - mean) * factor in float32, one channel at a time; the padding
        # gets the same float32 operations on the pad value, so the row is bit for bit the padded image's
        factor = np.float32(s.scale / s.std[0])
        order = (2, 1, 0) if s.color == "RGB" else (0, 1, 2)
        for c, src in enumerate(order):
            mean = np.float32(s.mean[c] / s.scale)
            window = dst[c, top : top + nh, left : left + nw]
            if mean == 0:
                np.multiply(planes[src], factor, out=window, casting="unsafe")
                pad = np.float32(s.pad_value) * factor
            else:
                np.subtract(planes[src], mean, out=window, casting="unsafe")
                window *= factor
                pad = (np.float32(s.pad_value) - mean) * factor
            if (nh, nw) != (s.height, s.width):
                fill_border(dst[c], top, left, nh, nw, pad)
        if original is not None:
            geom = rescale(geom, img.shape[:2], original)
        return geom

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
        if self.direct:
            s = self.spec
            tensor = np.empty((len(images), 3, s.height, s.width), np.float32)
            origs = list(originals or ()) + [None] * (len(images) - len(originals or ()))
            return tensor, [
                self.into(im, tensor[i], o) for i, (im, o) in enumerate(zip(images, origs, strict=True))
            ]
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

    def decode(
        self, data: bytes, source: str = "image", reuse: bool = False
    ) -> tuple[np.ndarray, tuple[int, int] | None]:
        """Encoded bytes → BGR image, at a reduced JPEG DCT scale when the contract allows it.

        Returns the image and, when it was decoded reduced, the full image's ``(height, width)`` to give
        ``__call__`` (otherwise None). ``reuse``: a JPEG is decoded into this thread's buffer, so the
        image is valid only until the thread's next ``decode(..., reuse=True)``.
        """
        from cvdeploy.images import decode_image, decode_jpeg_reduced, jpeg_size

        buffer = self._jpeg_buffer if reuse else None
        if self.spec.jpeg_dct_scaling:
            size = jpeg_size(data)
            if size is not None:
                need = self.needed_size(*size)
                if need[0] * 2 <= size[0] and need[1] * 2 <= size[1]:  # at least one halving fits
                    img = decode_jpeg_reduced(data, *need, buffer=buffer, size=size)
                    if img is not None and img.shape[:2] != size:
                        return img, size
                    if img is not None:
                        return img, None
        return decode_image(data, source, buffer=buffer), None


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
