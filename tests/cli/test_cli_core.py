"""CLI: export / inspect / predict behaviour, and every user error is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvdeploy.cli.main import run


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def corrupt_files(tmp_path: Path) -> dict[str, Path]:
    bad_onnx = tmp_path / "corrupt.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    (img_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return {"onnx": bad_onnx, "text": text, "imgdir": img_dir}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{tmp}/missing.onnx", "-o", "{tmp}/o.cvd"], "model not found"),
        (["export", "{text}", "-o", "{tmp}/o.cvd"], "cannot tell what kind of model"),
        (["export", "{onnx}", "-o", "{tmp}/o.cvd"], "not a readable ONNX model"),
        (["export", "{onnx}", "-o", "{tmp}/o.cvd", "--format", "tfjs"], "unknown export format"),
        (
            ["export", "{onnx}", "-o", "{tmp}/o.cvd", "--format", "tflite"],
            "TFLite export converts a PyTorch model",
        ),
        (["export", "{onnx}", "-o", "{tmp}/o.cvd", "--imgsz", "big"], "--imgsz: 'big' is not a whole number"),
        (["export", "{onnx}", "-o", "{tmp}/o.cvd", "--task", "depth"], "--task 'depth'"),
        (["export", "{onnx}", "--no-such-flag"], "No such option: --no-such-flag"),
        (["export"], "Missing argument"),
        (["inspect", "{tmp}/nothing.cvd"], "bundle not found"),
        (["inspect", "zoo:nope"], "no bundled model 'zoo:nope'"),
        (["predict", "{bundle}", "{imgdir}"], "cannot decode as an image"),
        (["predict", "{bundle}", "{tmp}/nope.jpg"], "no such file or folder"),
        (["predict", "{bundle}", "{text}"], "cannot decode as an image"),
        (["predict", "{bundle}", "{imgdir}", "--artifact", "onnx-int8"], "has no artifact 'onnx-int8'"),
        (["predict", "{bundle}", "{imgdir}", "--conf", "2"], "Invalid value for '--conf'"),
        (["predict", "{bundle}", "{imgdir}", "--device", "quantum"], "unknown device"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    corrupt_files: dict[str, Path],
    tiny_bundle_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subst = {
        "tmp": str(tmp_path),
        "bundle": str(tiny_bundle_path),
        **{k: str(v) for k, v in corrupt_files.items()},
    }
    argv = [a.format(**subst) for a in args]
    if "--device" in argv:  # needs a readable image so the error comes from the device
        argv[2] = str(Path(__file__).parent)  # a folder with no images -> replaced below
        import cv2
        import numpy as np

        good = tmp_path / "good"
        good.mkdir()
        cv2.imwrite(str(good / "a.png"), np.zeros((8, 8, 3), np.uint8))
        argv[2] = str(good)
    assert run(argv) == 2
    assert message in one_error_line(capsys)


def test_predict_json_and_save(
    tiny_bundle_path: Path, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "annotated"
    assert (
        run(
            [
                "predict",
                str(tiny_bundle_path),
                str(photo_dir),
                "--json",
                "--conf",
                "0.0001",
                "--save",
                str(out),
            ]
        )
        == 0
    )
    docs = json.loads(capsys.readouterr().out)
    assert [Path(d["image"]).name for d in docs] == sorted(p.name for p in photo_dir.iterdir())
    assert all(set(d) == {"image", "detections"} for d in docs)
    dets = [det for d in docs for det in d["detections"]]
    assert dets, "conf 1e-4 on an untrained model should still give detections"
    assert set(dets[0]) == {"box", "confidence", "class_id", "class_name"}
    assert len(dets[0]["box"]) == 4
    assert sorted(p.name for p in out.iterdir()) == sorted(p.stem + ".jpg" for p in photo_dir.iterdir())


def test_predict_openvino_artifact_table(
    tiny_bundle_path: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["predict", str(tiny_bundle_path), str(photo_dir), "--artifact", "openvino-fp32"]) == 0
    out = capsys.readouterr().out
    assert "openvino-fp32" in out and "photo0.jpg" in out


def test_inspect_tables_and_json(tiny_bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["inspect", str(tiny_bundle_path)]) == 0
    out = capsys.readouterr().out
    for text in ("bundle tiny", "letterbox", "onnx-fp32", "openvino-fp32", "yolov8"):
        assert text in out
    assert run(["inspect", str(tiny_bundle_path), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["schema"] == "cvdeploy/1" and len(manifest["artifacts"]) == 2


@pytest.mark.slow
def test_export_command_writes_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "cli.cvd"
    code = run(
        [
            "export",
            "python:cvdeploy.zoo.model:build_n",
            "-o",
            str(out),
            "--imgsz",
            "128",
            "--name",
            "cli-model",
            "--parity-images",
            str(Path(__file__).parent.parent),
        ]
    )
    # the tests folder has no images: that is a user error, reported as such
    assert code == 2 and "no images found" in one_error_line(capsys)
    assert (
        run(
            [
                "export",
                "python:cvdeploy.zoo.model:build_n",
                "-o",
                str(out),
                "--imgsz",
                "128",
                "--name",
                "cli-model",
            ]
        )
        == 0
    )
    assert "bundle written" in capsys.readouterr().out
    from cvdeploy.bundle import Bundle

    b = Bundle.load(out)
    assert b.name == "cli-model" and b.artifact().parity is not None


def test_tflite_without_its_converter_is_refused_before_any_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cvdeploy.export as export_mod

    monkeypatch.setattr(export_mod, "available", lambda module: module != "litert_torch")
    monkeypatch.setattr(export_mod, "_parity_images", lambda opts: pytest.fail("export began"))
    assert run(["export", "zoo:n", "-o", str(tmp_path / "t.cvd"), "--format", "onnx,tflite"]) == 2
    assert 'pip install "cvdeploy[tflite-export]"' in one_error_line(capsys)
    assert not list(tmp_path.iterdir())
