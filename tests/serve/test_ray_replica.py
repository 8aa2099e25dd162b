"""What one Ray Serve replica runs, driven in-process (no cluster): the regular app, adapted to replication;
the deployment's options; the CLI's one-line refusals for ``--engine ray``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cvdeploy.cli.main import run as cli
from cvdeploy.serve.config import parse_config
from cvdeploy.serve.errors import Conflict, Forbidden, Unauthorized
from cvdeploy.serve.ray_replica import (
    REPLICA_HEADER,
    RayAppArgs,
    ReplicatedModels,
    config_args,
    deployment_options,
    replica_app,
)
from cvdeploy.serve.security import DenyActions, Principal, Security

from .conftest import run
from .test_ray_batching import outside_a_replica  # noqa: F401 - the autouse fixture, for @serve.batch


@pytest.fixture(autouse=True)
def _needs_ray_for_the_batcher() -> None:
    pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")


@contextlib.asynccontextmanager
async def replica(args: RayAppArgs, rid: str = "r1") -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app, setup = replica_app(args, rid)
    inner = app.app
    try:
        async with inner.router.lifespan_context(inner):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=60) as c:
                yield c, inner
    finally:
        if setup is not None:
            setup.close()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", data.astronaut()[:, :, ::-1])
    assert ok
    return buf.tobytes()


def test_a_replica_answers_like_the_single_process_app(jpeg: bytes) -> None:
    from cvdeploy.serve.app import create_app
    from cvdeploy.serve.ray_batching import ServeBatcher

    from .conftest import serving

    async def body() -> None:
        cfg = {"defaults": {"threads": 1}}
        async with serving(create_app(["zoo:n"], parse_config(cfg))) as plain:
            want = await plain.post(
                "/v1/models/zoo-n/detect", content=jpeg, headers={"Content-Type": "image/jpeg"}
            )
        async with replica(RayAppArgs(bundles=["zoo:n"], config=cfg)) as (client, inner):
            got = await client.post(
                "/v1/models/zoo-n/detect", content=jpeg, headers={"Content-Type": "image/jpeg"}
            )
            mv = inner.state.service.repository.get("zoo-n")
            assert isinstance(mv.batcher, ServeBatcher) and mv.batcher.stats.requests == 1
            assert (
                await client.get("/v1/models/zoo-n/monitor")
            ).status_code == 200  # the monitoring routes too
        assert want.status_code == got.status_code == 200
        assert got.headers[REPLICA_HEADER] == "r1" and got.headers["x-request-id"]
        a, b = want.json(), got.json()
        assert a["detections"] and a["detections"] == b["detections"]

    run(body())


@pytest.mark.parametrize(
    ("anonymous_admin", "status", "message"),
    [(False, 401, "anonymous callers may not unload"), (True, 409, "would change one replica only")],
)
def test_run_time_model_changes_are_refused_on_a_replica(
    anonymous_admin: bool, status: int, message: str
) -> None:
    async def body() -> None:
        cfg = {"security": {"allow_anonymous_admin": anonymous_admin}}
        async with replica(RayAppArgs(bundles=["zoo:n"], config=cfg)) as (client, inner):
            r = await client.post("/v2/repository/models/zoo-n/unload", json={})
            assert r.status_code == status and message in r.json()["error"]
            assert inner.state.service.repository.get("zoo-n").version == 1  # nothing changed
            assert (await client.get("/v2/health/ready")).status_code == 200

    run(body())


@pytest.mark.parametrize(
    ("principal", "action", "inner", "raised"),
    [
        (Principal("ops", "api-key", frozenset({"operator"})), "load", Security().authorizer, Conflict),
        (Principal("ops", "api-key", frozenset({"operator"})), "rollback", Security().authorizer, Conflict),
        (Principal("ops", "api-key", frozenset({"operator"})), "infer", Security().authorizer, None),
        (Principal("ops", "api-key", frozenset({"viewer"})), "load", DenyActions(["load"]), Forbidden),
        (Principal.anonymous(), "unload", Security().authorizer, Unauthorized),  # Security's own rule
    ],
)
def test_replicated_models_refuses_state_changes_after_the_inner_authorizer(
    principal: Principal, action: str, inner: Any, raised: type[Exception] | None
) -> None:
    sec = Security(authorizer=ReplicatedModels(inner))
    if raised is None:
        sec.authorize(principal, action, "model:m")
    else:
        with pytest.raises(raised):
            sec.authorize(principal, action, "model:m")


def test_every_replica_authenticates_against_the_database(tmp_path: Path, jpeg: bytes) -> None:
    from cvdeploy.security.setup import SecuritySetup

    db, secrets = str(tmp_path / "sec.db"), str(tmp_path / "secrets")
    setup = SecuritySetup.build(db, secrets_dir=secrets)
    token = setup.keys.create("app", "predictor").token
    setup.close()

    async def body() -> None:
        async with replica(RayAppArgs(bundles=["zoo:n"], db=db, secrets_dir=secrets)) as (client, _):
            url, head = "/v1/models/zoo-n/detect", {"Content-Type": "image/jpeg"}
            assert (await client.post(url, content=jpeg, headers=head)).status_code == 401
            ok = await client.post(url, content=jpeg, headers={**head, "Authorization": f"Bearer {token}"})
            assert ok.status_code == 200 and ok.json()["detections"]

    run(body())
    check = SecuritySetup.build(db, secrets_dir=secrets)
    try:  # the replica audited both requests (the refusal too) into the database's signed chain
        infers = [r for r in check.audit.tail(10) if r["action"] == "infer"]
        assert [r["outcome"] for r in infers] == ["failure", "success"] and check.audit.verify().ok
    finally:
        check.close()


def test_the_config_reaches_replicas_as_the_cli_left_it() -> None:
    """Flags change the config by assignment and by overrides; a replica must parse back the same settings,
    and a model's unset keys must still follow ``defaults``."""
    cfg = parse_config({"defaults": {"max_batch_size": 4}, "models": {"a": {"queue_size": 9}}})
    cfg = cfg.with_overrides(threads=1, max_queue_delay_ms=7.0)
    cfg.server.log_level = "warning"  # as --log-level does
    cfg.security.allowed_hosts = ["models.internal"]  # as --allowed-host does
    back = parse_config(config_args(cfg))
    assert back.server.log_level == "warning" and back.security.allowed_hosts == ["models.internal"]
    for name in ("a", "other"):
        assert back.model(name) == cfg.model(name)
    assert back.model("a").max_batch_size == 4 and back.model("a").queue_size == 9


