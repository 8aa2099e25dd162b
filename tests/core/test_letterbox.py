"""Letterbox geometry: exact Ultralytics arithmetic on awkward sizes, and the way back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.contract import InputSpec
from cvdeploy.ops.letterbox import center_crop, fill_border, letterbox, letterbox_resized, stretch
from cvdeploy.preprocess import Preprocessor


# (h, w) -> expected (new_h, new_w, top, bottom, left, right) for a 640x640 target, computed by hand:
# r = min(640/h, 640/w); new = round(side * r); pads round(d/2 - 0.1) / round(d/2 + 0.1)
@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (1080, 810, (640, 480, 0, 0, 80, 80)),
        (720, 1280, (360, 640, 140, 140, 0, 0)),
        (1, 1, (640, 640, 0, 0, 0, 0)),
        (20, 5000, (3, 640, 318, 319, 0, 0)),  # r = 0.128, 20 r = 2.56 -> 3, pads 318.5 -> 318 / 319
        (480, 640, (480, 640, 80, 80, 0, 0)),
        (641, 640, (640, 639, 0, 0, 0, 1)),  # 640 * 640/641 = 639.0 -> dw 0.5 -> left 0, right 1
    ],
)
def test_letterbox_geometry(h: int, w: int, expected: tuple[int, ...]) -> None:
    new_h, new_w, top, bottom, left, right = expected
    img = np.full((h, w, 3), 7, np.uint8)
    out, geom = letterbox(img, 640, 640)
    assert out.shape == (640, 640, 3)
    assert geom.pad_x == left and geom.pad_y == top
    assert round(w * geom.scale_x) == new_w and round(h * geom.scale_y) == new_h
    # the image occupies exactly [top, top+new_h) x [left, left+new_w); the rest is pad 114
    inner = out[top : top + new_h, left : left + new_w]
    assert (inner == 7).all()
    mask = np.ones((640, 640), bool)
    mask[top : top + new_h, left : left + new_w] = False
    assert (out[mask] == 114).all()
    assert top + new_h + bottom == 640 and left + new_w + right == 640


@pytest.mark.parametrize("size", [(1080, 810), (720, 1280), (20, 5000), (333, 517)])
def test_round_trip_boxes(size: tuple[int, int]) -> None:
    h, w = size
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, w - 2, 20)
    y1 = rng.uniform(0, h - 2, 20)
    boxes = np.stack(
        [x1, y1, np.minimum(x1 + rng.uniform(1, w, 20), w), np.minimum(y1 + rng.uniform(1, h, 20), h)], 1
    )
    _, geom = letterbox(np.zeros((h, w, 3), np.uint8), 640, 640)
    back = geom.to_original(geom.to_model(boxes.astype(np.float32)))
    np.testing.assert_allclose(back, boxes, atol=1e-2 * max(1.0, 1 / geom.scale_x))


def test_matches_ultralytics_letterbox_pixels() -> None:
    augment = pytest.importorskip("ultralytics.data.augment")
    rng = np.random.default_rng(1)
    for h, w in [(1080, 810), (720, 1280), (20, 5000), (333, 517)]:
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ours, _ = letterbox(img, 640, 640)
        theirs = augment.LetterBox((640, 640), auto=False, stride=32)(image=img)
        assert ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), f"pixels differ for {h}x{w}"


@pytest.mark.parametrize(
    ("image", "what"),
    [
        (np.full((50, 80), 200, np.uint8), "grayscale"),
        (np.full((50, 80, 4), 200, np.uint8), "RGBA"),
        (np.full((50, 80, 1), 200, np.uint8), "single channel"),
    ],
)
def test_preprocess_accepts_gray_and_alpha(image: np.ndarray, what: str) -> None:
    tensor, geoms = Preprocessor(InputSpec(height=64, width=64))([image])
    assert tensor.shape == (1, 3, 64, 64), what
    assert tensor.dtype == np.float32
    # letterboxed content is 200/255, padding 114/255
    assert np.isclose(tensor[0, :, 32, 32], 200 / 255).all()
    assert np.isclose(tensor[0, :, 0, 0], 114 / 255).all()
    assert geoms[0].orig_height == 50


def test_preprocess_colour_order_mean_std_and_layout() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # BGR
    spec = InputSpec(height=32, width=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], layout="NHWC")
    t, _ = Preprocessor(spec)([img])
    assert t.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(t[0, 0, 0], (np.array([30, 20, 10]) / 255 - 0.5) / 0.25, rtol=1e-6)
    t_bgr, _ = Preprocessor(InputSpec(height=32, width=32, color="BGR"))([img])
    np.testing.assert_allclose(t_bgr[0, :, 0, 0], np.array([10, 20, 30]) / 255, rtol=1e-6)


def test_stretch_and_center_crop_geometry() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    out, g = stretch(img, 50, 50)
    assert out.shape == (50, 50, 3) and g.scale_x == 0.25 and g.scale_y == 0.5
    out, g = center_crop(img, 50, 50)
    assert out.shape == (50, 50, 3)
    assert g.scale_x == g.scale_y == 0.5 and g.pad_x == -25.0 and g.pad_y == 0.0


# ---- the reused-buffer path (Preprocessor.into / Pipeline.load) against the allocating blob path ----


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(height=64, width=64),
        InputSpec(height=64, width=96, color="BGR"),
        InputSpec(height=64, width=64, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5]),
        InputSpec(height=48, width=64, resize="stretch"),
        InputSpec(height=64, width=64, resize="center_crop", crop_fraction=0.875),
    ],
    ids=["letterbox", "bgr-wide", "mean-std", "stretch", "center-crop"],
)
def test_into_gives_the_blob_path_values(spec: InputSpec) -> None:
    pre = Preprocessor(spec)
    assert pre.direct
    rng = np.random.default_rng(3)
    # landscape, portrait, exact size, upscaled, odd: every letterbox layout, padding on each side
    sizes = [(100, 200), (200, 90), (spec.height, spec.width), (10, 13), (641, 333)]
    images = [rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for hw in sizes]
    resized, geoms = zip(*(pre.resize(im) for im in images), strict=True)
    reference = pre.to_tensor(resized)  # OpenCV's blobFromImages, a new array
    tensor, got = pre(images)
    np.testing.assert_allclose(tensor, reference, rtol=1e-6, atol=1e-7)
    if spec.mean == [0.0, 0.0, 0.0]:
        assert np.array_equal(tensor, reference)  # the same float32 multiply, bit for bit
    assert list(got) == list(geoms)
    # one row at a time into a reused array: the same values, whatever the previous image left behind
    row = np.full((3, spec.height, spec.width), np.nan, np.float32)
    for i, im in enumerate(images):
        assert pre.into(im, row) == geoms[i]
        assert np.array_equal(row, tensor[i])


@pytest.mark.parametrize("hw", [(1080, 1920), (1920, 1080), (640, 640), (10, 13), (641, 333)])
def test_resized_part_plus_border_is_the_letterbox(hw: tuple[int, int]) -> None:
    """What ``into`` builds from: the image part alone (into a reused buffer, or the image itself when no
    resize is needed) plus the border filled around it gives the letterbox's pixels and geometry."""
    img = np.random.default_rng(1).integers(0, 255, (*hw, 3), dtype=np.uint8)
    ref, ref_geom = letterbox(img, 640, 640)
    buffer = np.zeros(640 * 640 * 3, np.uint8)
    part, (top, left), geom = letterbox_resized(img, 640, 640, buffer)
    assert geom == ref_geom
    if hw == (640, 640):
        assert part is img  # nothing to resize: no copy
    else:
        assert np.shares_memory(part, buffer)  # written into the buffer, not a new array
    canvas = np.full((640, 640, 3), 7, np.uint8)
    nh, nw = part.shape[:2]
    canvas[top : top + nh, left : left + nw] = part
    for c in range(3):
        plane = canvas[:, :, c].copy()
        fill_border(plane, top, left, nh, nw, 114)
        canvas[:, :, c] = plane
    assert np.array_equal(canvas, ref)
    assert (
        letterbox_resized(img, 640, 640, np.zeros(10, np.uint8))[0].shape == part.shape
    )  # too small: a new array


