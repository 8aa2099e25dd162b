"""What each target writes: linted (hadolint), validated (Kubernetes schemas), consistent with the server."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from cvdeploy.bundle import Bundle
from cvdeploy.cli.main import run
from cvdeploy.package import TARGETS, PackageOptions, package
from cvdeploy.package.docker import PANELS

from .conftest import BIN, image_command

IMAGE_TARGETS = ("docker", "kubernetes", "kserve", "sagemaker", "vertex")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "heroku"], "unknown target 'heroku': use one of docker, kubernetes"),
        (["--target", "edge", "--artifact", "tflite-fp32"], "has no artifact 'tflite-fp32'"),
        (["--target", "docker", "--model", "s3"], "--model 's3'"),
        (["--target", "kubernetes", "--autoscale", "5,2"], "--autoscale '5,2'"),
        (["--target", "docker", "--wheel", "{tmp}/nope.whl"], "not a wheel file"),
        (["--target", "docker"], "say how the server is secured: --security tls"),
        (["--target", "kubernetes", "--security", "open"], "--security 'open': use tls or ingress"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "package",
        "zoo:n",
        "-o",
        str(tmp_path / "out"),
        *[a.replace("{tmp}", str(tmp_path)) for a in args],
        # every case but the security ones has said how the server is secured
        *([] if "--security" in args or "secured" in message else ["--security", "ingress"]),
    ]
    assert run(argv) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing half-written"


def test_a_target_refuses_an_artifact_it_cannot_run(
    litert_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            [
                "package",
                str(litert_bundle),
                "--target",
                "docker",
                "--artifact",
                "tflite-fp32",
                "--security",
                "ingress",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "runs onnx or openvino artifacts, not tflite-fp32" in one_error_line(capsys)


def test_a_non_empty_output_folder_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert run(["package", "zoo:n", "--target", "docker", "--security", "ingress", "-o", str(tmp_path)]) == 2
    assert "is not empty" in one_error_line(capsys)
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("target", IMAGE_TARGETS)
def test_dockerfile_passes_hadolint_and_copies_only_what_exists(
    packages: dict[str, Path], target: str
) -> None:
    pkg = packages[target]
    lint = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(pkg / "Dockerfile")], capture_output=True, text=True
    )
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    text = (pkg / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in text and "HEALTHCHECK" in text and "FROM python:3." in text and "-slim" in text
    ignore = (pkg / ".dockerignore").read_text().splitlines()
    for line in text.splitlines():
        if line.startswith("COPY "):
            src = line.split()[-2]
            assert (pkg / src).exists(), f"{line}: {src} is not in the build context"
            assert f"!{src}" in ignore or f"!{src.rstrip('/')}/" in ignore, (
                f"{src} is excluded by .dockerignore"
            )
    reqs = [r for r in (pkg / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert reqs and all("==" in r for r in reqs), "every requirement pinned"
    names = {r.split("[")[0].split("==")[0].lower() for r in reqs}
    assert {"onnxruntime", "fastapi", "uvicorn", "numpy"} <= names
    assert not names & {"torch", "openvino", "ultralytics", "ai-edge-litert"}, (
        "only the extras an ONNX artifact needs"
    )


@pytest.mark.slow
def test_openvino_artifact_brings_the_openvino_extra(tmp_path: Path) -> None:
    from cvdeploy.export import ExportOptions, export

    pytest.importorskip("openvino")
    b = export(
        str(Bundle.load("zoo:n").path / "onnx-fp32.onnx"),
        tmp_path / "ov.cvd",
        ExportOptions(formats=("onnx", "openvino"), parity_count=2),
    )
    res = package(b, "docker", tmp_path / "pkg", PackageOptions(artifact="openvino-fp32", security="ingress"))
    reqs = (tmp_path / "pkg" / "requirements.txt").read_text()
    assert "\nopenvino==" in reqs and "cvdeploy[openvino,serve]==" in reqs
    served = Bundle.load(tmp_path / "pkg" / "model")
    assert served.artifact_names == ["openvino-fp32"] and res.artifact == "openvino-fp32"


def test_compose_wires_prometheus_and_grafana_to_the_server(packages: dict[str, Path]) -> None:
    pkg = packages["docker"]
    compose = yaml.safe_load((pkg / "compose.yaml").read_text())
    server = compose["services"]["zoo-n"]
    assert server["read_only"] is True and "/tmp" in server["tmpfs"] and server["ports"] == ["8080:8080"]
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            assert (pkg / vol.split(":")[0]).exists(), vol
    prom = yaml.safe_load((pkg / "monitoring/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["zoo-n:8080"]
    dash = json.loads((pkg / "monitoring/grafana/dashboards/cvdeploy.json").read_text())
    assert len(dash["panels"]) == len(PANELS)
    ds = yaml.safe_load((pkg / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == dash["panels"][0]["datasource"]["uid"]


def _docs(folder: Path) -> list[dict]:
    return [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_kubernetes_manifests_validate_against_the_schemas(packages: dict[str, Path]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    from cvdeploy.package.kubernetes import KUBERNETES_VERSION

    docs = [d for d in _docs(packages["kubernetes"] / "kubernetes") if d["kind"] != "Kustomization"]
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Secret",
        "Service",
    ]
    for d in docs:
        kv.validate(d, KUBERNETES_VERSION, strict=True)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["resources"]["requests"]["cpu"] == "2"
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    from cvdeploy.serve.config import parse_config

    assert parse_config(yaml.safe_load(cm["data"]["serve.yaml"])).defaults.artifact == "onnx-fp32"
    # the container runs the image's own command with the image's arguments
    cmd, _ = image_command(packages["kubernetes"])
    assert c["args"] == json.loads(
        (packages["kubernetes"] / "Dockerfile").read_text().split("\nCMD ")[1].splitlines()[0]
    )
    assert cmd[:2] == ["cvdeploy", "serve"]


def test_kserve_inference_service_has_a_valid_v2_predictor(packages: dict[str, Path]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    from cvdeploy.package.kubernetes import KUBERNETES_VERSION

    docs = _docs(packages["kserve"] / "kserve")
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    pred = isvc["spec"]["predictor"]
    assert pred["protocolVersion"] == "v2" and (pred["minReplicas"], pred["maxReplicas"]) == (2, 6)
    assert pred["containers"][0]["name"] == "kserve-container"
    # KServe's predictor embeds a PodSpec: validate it as one (the CRD's own schema is not shipped offline)
    pod_spec = {k: v for k, v in pred.items() if k not in ("minReplicas", "maxReplicas", "protocolVersion")}
    kv.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec},
        KUBERNETES_VERSION,
        strict=True,
    )
    for d in docs:
        if d["kind"] == "ConfigMap":
            kv.validate(d, KUBERNETES_VERSION, strict=True)


def test_sagemaker_model_tar_is_a_bundle_at_its_root(packages: dict[str, Path], tmp_path: Path) -> None:
    pkg = packages["sagemaker"]
    with tarfile.open(pkg / "model.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    assert "cvdeploy.yaml" in names and "onnx-fp32.onnx" in names
    assert Bundle.load(tmp_path).artifact_names == ["onnx-fp32"]  # hashes verified
    assert not (pkg / "model").exists() and "COPY model/" not in (pkg / "Dockerfile").read_text()
    assert (pkg / "serve").stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(pkg / "serve")]).returncode == 0
    assert '\nCMD ["serve"]' in (pkg / "Dockerfile").read_text()


def test_azureml_files_reference_what_exists(packages: dict[str, Path]) -> None:
    pkg = packages["azureml"]
    dep = yaml.safe_load((pkg / "deployment.yml").read_text())
    assert (pkg / dep["code_configuration"]["code"] / dep["code_configuration"]["scoring_script"]).is_file()
    assert (pkg / dep["environment"]["conda_file"]).is_file() and (
        pkg / dep["model"]["path"] / "cvdeploy.yaml"
    ).is_file()
    env = yaml.safe_load((pkg / "environment.yml").read_text())
    pip = env["dependencies"][-1]["pip"]
    assert "azureml-inference-server-http" in pip and any(p.startswith("onnxruntime==") for p in pip)
    assert pip[-1].startswith("cvdeploy==") and not any(
        p.lower().startswith(("fastapi", "uvicorn", "matplotlib")) for p in pip
    )


def test_edge_folder_without_vendoring_lists_its_runtime(packages: dict[str, Path]) -> None:
    pkg = packages["edge"]
    meta = json.loads((pkg / "model" / "contract.json").read_text())
    assert meta["runtime"] == "onnxruntime" and (pkg / "model" / meta["file"]).is_file()
    reqs = (pkg / "requirements.txt").read_text()
    assert "onnxruntime==" in reqs and "numpy==" in reqs and "torch" not in reqs and "cvdeploy" not in reqs
    assert not (pkg / "lib").exists()
    assert "total" in (pkg / "SIZE.txt").read_text()


def test_every_target_is_declared_once_and_documented() -> None:
    from cvdeploy.package import target

    for name in TARGETS:
        t = target(name)
        assert t.name == name and t.summary and t.needs
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name in TARGETS:
        assert f"--target {name}" in readme, f"README's Deploy section has no command for {name}"


def test_a_tls_container_serves_https_with_mounted_certificates(tmp_path: Path) -> None:
    """--security tls: the server terminates TLS itself (certificates from a mounted secret, the security
    database from $CVDEPLOY_DB_URL); probes and the HEALTHCHECK speak HTTPS."""
    import json

    import yaml

    from cvdeploy.package.base import TLS_DIR

    package("zoo:n", "kubernetes", tmp_path / "k8s", PackageOptions(security="tls"))
    docker = (tmp_path / "k8s" / "Dockerfile").read_text()
    cmd = json.loads(docker.split("CMD [")[-1].split("]")[0].join("[]"))
    assert cmd[cmd.index("--tls-cert") + 1] == f"{TLS_DIR}/tls.crt" and "--insecure" not in cmd
    assert "https://127.0.0.1" in docker
    deploy = next(
        d for d in yaml.safe_load_all((tmp_path / "k8s" / "kubernetes" / "deployment.yaml").read_text()) if d
    )
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in container["volumeMounts"]
    (tls,) = [v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"].endswith("-tls")
    package("zoo:n", "docker", tmp_path / "plain", PackageOptions(security="ingress"))
    assert "--insecure" in (tmp_path / "plain" / "Dockerfile").read_text()
