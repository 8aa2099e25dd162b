"""``cvdeploy optimize`` from the command line: one-line errors (exit 2) that leave the bundle unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bundle import Bundle, Source
from cvdeploy.cli.main import run

from .builders import manifest_bytes


@pytest.fixture
def onnx_only(tiny_bundle_copy: Path) -> Path:
    """The tiny bundle as if imported from an ONNX file: no PyTorch source to prune or train."""
    b = Bundle.load(tiny_bundle_copy)
    b.manifest.provenance.source = Source(kind="onnx", file="model.onnx")
    b.save()
    return tiny_bundle_copy


@pytest.fixture(scope="module")
def classify_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from cvdeploy.contract import Contract, InputSpec, OutputSpec
    from cvdeploy.export import ExportOptions, export_torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )  # fmt: skip
    contract = Contract(task="classify", classes=["a", "b", "c"], input=InputSpec(height=32, width=32,
                        resize="center_crop"), output=OutputSpec(format="classify"))  # fmt: skip
    out = tmp_path_factory.mktemp("cls") / "cls.cvd"
    export_torch(
        module, out, contract, Source(kind="torch", factory="python:x:y"), ExportOptions(parity_count=2)
    )
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ("nothing to do",)),
        (["--int8"], ("--images",)),
        (["--int8", "--images", "{calib}", "--runtime", "tensorrt"], ("--runtime",)),
        (["--int8", "--images", "{calib}", "--calib-method", "magic"], ("calibration method",)),
        (["--int8", "--images", "{bad_calib}"], ("broken.jpg", "cannot be read")),
        (["--prune", "0.3"], ("--images",)),
        (["--prune", "1.5", "--images", "{calib}"], ("--prune",)),
        (["--fp16", "--labels", "{calib}/data.yaml"], ("--labels is now --data",)),
        (["--int8", "--calib", "{calib}"], ("--calib is now --images",)),
        (
            ["--int8", "--images", "{calib}", "--data", "{calib}"],
            ("--data is a labelled dataset", "--images"),
        ),
        (
            ["--prune", "0.3", "--images", "{calib}", "--data", "{calib}/missing.yaml"],
            ("missing.yaml", "no such"),
        ),
        (["--prune", "0.3", "--images", "{calib}", "--data", "{bad_yaml}"], ("--data", "train")),
        (["--fp16", "--fresh"], ("--fresh", "--distill-from")),
        (["--prune", "0.3", "--images", "{calib}", "--data", "{other_yaml}"], ("classes", "dog")),
    ],
)
def test_errors_leave_the_bundle_unchanged(
    tiny_bundle_copy: Path, calib_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    args: list[str], words: tuple[str, ...],
) -> None:  # fmt: skip
    bad = tmp_path / "bad"
    shutil.copytree(calib_dir, bad)
    (bad / "broken.jpg").write_bytes(b"garbage")
    bad_yaml = tmp_path / "data.yaml"
    bad_yaml.write_text("names: [a]\nval: images\n")  # no train split
    other_yaml = tmp_path / "other.yaml"
    (tmp_path / "imgs").mkdir()
    shutil.copy(next(calib_dir.glob("*.jpg")), tmp_path / "imgs")
    other_yaml.write_text("names: [cat, dog]\ntrain: imgs\nval: imgs\n")
    argv = [a.format(calib=calib_dir, bad_calib=bad, bad_yaml=bad_yaml, other_yaml=other_yaml) for a in args]
    before = manifest_bytes(tiny_bundle_copy)
    files = sorted(p.name for p in tiny_bundle_copy.iterdir())
    assert run(["optimize", str(tiny_bundle_copy), *argv]) == 2
    _one_line_error(capsys, *words)
    assert manifest_bytes(tiny_bundle_copy) == before
    assert sorted(p.name for p in tiny_bundle_copy.iterdir()) == files


def test_pruning_an_onnx_only_bundle(
    onnx_only: Path, calib_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = manifest_bytes(onnx_only)
    assert run(["optimize", str(onnx_only), "--prune", "0.3", "--images", str(calib_dir)]) == 2
    _one_line_error(capsys, "no PyTorch source")
    assert manifest_bytes(onnx_only) == before


@pytest.mark.parametrize("flags", [["--prune", "0.3"], ["--distill-from", "zoo:s"]])
def test_detector_training_on_a_classifier(
    classify_bundle: Path, calib_dir: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    before = manifest_bytes(classify_bundle)
    assert run(["optimize", str(classify_bundle), "--int8", "--images", str(calib_dir), *flags]) == 2
    _one_line_error(capsys, "detection loss", "classify")
    assert manifest_bytes(classify_bundle) == before


def test_output_copy_is_removed_when_the_run_fails(
    tiny_bundle_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "copy.cvd"
    assert run(["optimize", str(tiny_bundle_copy), "-o", str(out), "--int8", "--images", str(empty)]) == 2
    _one_line_error(capsys, "no calibration images")
    assert not out.exists()


def test_fp16_to_a_copy_as_json(
    tiny_bundle_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy.cvd"
    before = manifest_bytes(tiny_bundle_copy)
    assert run(["optimize", str(tiny_bundle_copy), "-o", str(out), "--fp16", "--no-bench", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [v["artifact"] for v in doc["variants"]] == ["onnx-fp32", "openvino-fp32", "onnx-fp16"]
    assert manifest_bytes(tiny_bundle_copy) == before  # the source is untouched
    assert "onnx-fp16" in Bundle.load(out).artifact_names
    assert (out / "reports" / "optimize.html").is_file() and (out / "reports" / "optimize.json").is_file()


@pytest.mark.slow
def test_prune_adds_an_artifact_with_the_same_outputs(
    tiny_bundle_copy: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["optimize", str(tiny_bundle_copy), "--prune", "0.3", "--images", str(photo_dir), "--epochs", "1",
                "--no-bench", "--json"])  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert "onnx-fp32-pruned30" in [v["artifact"] for v in doc["variants"]]
    b = Bundle.load(tiny_bundle_copy)
    art = b.artifact("onnx-fp32-pruned30")
    assert art.details["pruning"]["gmacs_after"] < art.details["pruning"]["gmacs_before"]
    assert art.parity is not None and art.parity.passed  # the export matches the pruned PyTorch model
    assert "neck features, feature gain 5" in art.details["recovery"]["method"]  # the recorded recipe
    from cvdeploy.runtimes import load_runtime

    full, pruned = load_runtime("onnxruntime", b.file("onnx-fp32")), load_runtime("onnxruntime", b.file(art))
    x = np.zeros((1, 3, 320, 320), np.float32)
    assert full.run({"images": x})[0].shape == pruned.run({"images": x})[0].shape


@pytest.mark.slow
def test_prune_recovery_with_labels(
    tiny_bundle_copy: Path, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cvdeploy.zoo.dataset import generate_dataset

    data = generate_dataset(tmp_path / "shapes", images=10, seed=3, imgsz=128, progress=False, workers=1)
    code = run(["optimize", str(tiny_bundle_copy), "--prune", "0.2", "--images", str(photo_dir), "--data",
                str(data), "--epochs", "1", "--no-bench", "--json"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    art = Bundle.load(tiny_bundle_copy).artifact("onnx-fp32-pruned20")
    assert "detection loss" in art.details["recovery"]["method"] and art.details["recovery"]["steps"] >= 1


@pytest.mark.slow
def test_qat_adds_an_int8_artifact(
    tiny_bundle_copy: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    assert run(["optimize", str(tiny_bundle_copy), "--qat", "--images", str(photo_dir), "--epochs", "1",
                "--no-bench", "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    b = Bundle.load(tiny_bundle_copy)
    art = b.artifact("onnx-int8-qat")
    assert art.precision == "int8" and art.details["qat"]["wrapped_convs"] > 10
    ops = {n.op_type for n in onnx.load(str(b.file(art))).graph.node}
    assert "QuantizeLinear" in ops and "BatchNormalization" not in ops


def test_sparsity_says_no_speedup(tiny_bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["optimize", str(tiny_bundle_copy), "--sparsity", "0.5", "--no-bench"]) == 0
    out = capsys.readouterr().out
    art = Bundle.load(tiny_bundle_copy).artifact("onnx-fp32-sparse50")
    assert 0.45 <= art.details["sparsity"]["sparsity"] <= 0.55
    assert "no speedup" in " ".join(out.split())


def test_zoo_bundle_is_optimized_as_a_copy(
    tiny_bundle_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copytree(tiny_bundle_path, zoo / "n.cvd")
    monkeypatch.setattr("cvdeploy.bundle.ZOO_DIR", zoo)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = manifest_bytes(zoo / "n.cvd")
    assert run(["optimize", "zoo:n", "--fp16", "--no-bench"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "part of the cvdeploy package" in err and "tiny.cvd" in err
    assert manifest_bytes(zoo / "n.cvd") == before
    assert "onnx-fp16" in Bundle.load(work / "tiny.cvd").artifact_names


def test_bf16_where_the_cpu_has_no_native_bf16_is_one_line_and_changes_nothing(
    tiny_bundle_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    from cvdeploy import env

    monkeypatch.setattr(env, "cpu_capabilities", lambda flags=None: dict.fromkeys(env.CAPABILITIES, False))
    before = manifest_bytes(tiny_bundle_copy)
    assert run(["optimize", str(tiny_bundle_copy), "--bf16"]) == 2
    _one_line_error(capsys, "--bf16", "no native BF16", "--int8")
    assert manifest_bytes(tiny_bundle_copy) == before


@pytest.mark.slow
def test_prune_recovery_on_labels_alone_is_the_no_teacher_baseline(
    tiny_bundle_copy: Path, photo_dir: Path, tmp_path: Path
) -> None:
    from cvdeploy.errors import ConfigError
    from cvdeploy.optimize.distill import TrainConfig
    from cvdeploy.optimize.retrain import prune_bundle
    from cvdeploy.zoo.dataset import generate_dataset

    b = Bundle.load(tiny_bundle_copy)
    with pytest.raises(ConfigError, match="needs labels"):
        prune_bundle(b, 0.2, photo_dir, TrainConfig(epochs=1), distill=False)
    data = generate_dataset(tmp_path / "shapes", images=10, seed=3, imgsz=128, progress=False, workers=1)
    art = prune_bundle(b, 0.2, photo_dir, TrainConfig(epochs=1, labels=data, label_gain=1.0), distill=False)
    assert art.name == "onnx-fp32-pruned20labels"
    assert art.details["recovery"]["method"].startswith("no teacher + detection loss")
    assert art.details["recovery"]["steps"] >= 1