def test_into_refuses_layouts_it_does_not_build() -> None:
    pre = Preprocessor(InputSpec(height=32, width=32, layout="NHWC"))
    assert not pre.direct
    with pytest.raises(ValueError, match="direct contract"):
        pre.into(np.zeros((8, 8, 3), np.uint8), np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="float32 row"):
        Preprocessor(InputSpec(height=32, width=32)).into(
            np.zeros((8, 8, 3), np.uint8), np.zeros((3, 16, 16), np.float32)
        )


def test_reused_tensor_and_jpeg_buffer_belong_to_one_thread() -> None:
    import threading

    import cv2

    pre = Preprocessor(InputSpec(height=32, width=32))
    a = pre.reused_tensor(2)
    assert pre.reused_tensor(1).ctypes.data == a.ctypes.data  # a smaller batch is a view of the same array
    assert pre.reused_tensor(3).shape == (3, 3, 32, 32)  # a larger one grows it
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(pre.reused_tensor(3)))
    t.start()
    t.join()
    assert other[0].ctypes.data != pre.reused_tensor(3).ctypes.data
    rng = np.random.default_rng(5)
    jpegs = [cv2.imencode(".jpg", rng.integers(0, 255, (*hw, 3), dtype=np.uint8))[1].tobytes()
             for hw in ((40, 60), (30, 20))]  # fmt: skip
    fresh = [pre.decode(j)[0].copy() for j in jpegs]
    first, _ = pre.decode(jpegs[0], reuse=True)
    assert np.array_equal(first, fresh[0])
    second, _ = pre.decode(jpegs[1], reuse=True)
    assert np.array_equal(second, fresh[1])
    assert second.ctypes.data == first.ctypes.data  # decoded into the same buffer
    # and a pickled copy (Ray ships pipelines to replicas) starts with buffers of its own
    import pickle

    clone = pickle.loads(pickle.dumps(pre))
    assert clone.reused_tensor(3).ctypes.data != pre.reused_tensor(3).ctypes.data


