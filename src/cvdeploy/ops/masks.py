"""Instance masks from YOLO mask prototypes, straight into original-image pixels.

A segmentation head gives each detection ``nm`` coefficients and the image ``nm`` prototype maps at
a fraction (1/stride) of the input resolution; a detection's mask logits are ``coefficients @
prototypes``. They are resampled onto the original image and thresholded at 0 (sigmoid 0.5):

1. when the letterbox padding does not fall on whole prototype pixels, the logits are first
   upsampled (bilinear) by the smallest power of two that makes it do so;
2. the unpadded content of that grid is resized (bilinear) onto the original image.

This is the two-step resampling of Ultralytics' ``retina_masks``, so masks agree with Ultralytics'
pixel for pixel. Both steps are linear and separable, so each is a pair of small interpolation
matrices (rows, columns) and a detection's mask is ``Ay @ logits @ Axᵀ`` computed only for the rows
and columns of its box: memory and time follow the boxes' area, not ``detections × image``, and the
arithmetic is exact float32 (no fixed-point interpolation, which shifts thresholded edges).
Bilinear here is centre-aligned with edge clamping (``torch.nn.functional.interpolate``'s
``align_corners=False``, and ``cv2.resize``'s).
"""

from __future__ import annotations

import numpy as np

from cvdeploy.ops.letterbox import Geometry


def linear_weights(n_out: int, n_in: int, scale: float, offset: float = 0.0, start: int = 0) -> np.ndarray:
    """``(n_out, n_in)`` matrix of centre-aligned linear interpolation from ``n_in`` samples.

    Output ``i`` (counting from ``start``) samples the input at ``(i + ½)·scale − ½`` (clamped to the
    input's range) and ``offset`` is added to the index afterwards (for a crop inside a larger grid,
    given as ``n_in`` = the crop's size and ``offset`` its first index: the matrix is then over the grid).
    """
    i = np.arange(start, start + n_out, dtype=np.float64)
    src = np.clip((i + 0.5) * scale - 0.5, 0.0, None)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    width = n_in + int(offset)
    w = np.zeros((n_out, width), np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, i0 + int(offset)), 1.0 - lam)
    np.add.at(w, (rows, i1 + int(offset)), lam)
    return w


def masks_from_protos(
    coefficients: np.ndarray,
    protos: np.ndarray,
    boxes: np.ndarray,
    geometry: Geometry,
    input_hw: tuple[int, int],
) -> np.ndarray:
    """Full-image boolean masks, one per detection.

    coefficients: ``(k, nm)``; protos: ``(nm, mh, mw)``; boxes: ``(k, 4)`` xyxy in original pixels
    (a mask is cropped to its box); geometry: the image's letterbox/stretch mapping; input_hw: the
    model input ``(H, W)`` the prototypes cover. Returns ``(k, orig_h, orig_w)`` bool.
    """
    k = coefficients.shape[0]
    oh, ow = geometry.orig_height, geometry.orig_width
    out = np.zeros((k, oh, ow), bool)
    if k == 0:
        return out
    nm, mh, mw = protos.shape
    flat = protos.reshape(nm, -1).astype(np.float32)
    f = _upsample_factor(geometry, input_hw, (mh, mw))
    ay_full = _axis(oh, mh, f, input_hw[0], geometry.pad_y, geometry.scale_y)  # (oh, mh)
    ax_full = _axis(ow, mw, f, input_hw[1], geometry.pad_x, geometry.scale_x)  # (ow, mw)
    x1y1 = np.floor(boxes[:, :2]).astype(int).clip(0, [ow, oh])
    x2y2 = np.ceil(boxes[:, 2:]).astype(int).clip(0, [ow, oh])
    for i in range(k):
        x1, y1 = (int(v) for v in x1y1[i])
        x2, y2 = (int(v) for v in x2y2[i])
        if x2 <= x1 or y2 <= y1:
            continue
        logits = (coefficients[i].astype(np.float32) @ flat).reshape(mh, mw)
        region = ay_full[y1:y2] @ logits @ ax_full[x1:x2].T
        inside = region > 0.0
        # a pixel belongs to the box when its index lies in [x1, x2): crop to the exact box
        cols = np.arange(x1, x2)
        rows = np.arange(y1, y2)
        inside &= (cols >= boxes[i, 0]) & (cols < boxes[i, 2])
        inside &= ((rows >= boxes[i, 1]) & (rows < boxes[i, 3]))[:, None]
        out[i, y1:y2, x1:x2] = inside
    return out


def _axis(n_orig: int, n_proto: int, f: int, n_input: int, pad: float, scale: float) -> np.ndarray:
    """``(n_orig, n_proto)`` float32: prototype values → original pixels along one axis (both steps)."""
    stride = n_input / n_proto
    up = linear_weights(n_proto * f, n_proto, 1.0 / f) if f > 1 else np.eye(n_proto)  # step 1
    content = round(n_orig * scale)  # input pixels the image occupies (the letterbox's new size)
    start = int(round(pad * f / stride))  # the content's first pixel in the upsampled grid
    size = max(1, int(round(content * f / stride)))
    size = min(size, n_proto * f - start) if start < n_proto * f else 1
    down = linear_weights(n_orig, size, size / n_orig, offset=start)  # step 2: the content onto the image
    down = np.pad(down, ((0, 0), (0, max(0, n_proto * f - down.shape[1]))))[:, : n_proto * f]
    return (down @ up).astype(np.float32)


def _upsample_factor(geometry: Geometry, input_hw: tuple[int, int], proto_hw: tuple[int, int]) -> int:
    """Smallest power of two ``f`` (up to the prototype stride) at which the letterbox padding — the near
    side and the whole — is whole grid pixels on both axes."""
    stride_h, stride_w = input_hw[0] / proto_hw[0], input_hw[1] / proto_hw[1]
    if stride_h != stride_w or stride_h != int(stride_h) or stride_h < 1:
        return 1
    stride = int(stride_h)
    new_w = round(geometry.orig_width * geometry.scale_x)
    new_h = round(geometry.orig_height * geometry.scale_y)
    pads = (geometry.pad_x, geometry.pad_y, input_hw[1] - new_w, input_hw[0] - new_h)
    f = 1
    while f < stride and any((p * f / stride) % 1 for p in pads):
        f *= 2
    return f
