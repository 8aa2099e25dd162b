"""What each package would run, started here exactly as its platform starts it, and called as the platform calls it.

No Docker engine runs on these machines: the image's ENTRYPOINT + CMD run in this environment, with
each path the Dockerfile COPYs mapped to the package folder (what the build puts there).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.package import PackageOptions, package
from cvdeploy.package.docker import PANELS
from cvdeploy.pipeline import Pipeline

from .conftest import free_port, http, image_command, running

pytestmark = pytest.mark.slow


def reference(bundle: str | Path, image: Path, artifact: str | None = None) -> list[dict]:
    """cvdeploy's own pipeline on the same image: what every entrypoint must answer."""
    return Pipeline.from_bundle(bundle, artifact)([image])[0].to_list()  # type: ignore[union-attr]


def same_detections(got: list[dict], want: list[dict], tol: float = 0.05) -> None:
    assert len(got) == len(want) and want, (got, want)
    for g, w in zip(got, want, strict=True):
        assert g["class_id"] == w["class_id"]
        assert abs(g["confidence"] - w["confidence"]) < 1e-3
        assert np.allclose(g["box"], w["box"], atol=tol), (g, w)


def _boxes(dets: list[dict]) -> list[dict]:
    """The image API's detections as {class_id, confidence, box}."""
    return [{"class_id": d["class_id"], "confidence": d["confidence"], "box": d["box"]} for d in dets]