def test_deployment_options_follow_replicas_autoscaling_and_batching() -> None:
    cfg = parse_config(
        {"defaults": {"max_batch_size": 4}, "models": {"big": {"max_batch_size": 16, "queue_size": 128}}}
    )
    fixed = deployment_options(RayAppArgs(bundles=["zoo:n"], replicas=3, threads=2), cfg)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 2}
    assert fixed["max_ongoing_requests"] == 32 and fixed["max_queued_requests"] == 128  # two batches of 16
    auto = deployment_options(RayAppArgs(bundles=["zoo:n"], autoscale=(1, 4)), cfg)
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2"], "--replicas needs --engine ray"),
        (["--address", "auto"], "--address needs --engine ray"),
        (["--engine", "spark"], "--engine 'spark': use uvicorn"),
        (["--engine", "ray", "--replicas", "2", "--autoscale", "1,2"], "not both"),
        (["--engine", "ray", "--autoscale", "3,1"], "--autoscale '3,1'"),
        (
            ["--engine", "ray", "--address", "http://head:8265"],
            "use auto (the cluster on this machine) or ray://",
        ),
        (
            ["--engine", "ray", "--tls-client-ca", "ca.pem", "--tls-cert", "c", "--tls-key", "k"],
            "--tls-client-ca needs",
        ),
        (["--engine", "ray", "--platform", "sagemaker"], "--platform sagemaker needs the built-in server"),
    ],
)
def test_bad_ray_flags_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["serve", "zoo:n", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_engine_ray_without_ray_names_the_pip_line() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ray":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Hide())
        from cvdeploy.cli.main import run
        sys.exit(run(["serve", "zoo:n", "--engine", "ray", "--replicas", "2"]))
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "cvdeploy[ray]"' in lines[0] and "Traceback" not in p.stderr, (
        p.stderr
    )


def test_check_shows_the_plan_without_starting_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["serve", "zoo:n", "--engine", "ray", "--autoscale", "1,3", "--check"]) == 0
    out = capsys.readouterr().out
    assert "zoo-n" in out and "engine: Ray Serve, autoscaling 1–3 replicas" in out
    import ray

    assert not ray.is_initialized()
