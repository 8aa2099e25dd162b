"""Importing users' models: metadata verified against the graph, flags that take effect or are refused,
nothing guessed silently, presets, and one-line advice that fits the file (no foreign advice, no traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvdeploy.errors import ConfigError, InputError, ModelError
from cvdeploy.export import ExportOptions, export
from cvdeploy.sources.assemble import ContractHints

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _graph(outputs: dict[str, list[int | str]], inp: list[int | str] | None = None, meta: dict[str, str] | None = None,
           const: dict[str, np.ndarray] | None = None) -> object:  # fmt: skip
    """A tiny ONNX model: image in, each output a constant broadcast to its shape (values from ``const``)."""
    inp = inp or [1, 3, 64, 64]
    nodes, inits = [], []
    for name, shape in outputs.items():
        value = (const or {}).get(name)
        if value is None:
            value = np.full([d if isinstance(d, int) else 1 for d in shape], 0.5, np.float32)
        inits.append(helper.make_tensor(f"{name}_c", TensorProto.FLOAT, value.shape, value.ravel().tolist()))
        # multiply by ReduceMean(x)*0 + 1 so that the output depends on the input (a real graph)
        nodes += [
            helper.make_node("ReduceMean", ["images"], [f"{name}_m"], keepdims=0),
            helper.make_node("Mul", [f"{name}_m", "zero"], [f"{name}_z"]),
            helper.make_node("Add", [f"{name}_z", "one"], [f"{name}_o"]),
            helper.make_node("Mul", [f"{name}_c", f"{name}_o"], [name]),
        ]
    inits += [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, inp)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (meta or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def _save(model: object, path: Path) -> str:
    onnx.save(model, str(path))
    return str(path)


def _ul_meta(task: str, nc: int, **extra: str) -> dict[str, str]:
    return {"author": "Ultralytics", "task": task, "stride": "32", "imgsz": "[64, 64]", "batch": "1",
            "names": str({i: f"c{i}" for i in range(nc)}), **extra}  # fmt: skip


# ---- metadata verified against the graph ----------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "meta", "message"),
    [
        # the pose export read as a 52-class detector: its metadata says pose, 1 class, 17x3 keypoints
        ({"output0": [1, 56, 84]}, _ul_meta("detect", 1), "task=detect, 1 classes"),
        ({"output0": [1, 56, 84]}, _ul_meta("pose", 1, kpt_shape="[5, 3]"), "kpt_shape=[5, 3]"),
        ({"output0": [1, 84, 84]}, _ul_meta("detect", 80, end2end="True"), "end2end"),
        ({"output0": [1, 300, 6]}, _ul_meta("detect", 80, args="{'nms': False}"), "disagrees with the graph"),
        ({"output0": [1, 84, 84]}, _ul_meta("detect", 52), "task=detect, 52 classes"),
        ({"output0": [1, 116, 84]}, _ul_meta("segment", 80), "mask prototypes"),
        ({"output0": [1, 10]}, _ul_meta("classify", 18), "classifier of 18 classes"),
    ],
)
def test_metadata_that_disagrees_with_the_graph_is_refused(
    outputs: dict[str, list[int | str]], meta: dict[str, str], message: str, tmp_path: Path
) -> None:
    src = _save(_graph(outputs, meta=meta), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="disagrees with the graph") as err:
        export(src, tmp_path / "m.cvd")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "m.cvd").exists()


def test_ultralytics_exports_of_every_task_read_their_metadata(farm: object, tmp_path: Path) -> None:
    """The metadata is used: task, names, end2end and kpt_shape decide the decoder, with no flags."""
    from cvdeploy.bundle import Bundle

    want = {("pose", "onnx"): ("pose", "yolov8", 1), ("pose", "onnx-nms"): ("pose", "end2end", 1),
            ("obb", "onnx"): ("obb", "yolov8", 80), ("detect", "onnx-nms"): ("detect", "end2end", 80),
            ("segment", "onnx-dynamic"): ("segment", "yolov8", 80)}  # fmt: skip
    for (task, variant), (t, fmt, nc) in want.items():
        b = export(str(farm.file("yolov8n", task, variant)), tmp_path / f"{task}-{variant}.cvd",  # type: ignore[attr-defined]
                   ExportOptions(parity_count=1))  # fmt: skip
        c = Bundle.load(b.path).contract
        assert (c.task, c.output.format, c.num_classes) == (t, fmt, nc), (task, variant)
        assert any("Ultralytics metadata: task=" in n for n in b.artifact().notes)


@pytest.mark.parametrize(("task", "variant"), [("pose", "onnx"), ("obb", "onnx"), ("detect", "onnx-nms")])
def test_without_metadata_a_wrong_reading_never_passes_parity(
    farm: object, tmp_path: Path, task: str, variant: str
) -> None:
    """Stripped of its metadata, a pose head reads as a 52-class detector, an OBB head as 81 classes, an
    end-to-end output as YOLOv5: the decoder's own checks (scores in [0, 1], class ids < nc) refuse them."""
    model = onnx.load(str(farm.file("yolov8n", task, variant)))  # type: ignore[attr-defined]
    del model.metadata_props[:]
    src = _save(model, tmp_path / "bare.onnx")
    hints = ContractHints(format="yolov5", classes=["a"]) if variant == "onnx-nms" else ContractHints()
    with pytest.raises(ModelError, match=r"does not fit its 'yolov[58]' 'detect' decoder: .* not 0–1") as err:
        export(src, tmp_path / "bare.cvd", ExportOptions(hints=hints, parity_count=2))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bare.cvd").exists()


