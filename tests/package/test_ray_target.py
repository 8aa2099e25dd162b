"""``--target ray``: a Serve config that Ray's own schema accepts, with the same deployment options as
``serve --engine ray`` (it runs on a cluster in tests/serve/test_ray_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cvdeploy.bundle import Bundle
from cvdeploy.cli.main import run
from cvdeploy.package import PackageOptions, package


def test_the_serve_config_names_the_app_its_bundle_and_scaling(tmp_path: Path) -> None:
    pkg = package("zoo:n", "ray", tmp_path / "r", PackageOptions(security="tls", autoscale=(2, 5), threads=3))
    doc = yaml.safe_load((pkg.path / "serve_config.yaml").read_text())
    assert doc["http_options"]["ssl_certfile"] == "/run/secrets/cvdeploy/tls.crt"
    (app,) = doc["applications"]
    assert app["import_path"] == "cvdeploy.serve.ray_app:build_app" and app["route_prefix"] == "/"
    assert app["args"]["bundles"] == ["/models/zoo-n.cvd"] and app["args"]["threads"] == 3
    (dep,) = app["deployments"]
    assert dep["autoscaling_config"]["min_replicas"] == 2 and dep["autoscaling_config"]["max_replicas"] == 5
    assert dep["ray_actor_options"] == {"num_cpus": 3}
    Bundle.load(pkg.path / "model" / "zoo-n.cvd")  # the trimmed bundle loads and verifies
    reqs = (pkg.path / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("ray==") for r in reqs) and any(r.startswith("onnxruntime==") for r in reqs)
    assert reqs[-1] == "cvdeploy[ray,serve]"
    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError:  # without the ray extra the file checks above are all there is
        return
    ServeDeploySchema.model_validate(doc)


def test_ray_needs_a_security_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["package", "zoo:n", "--target", "ray", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target ray: say how the server is secured" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
