"""The zoo detector: sizes, the yolov8 output layout, ONNX traceability and checkpoints."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvdeploy.zoo.classes import CLASS_NAMES, STRIDES  # noqa: E402
from cvdeploy.zoo.model import Detector, build_model, build_n, build_s, count_parameters  # noqa: E402


def _n_anchors(h: int, w: int) -> int:
    return sum((h // s) * (w // s) for s in STRIDES)


@pytest.mark.parametrize(("size", "low", "high"), [("n", 0, 1_500_000), ("s", 3_000_000, 6_000_000)])
def test_parameter_counts(size: str, low: int, high: int) -> None:
    assert low <= count_parameters(build_model(size)) <= high


def test_s_is_larger_than_n() -> None:
    assert count_parameters(build_s()) > 2 * count_parameters(build_n())


@pytest.mark.parametrize("factory", [build_n, build_s])
def test_factories_build_the_default_classes(factory) -> None:  # type: ignore[no-untyped-def]
    model = factory()
    assert isinstance(model, Detector) and model.nc == len(CLASS_NAMES)


def test_unknown_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model size"):
        build_model("xl")


@pytest.mark.parametrize(
    ("size", "batch", "h", "w"),
    [("n", 2, 640, 640), ("n", 1, 320, 320), ("n", 1, 256, 384), ("s", 1, 320, 320)],
)
def test_eval_output_is_yolov8_layout(size: str, batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    model = build_model(size).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 3, h, w))
    assert out.shape == (batch, 4 + len(CLASS_NAMES), _n_anchors(h, w))
    scores = out[:, 4:]
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    assert float(out[:, 2:4].min()) >= 0.0  # widths and heights
    cx, cy = out[:, 0], out[:, 1]
    assert float(cx.min()) > -w and float(cx.max()) < 2 * w and float(cy.max()) < 2 * h


def test_training_output_is_raw_per_level() -> None:
    model = build_n().train()
    raw = model(torch.rand(2, 3, 128, 192))
    assert [tuple(r.shape) for r in raw] == [
        (2, 4 * model.reg_max + model.nc, 128 // s, 192 // s) for s in STRIDES
    ]


def test_decode_places_boxes_at_anchor_cells() -> None:
    """With all box logits equal the predicted box is centred on its anchor cell and 2 * 7.5 strides wide."""
    model = build_n().eval()
    raw = [torch.zeros(1, 4 * model.reg_max + model.nc, 64 // s, 64 // s) for s in STRIDES]
    out = model.decode(raw)
    centre = (model.reg_max - 1) / 2
    expected_w = torch.tensor([2 * centre * s for s in STRIDES for _ in range((64 // s) ** 2)])
    torch.testing.assert_close(out[0, 2], expected_w)
    torch.testing.assert_close(out[0, 0, :8], (torch.arange(8) + 0.5) * 8)
    torch.testing.assert_close(out[0, 4:], torch.full_like(out[0, 4:], 0.5))


def test_state_dict_round_trips_with_weights_only() -> None:
    model = build_n()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_n()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_onnx_export_has_dynamic_batch_and_size(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = build_n().eval()
    path = tmp_path / "n.onnx"
    torch.onnx.export(
        model, (torch.rand(1, 3, 320, 320),), str(path), input_names=["images"], output_names=["output0"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 256, 384)
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (2, 4 + len(CLASS_NAMES), _n_anchors(256, 384))
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)
