"""``cvdeploy serve`` with security: secure defaults, flag combinations, protected bundles, and the README's
five-command setup run exactly as written."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml

from cvdeploy.cli.main import run
from cvdeploy.errors import ConfigError
from cvdeploy.security.bundlekeys import BundleKeys, using_keys
from cvdeploy.security.certs import client_context
from cvdeploy.security.keyfiles import KeyFiles, keygen
from cvdeploy.security.protect import ProtectOptions, protect
from cvdeploy.serve import run_in_background
from cvdeploy.serve.config import parse_config
from cvdeploy.serve.security import exposure, is_loopback
from cvdeploy.serve.server import TLSFiles

from .servers import NAME, Certs, dev_certs

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return dev_certs(tmp_path_factory.mktemp("certs") / "dev")


@pytest.fixture(scope="module")
def jpeg(photos: list[np.ndarray]) -> bytes:
    ok, buf = cv2.imencode(".jpg", photos[2])
    assert ok
    return buf.tobytes()


def serve(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run(["serve", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("host", "platform", "db", "tls", "insecure", "refused", "warning"),
    [
        ("127.0.0.1", "local", False, False, False, None, None),
        ("127.0.0.2", "local", False, False, False, None, None),
        ("::1", "local", False, False, False, None, None),
        ("localhost", "local", False, False, False, None, None),
        ("0.0.0.0", "local", False, False, False, "0.0.0.0 without authentication (--db) and TLS", None),
        ("10.1.2.3", "local", True, False, False, "10.1.2.3 without TLS", None),
        ("::", "local", False, True, False, ":: without authentication (--db)", None),
        ("0.0.0.0", "local", True, True, False, None, None),
        (
            "0.0.0.0",
            "local",
            False,
            False,
            True,
            None,
            "--insecure: listening on 0.0.0.0 without authentication",
        ),
        ("127.0.0.1", "local", False, False, True, None, "--insecure: listening on 127.0.0.1 without"),
        ("0.0.0.0", "local", True, True, True, None, "--insecure: listening on 0.0.0.0;"),
        ("0.0.0.0", "sagemaker", False, False, False, None, "listening on 0.0.0.0 for sagemaker"),
    ],
)
def test_secure_defaults(host: str, platform: str, db: bool, tls: bool, insecure: bool, refused: str | None,
                         warning: str | None) -> None:  # fmt: skip
    if refused is not None:
        with pytest.raises(ConfigError, match=re.escape(f"refusing to listen on {refused}")):
            exposure(host, platform, db, tls, insecure)
        return
    said = exposure(host, platform, db, tls, insecure)
    assert (said is None) if warning is None else (said is not None and said.startswith(warning)), said
    assert is_loopback(host) == (host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))


def test_serve_flags(tiny_bundle_path: Path, tmp_path: Path, certs: Certs, secrets_dir: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    b, db = str(tiny_bundle_path), str(tmp_path / "cvdeploy.db")
    tls = ["--tls-cert", str(certs.server_pem), "--tls-key", str(certs.server_key)]
    code, out = serve([b, "--host", "0.0.0.0", "--check"], capsys)
    assert code == 2 and "refusing to listen on 0.0.0.0 without authentication (--db) and TLS" in out
    code, out = serve([b, "--host", "0.0.0.0", "--db", db, "--check"], capsys)
    assert code == 2 and "without TLS" in out
    code, out = serve([b, "--host", "0.0.0.0", "--insecure", "--check"], capsys)
    assert code == 0 and "warning: --insecure" in out and "anonymous callers (no --db); plain HTTP" in out
    code, out = serve([b, "--host", "0.0.0.0", "--db", db, *tls, "--check"], capsys)
    assert code == 0 and "warning" not in out
    assert "API keys, RBAC, rate limits, audit log in" in out and "TLS ≥ 1.2" in out
    for args, message in (
        (["--jwt-issuer", "x", "--jwt-audience", "y", "--jwt-jwks", db], "need --db"),
        (["--db", db, "--jwt-issuer", "x"], "all three of --jwt-issuer, --jwt-audience and --jwt-jwks"),
        (
            ["--db", db, "--allow-anonymous-admin"],
            "--allow-anonymous-admin is for local experiments without --db",
        ),
        (["--tls-cert", str(certs.server_pem)], "TLS needs both --tls-cert and --tls-key"),
        (["--tls-client-ca", str(certs.ca_pem)], "--tls-client-ca needs --tls-cert"),
        (
            ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(certs.server_key)],
            "nope.pem: no such file",
        ),
        (
            ["--tls-cert", str(certs.client_pem), "--tls-key", str(certs.server_key)],
            "cannot use the TLS certificate/key",
        ),
        (["--db", str(tmp_path)], "is a folder"),
    ):
        code, out = serve([b, *args, "--check"], capsys)
        assert code == 2 and message in out and "Traceback" not in out, (args, out)
        assert len([line for line in out.splitlines() if line.startswith("error:")]) == 1


@pytest.fixture(scope="module")
def bundle_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFiles]:
    return {k: keygen(tmp_path_factory.mktemp(k) / "k") for k in ("ours", "theirs")}


@pytest.fixture(scope="module")
def protected(
    tiny_bundle_path: Path, bundle_keys: dict[str, KeyFiles], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    k = bundle_keys["ours"]
    out = tmp_path_factory.mktemp("protected") / "tiny-protected.cvd"
    protect(
        tiny_bundle_path,
        out,
        ProtectOptions(k.model_key, k.signing_key, obfuscate=True, seed=3, parity_images=2),
    )
    return out


def test_protected_bundles_at_start(protected: Path, bundle_keys: dict[str, KeyFiles], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    ours, theirs = bundle_keys["ours"], bundle_keys["theirs"]
    keys = ["--decrypt-key", str(ours.model_key), "--trust-key", str(ours.public_key)]
    code, out = serve([str(protected), *keys, "--check"], capsys)
    assert code == 0 and NAME in out, out
    code, out = serve([str(protected), "--check"], capsys)
    assert code == 2 and "is encrypted: pass --decrypt-key" in out
    code, out = serve([str(protected), "--decrypt-key", str(theirs.model_key), "--check"], capsys)
    assert code == 2 and "not with the given key" in out
    code, out = serve([str(protected), "--decrypt-key", str(ours.model_key), "--trust-key", str(theirs.public_key),
                       "--check"], capsys)  # fmt: skip
    assert code == 2 and "bad signature" in out
    for victim in (
        "cvdeploy.yaml",
        "onnx-fp32.onnx.enc",
    ):  # one flipped byte, in the manifest or a model file
        copy = tmp_path / victim / protected.name
        shutil.copytree(protected, copy)
        data = bytearray((copy / victim).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / victim).write_bytes(bytes(data))
        code, out = serve([str(copy), *keys, "--check"], capsys)
        assert code == 2 and ("bad signature" in out or "does not match its recorded sha256" in out), out
        assert "Traceback" not in out


def test_protected_bundle_served_over_tls_and_unsigned_loads_refused(
    protected: Path, bundle_keys: dict[str, KeyFiles], tiny_bundle_path: Path, certs: Certs, jpeg: bytes
) -> None:
    ours = bundle_keys["ours"]
    cfg = parse_config({"security": {"allow_anonymous_admin": True},
                        "repository": {"load_roots": [str(tiny_bundle_path.parent), str(protected.parent)]}})  # fmt: skip
    with using_keys(BundleKeys(ours.model_key, ours.public_key)):
        handle = run_in_background([protected], config=cfg, tls=TLSFiles(certs.server_pem, certs.server_key))
    try:
        with httpx.Client(base_url=handle.url, verify=client_context(certs.ca_pem), timeout=60) as c:
            r = c.post(f"/v1/models/{NAME}/detect", content=jpeg, headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 200 and r.json()["model"] == NAME
            # the trust key holds for run-time loads too (they run in worker threads)
            r = c.post(f"/v2/repository/models/{NAME}/load",
                       json={"parameters": {"path": str(tiny_bundle_path), "version": 2}})  # fmt: skip
            assert r.status_code == 400 and "not signed" in r.json()["error"], r.text
            r = c.post(f"/v2/repository/models/{NAME}/load",
                       json={"parameters": {"path": str(protected), "version": 3}})  # fmt: skip
            assert r.status_code == 200, r.text
    finally:
        handle.stop()


def _readme_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Five commands") :]
    block = section[
        section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)
    ]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = [shlex.split(line, comments=True) for line in joined.strip().splitlines()]
    return [c for c in commands if c]


@pytest.fixture
def readme_dir(
    tiny_bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secrets_dir: Path
) -> Iterator[Path]:
    """A folder holding ``model.cvd`` (the tiny bundle, named ``model``), as the README assumes."""
    model = tmp_path / "model.cvd"
    shutil.copytree(tiny_bundle_path, model)
    manifest = yaml.safe_load((model / "cvdeploy.yaml").read_text())
    manifest["name"] = "model"
    (model / "cvdeploy.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_the_readme_five_commands_work_as_written(
    readme_dir: Path, jpeg: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = _readme_commands()
    assert len(commands) == 5 and all(c[0] == "cvdeploy" for c in commands), commands
    for cmd in commands[:4]:
        assert run(cmd[1:]) == 0, cmd
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("cvd_"), "command 4 prints the API key last"
    serve_cmd = commands[4]
    assert serve_cmd[1] == "serve"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "cvdeploy.cli.serve_cmd", *serve_cmd[2:], "--port", "0"],
                            cwd=readme_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            m = re.search(r"listening on (https://127\.0\.0\.1:\d+)", line)
            if m:
                url = m.group(1)
                break
        assert url is not None, proc.stderr.read() if proc.stderr else ""
        with httpx.Client(
            base_url=url, verify=client_context(readme_dir / "certs" / "ca.pem"), timeout=60
        ) as c:
            r = c.post("/v1/models/model/detect", content=jpeg,
                       headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 200, r.text
            assert (
                c.post(
                    "/v1/models/model/detect", content=jpeg, headers={"Content-Type": "image/jpeg"}
                ).status_code
                == 401
            )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert run(["audit", "verify", "--db", "cvdeploy.db"]) == 0
