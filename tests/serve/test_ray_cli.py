"""``cvdeploy serve --engine ray`` as a user runs it: a subprocess that starts its own loopback cluster,
hands the flags to the replicas, answers, and leaves nothing running after Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")

pytestmark = pytest.mark.slow


def status(url: str, host: str) -> int:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# SIGINT with the signal ignored at start, as every background job of a non-interactive shell has it (a CI
# script's `make test &`): Python then installs no handler of its own, and the command must; SIGTERM is
# what `docker stop` and Kubernetes send
@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_command_serves_with_its_flags_and_stops_on_a_signal(tmp_path: Path, stop_with: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "cvdeploy.cli.serve_cmd", "zoo:n", "--engine", "ray", "--replicas", "1",
           "--port", str(port), "--allowed-host", "models.internal", "--log-level", "warning"]  # fmt: skip
    out, err = open(tmp_path / "out", "w+"), open(tmp_path / "err", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_ignore_sigint if stop_with == signal.SIGINT else None)  # fmt: skip
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        deadline = time.monotonic() + 120
        while "listening on" not in (tmp_path / "out").read_text():
            assert proc.poll() is None, (tmp_path / "err").read_text()[-3000:]
            assert time.monotonic() < deadline, "serve --engine ray did not start within 120 s"
            time.sleep(0.5)
        # --allowed-host reached the replicas: that name is answered, no other (as on the built-in server)
        assert status(ready, "models.internal") == 200
        assert status(ready, "127.0.0.1") == status(ready, "evil.example") == 421
        text = (tmp_path / "out").read_text()
        assert "Ray Serve · 1 replica × " in text and f"http://127.0.0.1:{port}" in text
    finally:
        proc.send_signal(stop_with)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve --engine ray did not stop within 60 s of {signal.Signals(stop_with).name}; its log ends:\n"
                        + (tmp_path / "err").read_text()[-3000:] + (tmp_path / "out").read_text()[-1000:])  # fmt: skip
        finally:
            if proc.poll() is None:
                proc.kill()
            out.close()
            err.close()
    assert code == 0, (tmp_path / "err").read_text()[-3000:]
    with pytest.raises(OSError):  # the proxy went away with the cluster this command started
        urllib.request.urlopen(ready, timeout=5)
