"""``serve --engine ray`` on a real single-node Ray cluster bound for 127.0.0.1: two replicas share the
requests and answer exactly what the single-process server answers; the packaged Serve config runs."""

from __future__ import annotations

import collections
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")

from cvdeploy.serve.config import Platform, parse_config
from cvdeploy.serve.ray_engine import APP_NAME, RayDeployment, RayOptions, deploy
from cvdeploy.serve.ray_replica import REPLICA_HEADER

pytestmark = pytest.mark.slow

CONFIG = {"defaults": {"threads": 1, "max_queue_delay_ms": 5}}


def post(url: str, data: bytes, ctype: str = "image/jpeg") -> tuple[int, dict[str, Any], str]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read()), r.headers.get(REPLICA_HEADER, "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get(REPLICA_HEADER, "")


@pytest.fixture(scope="module")
def ray_server() -> Iterator[RayDeployment]:
    d = deploy(["zoo:n"], parse_config(CONFIG), Platform("local", "127.0.0.1", 0), RayOptions(replicas=2))
    try:
        yield d
    finally:
        d.stop()


def same_detections(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [d["class_id"] for d in a] == [d["class_id"] for d in b]
    np.testing.assert_allclose([d["box"] for d in a], [d["box"] for d in b], atol=0.02)
    np.testing.assert_allclose([d["confidence"] for d in a], [d["confidence"] for d in b], atol=1e-3)


def test_two_replicas_share_the_requests_and_answer_like_serve(
    ray_server: RayDeployment, photo_bytes: list[bytes]
) -> None:
    from cvdeploy.serve.server import run_in_background

    with run_in_background(["zoo:n"], config=parse_config(CONFIG)) as single:
        want = [post(f"{single.url}/v1/models/zoo-n/detect", img) for img in photo_bytes]
    assert all(s == 200 for s, _, _ in want) and any(doc["detections"] for _, doc, _ in want)
    url = f"{ray_server.url}/v1/models/zoo-n/detect"
    jobs = [(i, img) for _ in range(4) for i, img in enumerate(photo_bytes)]
    with ThreadPoolExecutor(4) as pool:  # concurrent, so replicas (and their batches) are busy at once
        got = list(pool.map(lambda job: (job[0], *post(url, job[1])), jobs))
    replicas = collections.Counter(rid for _, _, _, rid in got)
    assert len(replicas) == 2 and min(replicas.values()) >= 2, replicas
    for i, status, doc, _ in got:
        assert status == 200, doc
        same_detections(doc["detections"], want[i][1]["detections"])


def test_the_cluster_answers_errors_and_refuses_run_time_loads(ray_server: RayDeployment) -> None:
    status, doc, _ = post(f"{ray_server.url}/v1/models/zoo-n/detect", b"not an image")
    assert status == 415 and "error" in doc  # not a JPEG/PNG/WebP, as the single-process server says
    status, doc, _ = post(f"{ray_server.url}/v1/models/nope/detect", b"x")
    assert status == 404 and "unknown model 'nope'" in doc["error"]
    status, doc, _ = post(f"{ray_server.url}/v2/repository/models/zoo-n/unload", b"{}", "application/json")
    assert status == 401  # anonymous, as on the single-process server
    with urllib.request.urlopen(f"{ray_server.url}/metrics", timeout=30) as r:
        assert b"cvdeploy_" in r.read()


def test_the_packaged_serve_config_deploys_on_the_cluster(
    ray_server: RayDeployment, photo_bytes: list[bytes], tmp_path: Path
) -> None:
    """What ``serve deploy serve_config.yaml`` runs: the config validates against Ray's own schema, and its
    application (import path + args, the bundle at the package's path) replaces the running one."""
    import yaml
    from ray import serve
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from cvdeploy.package import PackageOptions, package
    from cvdeploy.serve.ray_replica import RayAppArgs, deployment_options

    pkg = package("zoo:n", "ray", tmp_path / "ray", PackageOptions(security="ingress", threads=1))
    doc = yaml.safe_load((pkg.path / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    app = doc["applications"][0]
    assert schema.applications[0].import_path == "cvdeploy.serve.ray_app:build_app"
    args = dict(app["args"])
    opts = deployment_options(RayAppArgs.model_validate(args), parse_config(args["config"]))
    assert app["deployments"] == [{"name": "cvdeploy", **opts}]
    # on this machine the bundle lies in the package, not at /models; the proxy is the test cluster's
    args.update(
        bundles=[str(pkg.path / "model" / "zoo-n.cvd")],
        host="127.0.0.1",
        port=int(ray_server.url.rsplit(":", 1)[1]),
    )
    module, _, attr = app["import_path"].partition(":")
    builder = getattr(__import__(module, fromlist=[attr]), attr)
    serve.run(call_user_app_builder_with_args_if_necessary(builder, args), name=APP_NAME, route_prefix="/")
    deps = serve.status().applications[APP_NAME].deployments["cvdeploy"]
    assert sum(deps.replica_states.values()) == 1  # the package's replicas: 1, rolled out over the two
    status, body, rid = post(f"{ray_server.url}/v1/models/zoo-n/detect", photo_bytes[0])
    assert status == 200 and body["artifact"] == "onnx-fp32" and rid
