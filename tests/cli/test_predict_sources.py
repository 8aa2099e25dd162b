"""``cvdeploy predict`` as Ultralytics users expect: model files directly (a cached bundle, said in one
line), unreadable files skipped and counted, videos, URLs refused, raw models with tensors and geometry."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeploy.cli.main import run


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CVDEPLOY_CACHE", str(d))
    return d


def test_a_model_file_runs_through_a_cached_bundle(
    tiny_bundle_path: Path, photo_dir: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = tiny_bundle_path / "onnx-fp32.onnx"
    assert run(["predict", str(onnx_file), str(photo_dir), "--json"]) == 0
    first = capsys.readouterr()
    assert "exported into the cached bundle" in first.err and str(cache) in first.err
    docs = json.loads(first.out)
    assert len(docs) == 4 and all("detections" in d for d in docs)
    assert run(["predict", str(onnx_file), str(photo_dir), "--json"]) == 0
    second = capsys.readouterr()
    assert "using the cached bundle" in second.err
    assert json.loads(second.out) == docs  # the same bundle, the same results
    assert len(list((cache / "bundles").iterdir())) == 1


def test_unreadable_files_are_skipped_and_counted(
    tiny_bundle_path: Path, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in sorted(photo_dir.glob("*.jpg"))[:2]:
        (mixed / f.name).write_bytes(f.read_bytes())
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (mixed / "empty.png").write_bytes(b"")
    assert run(["predict", str(tiny_bundle_path), str(mixed), "--json"]) == 0
    out = capsys.readouterr()
    assert [Path(d["image"]).name for d in json.loads(out.out)] == ["photo0.jpg", "photo1.jpg"]
    assert "broken.jpg" in out.err and "empty.png" in out.err
    assert "2 of 4 file(s) could not be read and were skipped" in out.err


def test_only_unreadable_files_is_one_error_line(
    tiny_bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.jpg").write_bytes(b"junk")
    (tmp_path / "b.jpg").write_bytes(b"junk")
    assert run(["predict", str(tiny_bundle_path), str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing could be read" in err and "and 1 more" in err


def test_videos_are_read_frame_by_frame(
    tiny_bundle_path: Path, photos: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(6):
        writer.write(cv2.resize(photos[i % len(photos)], (320, 240)))
    writer.release()
    assert run(["predict", str(tiny_bundle_path), str(video), "--vid-stride", "2", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["frame"] for d in docs] == [0, 2, 4] and all(d["image"] == str(video) for d in docs)


def test_urls_are_refused_in_one_line(tiny_bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["predict", str(tiny_bundle_path), "https://example.com/bus.jpg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not download" in err


@pytest.fixture
def raw_bundle(tmp_path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from cvdeploy.export import export

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    path = tmp_path / "mean.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from cvdeploy.sources.assemble import ContractHints

    export(str(path), tmp_path / "raw.cvd", __import__("cvdeploy.export").export.ExportOptions(
        hints=ContractHints(task="raw")))  # fmt: skip
    return tmp_path / "raw.cvd"


def test_raw_models_give_tensors_and_geometry(
    raw_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :, 2] = 255  # red (BGR): the model sees RGB, so output 0 is 1.0 where the image is
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), img)
    assert run(["predict", str(raw_bundle), str(path), "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    (out,) = doc["outputs"]
    assert out["shape"] == [3] and out["data"][0] > out["data"][2]
    assert doc["geometry"] == {"original": [20, 40], "scale": [0.8, 0.8], "pad": [0.0, 8.0]}
    save = tmp_path / "saved"
    assert run(["predict", str(raw_bundle), str(path), "--save", str(save)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "output tensors (.npz) written to" in said and "annotated" not in said
    npz = np.load(save / "red.npz")
    assert npz["y"].shape == (3,) and json.loads(str(npz["geometry"]))["pad"] == [0.0, 8.0]