# ---- flags take effect or are refused ------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "meta", "hints", "error", "message"),
    [
        ({"output0": [1, 22, 84]}, None, ContractHints(task="detect", format="classify"), ConfigError,
         "contradict each other"),
        ({"a": [1, 3, 8, 8], "b": [1, 7]}, None, ContractHints(task="detect"), ConfigError,
         "outputs do not fit: detect/yolov8 has 1 output"),
        ({"output0": [1, 22, 84]}, None, ContractHints(classes=list("abc")), ConfigError, "3 class names but"),
        ({"output0": [1, 22, 84]}, None, ContractHints(format="yolov5"), ConfigError, "do not fit"),
        ({"output0": [1, 84, 84]}, _ul_meta("detect", 80), ContractHints(task="segment"), ConfigError,
         "contradicts m.onnx's Ultralytics metadata"),
        ({"output0": [1, 84, 84]}, _ul_meta("detect", 80), ContractHints(format="end2end"), ConfigError,
         "contradicts"),
        ({"output0": [1, 300, 6]}, None, ContractHints(), ConfigError, "give the class names with --names"),
        ({"output0": [1, 22, 84]}, None, ContractHints(task="pose"), ConfigError, "kpt_shape"),
    ],
)  # fmt: skip
def test_flags_are_refused_when_they_cannot_take_effect(
    outputs: dict[str, list[int | str]], meta: dict[str, str] | None, hints: ContractHints,
    error: type[Exception], message: str, tmp_path: Path,
) -> None:  # fmt: skip
    src = _save(_graph(outputs, meta=meta), tmp_path / "m.onnx")
    with pytest.raises(error, match=message):
        export(src, tmp_path / "m.cvd", ExportOptions(hints=hints))


def test_task_flag_takes_effect(tmp_path: Path) -> None:
    """An unlabelled (1, 22, 84) output decoded as asked: --task pose with kpt_shape [6, 3] (4 + 0 + 18)."""
    src = _save(_graph({"output0": [1, 23, 84]}), tmp_path / "m.onnx")
    b = export(src, tmp_path / "m.cvd", ExportOptions(hints=ContractHints(task="pose", classes=["p"],
               output={"kpt_shape": [6, 3]})))  # fmt: skip
    assert b.contract.task == "pose" and b.contract.output.kpt_shape == [6, 3]


# ---- nothing guessed silently; presets --------------------------------------------------------------


def test_a_classifier_without_metadata_says_what_it_assumed(tmp_path: Path) -> None:
    src = _save(_graph({"logits": [1, 1000]}, inp=[1, 3, 224, 224]), tmp_path / "resnet.onnx")
    said: list[str] = []
    b = export(src, tmp_path / "r.cvd", step=said.append)
    note = next(s for s in said if "assumed" in s)
    assert (
        "ImageNet" in note
        and "0.485" in note
        and "0.229" in note
        and "--contract" in note
        and "--preset" in note
    )
    spec = b.contract.input
    assert (
        b.contract.task == "classify"
        and spec.mean == [0.485, 0.456, 0.406]
        and spec.std == [0.229, 0.224, 0.225]
    )
    assert spec.resize == "center_crop" and spec.crop_fraction == 0.875