def test_docker_entrypoint_starts_answers_and_exports_the_dashboards_metrics(
    packages: dict[str, Path], photo_jpeg: Path
) -> None:
    pkg = packages["docker"]
    cmd, env = image_command(pkg)
    port = free_port()
    cmd[cmd.index("--port") + 1] = str(port)  # 8080 may be taken on a shared machine; nothing else changes
    base = f"http://127.0.0.1:{port}"
    want = reference("zoo:n", photo_jpeg)
    with running(cmd, f"{base}/v2/health/ready", env):
        health = json.loads((pkg / "Dockerfile").read_text().split("CMD [")[1].split("]")[0].join("[]"))
        health = [a.replace("'8080'", f"'{port}'") for a in health]
        assert subprocess.run(health, env={**os.environ, **env}, timeout=30).returncode == 0, (
            "HEALTHCHECK fails"
        )
        status, body = http(
            f"{base}/v1/models/zoo-n/detect", photo_jpeg.read_bytes(), {"content-type": "image/jpeg"}
        )
        assert status == 200, body
        same_detections(_boxes(json.loads(body)["detections"]), want)
        # KServe's predictor runs these very arguments: Open Inference Protocol v2 on the same server
        from cvdeploy.export import batches
        from cvdeploy.images import read_image

        b = Pipeline.from_bundle("zoo:n")
        (t,), _ = batches(b.contract, [read_image(photo_jpeg)], 1)
        # binary tensor data (the v2 binary extension), as Triton clients send a 640-px image
        header = json.dumps(
            {
                "inputs": [{"name": "images", "shape": list(t.shape), "datatype": "FP32",
                            "parameters": {"binary_data_size": t.nbytes}}],
                "outputs": [{"name": "output0", "parameters": {"binary_data": False}}],
            }
        ).encode()  # fmt: skip
        status, body = http(
            f"{base}/v2/models/zoo-n/infer",
            header + t.astype(np.float32).tobytes(),
            {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        )
        assert status == 200, body[:300]
        out = json.loads(body)["outputs"][0]
        assert out["shape"] == [1, 10, 8400]
        np.testing.assert_allclose(
            np.asarray(out["data"], np.float32).reshape(out["shape"]), b.infer(t)[0], atol=1e-4
        )
        assert http(f"{base}/v1/models/zoo-n/detect", b"not an image", {"content-type": "image/jpeg"})[0] in (
            400,
            415,
        )
        status, metrics = http(f"{base}/metrics")
        assert status == 200
        text = metrics.decode()
        for _, expr, _ in PANELS:
            for name in set(re.findall(r"cvdeploy_[a-z_]+", expr)):
                family = re.sub(r"_(bucket|sum|count|total)$", "", name)
                assert re.search(rf"^# TYPE {family}(_total)? ", text, re.M), f"{name}: no such metric family"
                if name.endswith(("_bucket", "_sum", "_count", "_total")) and "dropped" not in name:
                    assert re.search(rf"^{name}[{{ ]", text, re.M), f"{name}: no such series"


def test_sagemaker_serve_answers_ping_and_invocations(
    packages: dict[str, Path], photo_jpeg: Path, tmp_path: Path
) -> None:
    pkg = packages["sagemaker"]
    model_dir = tmp_path / "opt/ml/model"
    with tarfile.open(pkg / "model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")  # what SageMaker does with ModelDataUrl
    port = free_port()
    env = {
        "SM_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "CVDEPLOY_CONFIG": str(pkg / "serve.yaml"),
    }
    base = f"http://127.0.0.1:{port}"
    with running([str(pkg / "serve")], f"{base}/ping", env):  # `docker run IMAGE serve`
        status, body = http(f"{base}/invocations", photo_jpeg.read_bytes(), {"content-type": "image/jpeg"})
        assert status == 200, body
        same_detections(_boxes(json.loads(body)["detections"]), reference("zoo:n", photo_jpeg))
        doc = {"instances": [{"b64": base64.b64encode(photo_jpeg.read_bytes()).decode()}]}
        status, body = http(
            f"{base}/invocations", json.dumps(doc).encode(), {"content-type": "application/json"}
        )
        assert status == 200 and len(json.loads(body)["predictions"]) == 1
        status, body = http(f"{base}/invocations", b"{}", {"content-type": "application/json"})
        assert status == 400 and b"instances" in body


def test_vertex_container_uses_the_aip_variables(packages: dict[str, Path], photo_jpeg: Path) -> None:
    pkg = packages["vertex"]
    cmd, env = image_command(pkg)
    port = free_port()
    health, predict = "/v1/endpoints/123/deployedModels/456", "/v1/endpoints/123/deployedModels/456:predict"
    env.update({"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": health, "AIP_PREDICT_ROUTE": predict,
                "AIP_MODE": "PREDICTION", "AIP_STORAGE_URI": "gs://bucket/model"})  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with running(cmd, base + health, env):
        doc = {
            "instances": [{"b64": base64.b64encode(photo_jpeg.read_bytes()).decode()}],
            "parameters": {"conf": 0.25},
        }
        status, body = http(base + predict, json.dumps(doc).encode(), {"content-type": "application/json"})
        assert status == 200, body
        preds = json.loads(body)["predictions"]
        assert len(preds) == 1
        same_detections(_boxes(preds[0]["detections"]), reference("zoo:n", photo_jpeg))


SCORE = """
import base64, json, os, sys
sys.path.insert(0, sys.argv[1])
import score
score.init()
body = json.dumps({"instances": [{"b64": base64.b64encode(open(sys.argv[2], "rb").read()).decode()}]})
print(json.dumps({"ok": score.run(body), "bad": score.run("not json"), "empty": score.run(json.dumps({"instances": []}))}))
"""


def test_azureml_scoring_script_init_and_run(
    packages: dict[str, Path], photo_jpeg: Path, tmp_path: Path
) -> None:
    pkg = packages["azureml"]
    model_dir = tmp_path / "azureml-models" / "zoo-n" / "1"  # Azure ML: AZUREML_MODEL_DIR/<registered folder>
    import shutil

    shutil.copytree(pkg / "model", model_dir / "model")
    proc = subprocess.run([sys.executable, "-c", SCORE, str(pkg), str(photo_jpeg)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AZUREML_MODEL_DIR": str(model_dir)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    same_detections(_boxes(out["ok"]["predictions"][0]["detections"]), reference("zoo:n", photo_jpeg))
    assert "not JSON" in out["bad"]["error"] and "non-empty" in out["empty"]["error"]


@pytest.mark.parametrize("which", ["onnx", "litert"])
def test_edge_predict_runs_with_a_bare_python_and_matches_the_pipeline(
    which: str, request: pytest.FixtureRequest, photo_jpeg: Path, tmp_path: Path
) -> None:
    bundle = request.getfixturevalue("litert_bundle") if which == "litert" else "zoo:n"
    res = package(bundle, "edge", tmp_path / "edge", PackageOptions())
    pkg = tmp_path / "edge"
    lib = {p.name.lower() for p in (pkg / "lib").iterdir()}
    assert "torch" not in lib and "cvdeploy" not in lib and "numpy" in lib
    assert res.sizes["total"] == sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
    # a phone's portrait photo: pixels stored landscape, an EXIF tag saying to rotate them; cvdeploy reads the
    # pixels as stored (what its parity and accuracy checks ran on), and so must predict.py
    from cvdeploy.doctor.faults import tag_orientation

    rotated = tag_orientation([photo_jpeg], tmp_path / "exif")[0]
    # -S: no site-packages at all — only the standard library and the folder's own lib/
    proc = subprocess.run([sys.executable, "-S", str(pkg / "predict.py"), str(photo_jpeg), str(rotated), "--json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env={"PATH": os.environ["PATH"]})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    art = "tflite-fp32" if which == "litert" else "onnx-fp32"
    for image in (photo_jpeg, rotated):
        got = json.loads(proc.stdout)[str(image)]
        same_detections(
            [{k: d[k] for k in ("class_id", "confidence", "box")} for d in got],
            reference(bundle, image, art),
            tol=0.01,
        )
    bad = subprocess.run([sys.executable, "-S", str(pkg / "predict.py"), str(tmp_path / "missing.jpg")],
                         capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]})  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: cannot read image")


def test_edge_predict_compiles_a_dynamic_batch_openvino_model_for_one_image(
    photo_jpeg: Path, tmp_path: Path
) -> None:
    """predict.py runs one image per call: an OpenVINO IR with a dynamic batch is compiled for batch 1 (as
    cvdeploy's own predict does), and still answers what the pipeline answers."""
    ov = pytest.importorskip("openvino")
    import importlib.util

    from cvdeploy.bundle import Bundle
    from cvdeploy.export import ExportOptions, export

    bundle = tmp_path / "n.cvd"
    export("zoo:n", bundle, ExportOptions(formats=("openvino",), dynamic_batch=True, parity_count=2))
    ir = Bundle.load(bundle).file("openvino-fp32")
    assert ov.Core().read_model(str(ir)).inputs[0].get_partial_shape()[0].is_dynamic  # what the package ships
    pkg = tmp_path / "edge"
    res = package(bundle, "edge", pkg, PackageOptions(vendor=False, artifact="openvino-fp32"))
    assert res.artifact == "openvino-fp32"
    spec = importlib.util.spec_from_file_location("edge_predict_ov", pkg / "predict.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.Model(pkg / "model", threads=2)
    shape = model.run.compiled.inputs[0].get_partial_shape()
    assert shape.is_static and shape[0].get_length() == 1
    import cv2

    got = model.predict(cv2.imread(str(photo_jpeg), cv2.IMREAD_COLOR))
    same_detections(
        [{k: d[k] for k in ("class_id", "confidence", "box")} for d in got],
        reference(bundle, photo_jpeg, "openvino-fp32"),
        tol=0.01,
    )