def test_predict_through_reused_buffers_equals_the_allocating_path(tmp_path: Path) -> None:
    """``predict`` (files decoded into the thread's buffer, rows written in place, one tensor reused across
    calls and batches) gives exactly the results of decode → ``__call__`` → infer → decode."""
    import cv2

    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.zoo.dataset import generate_image

    pipe = Pipeline.from_bundle("zoo:n", "onnx-fp32")  # trained: real boxes to compare
    files = []
    for i, size in enumerate(((640, 480), (300, 700), (1000, 1000))):  # (w, h): padding on each axis
        img = cv2.resize(generate_image(77, i)[0], size)
        files.append(tmp_path / f"{i}.jpg")
        cv2.imwrite(str(files[-1]), img)
    arrays = [decode_image(f.read_bytes()) for f in files]
    tensor, geoms = pipe.preprocess(arrays)
    expected = pipe.decode(pipe.infer(tensor), geoms)
    assert sum(len(r.xyxy) for r in expected) > 0  # boxes to compare
    for batch in (1, 2, 3):
        got = pipe.predict(files, batch_size=batch)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a.xyxy, b.xyxy)
            np.testing.assert_array_equal(a.confidence, b.confidence)
            np.testing.assert_array_equal(a.class_id, b.class_id)
    t1, _, _ = pipe.load(files[:2])
    t2, _, _ = pipe.load([files[2]])
    assert t1.ctypes.data == t2.ctypes.data  # the same array, not a new one per call


def test_a_huge_batch_is_not_kept_alive_between_calls() -> None:
    pre = Preprocessor(InputSpec(height=640, width=640))
    small = pre.reused_tensor(2)
    assert pre.reused_tensor(2).ctypes.data == small.ctypes.data
    big = pre.reused_tensor(20)  # 20 x 4.9 MB: over the 64 MB kept per thread
    assert big.shape == (20, 3, 640, 640)
    assert pre.reused_tensor(2).ctypes.data == small.ctypes.data  # the kept buffer did not grow to it