def test_a_detector_without_metadata_says_what_it_assumed(tmp_path: Path) -> None:
    src = _save(_graph({"output0": [1, 22, 84]}), tmp_path / "det.onnx")
    said: list[str] = []
    export(src, tmp_path / "d.cvd", step=said.append)
    note = next(s for s in said if "assumed" in s)
    assert "letterbox (pad 114)" in note and "/255" in note and "--preset" in note


def test_given_preprocessing_is_not_called_assumed(tmp_path: Path) -> None:
    src = _save(_graph({"logits": [1, 10]}, inp=[1, 3, 224, 224]), tmp_path / "c.onnx")
    said: list[str] = []
    b = export(
        src, tmp_path / "c.cvd", ExportOptions(hints=ContractHints(preset="imagenet")), step=said.append
    )
    assert not any("assumed" in s for s in said) and any("--preset imagenet" in s for s in said)
    assert b.contract.input.mean == [0.485, 0.456, 0.406]


def test_picodet_preset_decodes_boxes_and_scores(tmp_path: Path) -> None:
    """PicoDet exported without NMS: boxes (1, N, 4) xyxy in input pixels and scores (1, nc, N)."""
    from cvdeploy.pipeline import Pipeline

    n, nc = 6, 3
    boxes = np.zeros((1, n, 4), np.float32)
    boxes[0, 0] = [10, 20, 50, 60]
    boxes[0, 1] = [12, 21, 52, 61]  # overlaps box 0 (suppressed)
    boxes[0, 2] = [200, 100, 300, 200]
    scores = np.full((1, nc, n), 0.01, np.float32)
    scores[0, 1, 0], scores[0, 1, 1], scores[0, 2, 2] = 0.9, 0.8, 0.7
    src = _save(_graph({"boxes": [1, n, 4], "scores": [1, nc, n]}, inp=[1, 3, 320, 320],
                       const={"boxes": boxes, "scores": scores}), tmp_path / "picodet.onnx")  # fmt: skip
    b = export(
        src, tmp_path / "p.cvd", ExportOptions(hints=ContractHints(preset="picodet", classes=["a", "b", "c"]))
    )
    c = b.contract
    assert (c.task, c.output.format, c.input.resize) == ("detect", "boxes_scores", "stretch")
    assert c.input.mean == [0.485, 0.456, 0.406]
    (det,) = Pipeline.from_bundle(b).predict([np.zeros((640, 320, 3), np.uint8)])  # stretch: x ×1, y ×2
    assert det.class_id.tolist() == [1, 2]
    np.testing.assert_allclose(det.xyxy[0], [10, 40, 50, 120], atol=1e-3)


# ---- advice that fits the file --------------------------------------------------------------------


def test_a_state_dict_pt_gets_factory_advice(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from factories import build_classifier

    path = tmp_path / "weights.pt"
    torch.save(build_classifier().state_dict(), str(path))
    with pytest.raises(ModelError, match=r"only weights \(a state dict\).*python:.*--weights") as err:
        export(str(path), tmp_path / "x.cvd")
    assert "yolo" not in str(err.value)


def test_a_pickled_module_gets_torchscript_advice(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from factories import build_classifier

    path = tmp_path / "model.pt"
    torch.save(build_classifier(), str(path))
    with pytest.raises(ModelError, match=r"whole pickled PyTorch module.*TorchScript") as err:
        export(str(path), tmp_path / "x.cvd")
    assert "yolo" not in str(err.value)


def test_a_factory_that_needs_arguments_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"needs argument\(s\) num_classes; .*zero-argument function"):
        export("python:factories:build_with_args", tmp_path / "x.cvd")


def test_a_factory_that_needs_arguments_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cvdeploy.cli.main import run

    assert run(["export", "python:factories:build_with_args", "-o", str(tmp_path / "x.cvd")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "needs argument(s) num_classes" in err[0]
    assert not (tmp_path / "x.cvd").exists()


def test_factory_with_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from factories import build_classifier

    trained = build_classifier()
    with torch.no_grad():
        trained.fc.bias.fill_(3.0)
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), str(weights))
    b = export(
        "python:factories:build_classifier",
        tmp_path / "c.cvd",
        ExportOptions(imgsz=(32, 32), weights=weights),
    )
    from cvdeploy.optimize.source import load_source_model

    kept = load_source_model(b)
    assert float(kept.fc.bias[0]) == 3.0
    assert Path(b.manifest.provenance.source.file or "").is_absolute()


def test_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not download"):
        export("https://example.com/yolov8n.onnx", tmp_path / "x.cvd")
