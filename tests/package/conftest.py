"""Fixtures for the package tests: packages written once per session, a server started as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.package import PackageOptions, package

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=data, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def running(
    cmd: Sequence[str], ready_url: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``; wait (at most 120 s) until ``ready_url`` answers 200; stop it afterwards."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(list(cmd), env=full_env, cwd=cwd, stdout=log, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"{cmd[0]} exited with {proc.returncode}:\n{err[-3000:]}")
            try:
                if http(ready_url, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{ready_url} did not answer within 120 s")
            time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def image_command(pkg: Path) -> tuple[list[str], dict[str, str]]:
    """The image's ENTRYPOINT + CMD, with every path the Dockerfile COPYs mapped to the package folder
    (what ``docker build`` would put there), and the image's ENV."""
    entry: list[str] = []
    cmd: list[str] = []
    mapping: dict[str, str] = {}
    env: dict[str, str] = {}
    lines = (pkg / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "COPY":
            src, dst = rest.split()[-2:]
            mapping[dst.rstrip("/")] = str(pkg / src.rstrip("/"))
        elif word == "ENV":
            for pair in rest.split():
                k, _, v = pair.partition("=")
                env[k] = v
    env.pop("HOME", None)
    return [mapping.get(a, a) for a in entry + cmd], env


@pytest.fixture(scope="session")
def photo_jpeg(photos: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    p = tmp_path_factory.mktemp("img") / "photo.jpg"
    cv2.imwrite(str(p), photos[0])
    return p


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """zoo:n packaged for every server target (edge without vendored packages)."""
    root = tmp_path_factory.mktemp("packages")
    out = {}
    for t in ("docker", "kubernetes", "kserve", "sagemaker", "vertex", "azureml", "edge"):
        package(
            "zoo:n",
            t,
            root / t,
            PackageOptions(vendor=False, autoscale=(2, 6) if t != "docker" else None, security="ingress"),
        )
        out[t] = root / t
    return out


@pytest.fixture(scope="session")
def litert_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zoo:n with a ``tflite-fp32`` artifact written by LiteRT's schema (see tests/runtimes/tflite_builder.py)."""
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    from runtimes.tflite_builder import build

    dst = tmp_path_factory.mktemp("lb") / "zoo-n.cvd"
    shutil.copytree(Bundle.load("zoo:n").path, dst)
    b = Bundle.load(dst)
    build(dst / "tflite-fp32.tflite", 640, 640, len(b.contract.classes))
    b.add_artifact(Artifact(name="tflite-fp32", file="tflite-fp32.tflite", runtime="litert", made_by="test"))
    b.save()
    return dst
