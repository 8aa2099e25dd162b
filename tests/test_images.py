"""JPEG decoding through libjpeg-turbo gives OpenCV's pixels, bit for bit, and falls back where it cannot."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvdeploy import images
from cvdeploy.errors import ImageError

SAMPLING = {
    "4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    # a real photograph at 1080p, odd crop so the chroma planes do not divide evenly
    img = images.sample_images(1)[0]
    return cv2.resize(img, (1921, 1079), interpolation=cv2.INTER_CUBIC)


def _opencv(data: bytes) -> np.ndarray:
    return images.to_bgr(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))


@pytest.mark.parametrize("quality", [60, 90, 98])
@pytest.mark.parametrize("sampling", list(SAMPLING))
def test_same_pixels_as_opencv(photo: np.ndarray, quality: int, sampling: str) -> None:
    pytest.importorskip("simplejpeg")
    _, buf = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, quality,
                                           cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLING[sampling]])  # fmt: skip
    data = buf.tobytes()
    fast = images._decode_jpeg_turbo(data)
    assert fast is not None, "a YCbCr JPEG takes the libjpeg-turbo path"
    np.testing.assert_array_equal(fast, _opencv(data))
    np.testing.assert_array_equal(images.decode_image(data), fast)


def test_progressive_and_grayscale_jpegs_match(photo: np.ndarray) -> None:
    pytest.importorskip("simplejpeg")
    _, prog = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    _, gray = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    for data in (prog.tobytes(), gray.tobytes()):
        out = images.decode_image(data)
        assert out.shape == (*photo.shape[:2], 3)
        np.testing.assert_array_equal(out, _opencv(data))


def test_without_simplejpeg_opencv_decodes(photo: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_simplejpeg(name: str, *args: object, **kwargs: object) -> object:
        if name == "simplejpeg":
            raise ImportError("hidden for the test")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    data = cv2.imencode(".jpg", photo)[1].tobytes()
    monkeypatch.setattr(builtins, "__import__", no_simplejpeg)
    assert images._decode_jpeg_turbo(data) is None
    np.testing.assert_array_equal(images.decode_image(data), _opencv(data))


def test_cut_jpeg_is_lenient_in_files_and_refused_from_the_wire(photo: np.ndarray) -> None:
    pytest.importorskip("simplejpeg")
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    cut = data[: len(data) // 2] + b"\xff\xd9"  # truncated scan with an end marker
    assert images.decode_image(cut).shape == (*photo.shape[:2], 3)  # a file on disk: decoded as before
    with pytest.raises(ImageError):
        images.decode_image_strict(cut)


def test_reduced_jpeg_decoding_maps_back_to_full_size_pixels(tmp_path: object) -> None:
    """With ``jpeg_dct_scaling`` a 1920-px JPEG is decoded at the smallest libjpeg-turbo scale (n/8) still
    at least the 640-px letterbox, and its boxes still land in full-size pixels, where a full decode puts them."""
    pytest.importorskip("simplejpeg")
    from pathlib import Path

    from cvdeploy.parity import detection_agreement
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.zoo.dataset import generate_dataset

    root = Path(str(tmp_path))
    data = generate_dataset(root / "d", images=6, seed=6161, splits=(0.0, 1.0, 0.0), progress=False)
    files = []
    for i, f in enumerate(sorted((data.parent / "images" / "val").glob("*.jpg"))):
        big = cv2.resize(cv2.imread(str(f)), (1920, 1920), interpolation=cv2.INTER_CUBIC)
        out = root / f"big{i}.jpg"
        cv2.imwrite(str(out), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
        files.append(out)
    exact = Pipeline.from_bundle("zoo:n")
    fast = Pipeline.from_bundle("zoo:n")
    fast.contract.input.jpeg_dct_scaling = True
    fast.preprocessor.spec.jpeg_dct_scaling = True
    img, orig = fast.preprocessor.decode(files[0].read_bytes())
    assert 640 <= img.shape[0] < 1920 and img.shape[0] == img.shape[1] and orig == (1920, 1920)
    ref, got = exact.predict(files), fast.predict(files)
    assert sum(len(r) for r in ref) >= 6, "the shapes must be found for this comparison to mean anything"
    agreement = detection_agreement(ref, got, iou=0.8)
    assert agreement is not None and agreement >= 0.9, agreement
    assert max(float(d.xyxy.max()) for d in got if len(d)) > 1000  # boxes are in full-size pixels


def test_small_images_and_other_formats_decode_in_full() -> None:
    from cvdeploy.contract import InputSpec
    from cvdeploy.preprocess import Preprocessor

    pre = Preprocessor(InputSpec(jpeg_dct_scaling=True))
    small = cv2.imencode(".jpg", np.full((700, 900, 3), 90, np.uint8))[1].tobytes()  # no halving fits 640
    png = cv2.imencode(".png", np.full((2000, 2000, 3), 90, np.uint8))[1].tobytes()
    for data, shape in ((small, (700, 900)), (png, (2000, 2000))):
        img, orig = pre.decode(data)
        assert img.shape[:2] == shape and orig is None


@pytest.mark.parametrize(
    ("size", "need", "expected"),
    [
        ((1080, 1920), (360, 640), (540, 960)),  # 3/8 would fit too; 1/2 is the SIMD scale
        ((1079, 1917), (360, 640), (540, 959)),  # odd sizes round up like libjpeg
        ((1080, 1920), (541, 960), (1080, 1920)),  # half too small: full size
        ((1080, 1920), (10, 10), (135, 240)),  # never below 1/8
    ],
)
def test_reduced_decoding_uses_power_of_two_scales(
    size: tuple[int, int], need: tuple[int, int], expected: tuple[int, int]
) -> None:
    img = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    out = images.decode_jpeg_reduced(data, *need)
    assert out is not None and out.shape[:2] == expected
