"""``cvdeploy doctor`` end to end: exit codes, the JSON shape, the HTML report, and one-line errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvdeploy.cli.main import run
from cvdeploy.doctor import Doctor, faults
from cvdeploy.doctor.deployment import open_deployment


def _observed(doctor: Doctor, path: Path, **changes: object) -> Path:
    dep = open_deployment(doctor.bundle)
    found = faults.results(dep.run, faults.deviant(doctor.bundle.contract, **changes), doctor.images.paths)
    return faults.write_predict_json(found, doctor.images.paths, path)


@pytest.mark.slow
def test_json_html_and_exit_code(zoo_doctor: Doctor, plant_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    observed = _observed(zoo_doctor, tmp_path / "obs.json", color="BGR")
    html = tmp_path / "report.html"
    code = run(["doctor", "zoo:n", "--images", str(plant_images), "--observed", str(observed), "--json",
                "--html", str(html), "--keep-io", str(tmp_path / "io")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1  # something critical
    doc = json.loads(out)
    assert set(doc) == {"findings", "checks"}
    assert all(set(f) == {"id", "severity", "title", "evidence", "fix", "score"} for f in doc["findings"])
    assert doc["findings"][0]["id"] == "preprocess.channel_order"
    assert doc["findings"][0]["severity"] == "critical"
    scores = [f["score"] for f in doc["findings"]]
    assert scores == sorted(scores, reverse=True)
    checks = {c["id"]: c["verdict"] for c in doc["checks"]}
    assert checks["preprocessing"] == "finding" and checks["controlled"] == "skipped"
    page = html.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') >= 3  # variant ranking, image pairs, drift histograms
    assert "preprocess.channel_order" in page and "Expected (contract) vs observed" in page
    kept = sorted(p.name for p in (tmp_path / "io").iterdir())
    assert "index.json" in kept and any(n.endswith(".tensor.npy") for n in kept)


@pytest.mark.slow
def test_terminal_report_and_exit_0_when_clean(zoo_doctor: Doctor, plant_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    observed = _observed(zoo_doctor, tmp_path / "obs.json")
    code = run(["doctor", "zoo:n", "--images", str(plant_images), "--observed", str(observed)])
    out = capsys.readouterr().out
    assert code == 0
    assert "nothing critical" in out and "Preprocessing mismatch" in out
    assert "│ critical │" not in out  # no critical row in the findings table


def _bad_inputs(root: Path, images: Path, zoo: Doctor) -> dict[str, tuple[list[str], str]]:
    """name → (extra argv, a phrase the one-line error must contain)."""
    obs = _observed(zoo, root / "good.json")
    docs = json.loads(obs.read_text())
    (root / "unknown.json").write_text(json.dumps([*docs, {"image": "nope.jpg", "detections": []}]))
    (root / "fewer.json").write_text(json.dumps(docs[:-1]))
    (root / "notjson.json").write_text("{not json")
    txt = root / "txt"
    txt.mkdir()
    (txt / "stranger.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    bad_line = root / "badline"
    bad_line.mkdir()
    (bad_line / f"{zoo.images.stems[0]}.txt").write_text("0 0.5 0.5\n")
    tensors = root / "tensors"
    tensors.mkdir()
    for s in zoo.images.stems:
        np.save(tensors / f"{s}.npy", np.zeros((640, 640, 3), np.float32))  # HWC for an NCHW contract
    few = root / "few"
    few.mkdir()
    np.save(few / f"{zoo.images.stems[0]}.npy", np.zeros((1, 3, 640, 640), np.float32))
    return {
        "observed names an unknown image": (["--observed", str(root / "unknown.json")], "match none of the"),
        "observed covers fewer images": (["--observed", str(root / "fewer.json")], "of the 6 images"),
        "observed is not JSON": (["--observed", str(root / "notjson.json")], "not valid JSON"),
        "txt names an unknown image": (["--observed", str(txt)], "match none of the"),
        "txt line malformed": (["--observed", str(bad_line)], "class cx cy w h"),
        "tensors of another layout": (["--inputs", str(tensors)], "is not one image tensor"),
        "tensors for fewer images": (["--inputs", str(few)], "tensors for 1 of the 6 images"),
        "labels that are not a dataset": (["--labels", str(root / "notjson.json")], "not valid JSON"),
        "missing observed": (["--observed", str(root / "nothing.json")], "no such file"),
    }


def _one_line_error(capsys: pytest.CaptureFixture[str], phrase: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert phrase in re.sub(r"\s+", " ", err), err


def test_bad_inputs_give_one_line_errors(zoo_doctor: Doctor, plant_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for name, (argv, phrase) in _bad_inputs(tmp_path, plant_images, zoo_doctor).items():
        capsys.readouterr()
        code = run(["doctor", "zoo:n", "--images", str(plant_images), *argv])
        assert code == 2, name
        _one_line_error(capsys, phrase)


def _other_model(kind: str, src: Path, dst: Path) -> Path:
    import onnx

    model = onnx.load(str(src))
    if kind == "input":
        for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
            d.dim_value = 320
    else:  # every output channel twice: (b, 20, 8400) instead of (b, 10, 8400)
        out = model.graph.output[0]
        model.graph.node.append(onnx.helper.make_node("Concat", [out.name, out.name], ["doubled"], axis=1))
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        dims[1] = 2 * int(dims[1])
        model.graph.output.remove(out)
        model.graph.output.append(onnx.helper.make_tensor_value_info("doubled", onnx.TensorProto.FLOAT, dims))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("kind", ["input", "output"])
def test_a_model_with_other_shapes_is_refused(kind: str, plant_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from cvdeploy.bundle import Bundle

    b = Bundle.load("zoo:n")
    model = _other_model(kind, b.file(b.artifact()), tmp_path / "other.onnx")
    code = run(["doctor", "zoo:n", "--images", str(plant_images), "--model", str(model)])
    assert code == 2
    _one_line_error(capsys, "shape")


def _unreadable(d: Path) -> None:
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")


def _same_stem(d: Path) -> None:
    sub = d / "sub"
    sub.mkdir()
    first = sorted(d.glob("*.jpg"))[0]
    cv2.imwrite(str(sub / first.name.replace(".jpg", ".png")), cv2.imread(str(first)))


@pytest.mark.parametrize(
    ("spoil", "phrase"), [(_unreadable, "cannot read as an image"), (_same_stem, "share the name")]
)
def test_bad_image_folders_are_refused(spoil: Callable[[Path], None], phrase: str, plant_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import shutil

    d = tmp_path / "imgs"
    shutil.copytree(plant_images, d)
    spoil(d)
    assert run(["doctor", "zoo:n", "--images", str(d)]) == 2
    _one_line_error(capsys, phrase)


def test_unknown_device_is_refused_before_any_work(
    plant_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["doctor", "zoo:n", "--images", str(plant_images), "--speed", "--device", "tpu"]) == 2
    _one_line_error(capsys, "--device 'tpu'")


def test_missing_images_and_bundle(
    tmp_path: Path, plant_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["doctor", "zoo:n", "--images", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, "no such file or folder")
    assert run(["doctor", str(tmp_path / "nothing.cvd"), "--images", str(plant_images)]) == 2
    _one_line_error(capsys, "bundle not found")
