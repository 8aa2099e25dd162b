"""Soak ``cvdeploy serve`` with valid traffic mixed with hostile requests, and watch its memory.

    python benchmarks/soak.py [--bundle zoo:n] [--duration 300] [--clients 16] [--hostile 0.10]

The server runs in its own process (``cvdeploy serve``, default configuration: anonymous callers
may not change models) on 127.0.0.1; the clients run here, one keep-alive connection each.

1. idle: resident memory (RSS) of the ready server;
2. the hostile corpus, once: every kind of request of issue 10's table (A–M) — broken tensor
   shapes, deep and huge JSON, mistyped repository parameters and versions, paths outside the
   roots, bad overrides, requests larger than the queue, slow and unfinished requests, broken and
   bomb images, a 25-megapixel 16-bit PNG, oversized and malformed HTTP heads, foreign Host
   headers, text/plain state changes — then RSS again;
3. the soak: ``--clients`` threads for ``--duration`` seconds, each request valid (image API
   multipart, SageMaker raw image, v2 binary infer, metadata) or, with probability ``--hostile``,
   drawn from the fast part of the corpus. RSS is sampled every second.

Targets (issue 10): 0 failures among valid requests, 0 answers ≥ 500 among all, RSS at the end
within 1.3× of RSS after the first 30 s of the soak. Ends with one ``RESULT key=value ...`` line.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).parent))
from _bench_model import default_bundle

from serve import Client, free_port, multipart, photo_640

Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers
RawRequest = tuple[bytes, float]  # bytes sent on a fresh socket, pause between bytes


class Server:
    """``cvdeploy serve`` in a subprocess, default configuration."""

    def __init__(self, bundle: str, workdir: Path) -> None:
        self.port = free_port()
        self.log = open(workdir / "server.log", "w")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "cvdeploy.cli.serve_cmd",
            bundle,
            "--port",
            str(self.port),
            "--log-level",
            "error",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                raise SystemExit(
                    f"server exited with {self.proc.returncode}:\n{Path(self.log.name).read_text()[-3000:]}"
                )
            try:
                if Client(self.port).request("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ---- traffic -----------------------------------------------------------------------------------------


def v2_binary(x: np.ndarray, output: str) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()  # fmt: skip
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}  # fmt: skip


def valid_requests(name: str, jpeg: bytes, tensor: np.ndarray, output: str) -> list[Request]:
    body, headers = multipart(jpeg)
    v2_body, v2_headers = v2_binary(tensor, output)
    return [
        ("POST", f"/v1/models/{name}/detect", body, headers),
        ("POST", f"/v1/models/{name}/detect?conf=0.3&max_det=50", jpeg, {"Content-Type": "image/jpeg"}),
        ("POST", "/invocations", jpeg, {"Content-Type": "image/jpeg"}),
        ("POST", f"/v2/models/{name}/infer", v2_body, v2_headers),
        ("GET", f"/v2/models/{name}", b"", {}),
        ("GET", f"/v2/models/{name}/ready", b"", {}),
    ]


def _png(width: int, height: int, raw: bytes, depth: int = 8, ctype: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def png16(width: int, height: int, alpha: bool) -> bytes:
    """A 16-bit RGB(A) image of ramps: every pixel differs, yet the file stays well under the body limit
    (written with PNG's "Up" row filter, which turns the ramps into constant differences)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.uint32)
    chans = [(xx * (3 * c + 5) + yy * (c + 2) * 7) % 65536 for c in range(4 if alpha else 3)]
    rows = np.stack(chans, -1).astype(">u2").reshape(height, -1).view(np.uint8)
    up = np.diff(rows, axis=0, prepend=np.zeros((1, rows.shape[1]), np.uint8))
    raw = np.concatenate([np.full((height, 1), 2, np.uint8), up], axis=1).tobytes()
    return _png(width, height, raw, depth=16, ctype=6 if alpha else 2)


def hostile_corpus(
    name: str, jpeg: bytes, big_png: bytes, mid_png: bytes
) -> tuple[list[Request], list[RawRequest], list[RawRequest]]:
    """(HTTP requests, fast raw-socket requests, slow raw-socket requests) covering causes A–M."""
    repo = f"/v2/repository/models/{name}"
    js = {"Content-Type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000
    big_int = b"9" * 5000

    def v2(shape: Any) -> Request:
        head = json.dumps({"inputs": [{"name": "images", "shape": shape, "datatype": "FP32",
                                       "parameters": {"binary_data_size": 0}}]}).encode()  # fmt: skip
        return ("POST", f"/v2/models/{name}/infer", head, {"Inference-Header-Content-Length": str(len(head))})

    sos = jpeg.index(b"\xff\xda")
    corrupt = bytearray(jpeg)
    corrupt[sos + 300 : sos + 3000] = bytes(random.Random(1).randrange(0, 255) for _ in range(2700))
    small = cv2.imencode(".jpg", np.full((100, 100), 128, np.uint8))[1].tobytes()
    frame = small.index(b"\xff\xc0")
    claims = bytearray(small)
    claims[frame + 5 : frame + 9] = struct.pack(">HH", 7000, 7000)
    b64 = base64.b64encode(small).decode()
    img = {"Content-Type": "image/jpeg"}
    http_reqs: list[Request] = [
        v2([18446744073709551616, 0]), v2([2**63 - 1, 0]), v2([1] * 65),  # A
        *[("POST", p, body, js) for p in (f"/v2/models/{name}/infer", "/v2/repository/index", f"{repo}/load", "/invocations")
          for body in (deep, b'{"version": ' + big_int + b"}")],  # B
        *[("POST", f"{repo}/{r}", json.dumps({"parameters": p}).encode(), js)
          for r in ("load", "unload", "rollback") for p in ("abc", [1, 2], 5)],  # C
        ("POST", f"{repo}/unload", b'{"version": Infinity}', js), ("POST", f"{repo}/unload", b'{"version": 1e400}', js),
        *[("GET", f"/v2/models/{name}/versions/{s}", b"", {}) for s in ("%2B1", "%201", "%EF%BC%91")],  # D
        ("POST", f"{repo}/load", json.dumps({"path": "~nosuchuser/x"}).encode(), js),
        ("POST", f"{repo}/load", json.dumps({"path": "a" * 300}).encode(), js), ("POST", f"{repo}/load", b'{"path": "/etc"}', js),  # E
        ("POST", f"/v1/models/{name}/detect?max_det=Infinity", jpeg, img), ("POST", f"/v1/models/{name}/detect?conf=" + "1" * 400, jpeg, img),
        ("POST", f"/v1/models/{name}/detect?max_det=2.7", jpeg, img), ("POST", f"/v1/models/{name}/detect?confidence=0.99", jpeg, img),  # F
        ("POST", "/invocations", json.dumps({"instances": [{"b64": b64}] * 100}).encode(), js),  # G
        ("POST", f"/v1/models/{name}/detect", jpeg[: len(jpeg) // 2] + b"\xff\xd9", img),
        ("POST", f"/v1/models/{name}/detect", bytes(corrupt), img),
        ("POST", f"/v1/models/{name}/detect", _png(8, 8, b"\x00" * 4000), {"Content-Type": "image/png"}),
        ("POST", f"/v1/models/{name}/detect", bytes(claims), img),
        ("POST", f"/v1/models/{name}/detect", jpeg + b"trailing", img),
        ("POST", f"/v1/models/{name}/detect", mid_png, {"Content-Type": "image/png"}),  # I, M
        *[("POST", f"/v2/repository/models/m{i}%00{'x' * 100}/load", b"{}", js) for i in range(5)],  # K
        ("POST", f"{repo}/unload", b"{}", {"Content-Type": "text/plain"}), ("POST", f"{repo}/unload", b"", {}),
        ("GET", "/v2/health/live", b"", {"Host": "evil.example"}), ("GET", "/v2/health/live/", b"", {}),  # L
    ]  # fmt: skip
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    fast_raw: list[RawRequest] = [
        (head + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n", 0.0),
        (head + b"X: y\r\n" * 10_000 + b"\r\n", 0.0),
        (b"GET /v2/health/live HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 0.0),
        (b"GET /v2/health/live\r\n\r\n", 0.0),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 0.0),
    ]  # J
    slow_raw: list[RawRequest] = [
        (head, 0.0),  # H: a head that never ends
        (
            b"POST /v2/repository/index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n12345678",
            0.0,
        ),
        (head + b"X-Slow: " + b"a" * 40, 0.5),  # a head trickled byte by byte
    ]
    corpus_only = [
        ("POST", f"/v1/models/{name}/detect", big_png, {"Content-Type": "image/png"})
    ]  # M: 25 MP, 16-bit
    return http_reqs + corpus_only, fast_raw, slow_raw


def send_raw(port: int, data: bytes, pause: float, timeout: float = 120.0) -> int | None:
    """Send bytes on a fresh connection and read to its end; → the answer's status (None: just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            if pause:
                for b in data:
                    s.sendall(bytes([b]))
                    time.sleep(pause)
            else:
                s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else None


@dataclass
class Tally:
    valid: int = 0
    hostile: int = 0
    failures: int = 0
    got_5xx: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int | None, valid: bool, seconds: float, what: str) -> None:
        with self.lock:
            code = status or 0
            self.statuses[code] = self.statuses.get(code, 0) + 1
            if valid:
                self.valid += 1
                self.latencies.append(seconds)
                if status != 200:
                    self.failures += 1
                    if len(self.examples) < 10:
                        self.examples.append(f"valid {what}: {status}")
            else:
                self.hostile += 1
            if code >= 500:
                self.got_5xx += 1
                if len(self.examples) < 10:
                    self.examples.append(f"{'valid' if valid else 'hostile'} {what}: {status}")


def run_http(client: Client, req: Request) -> int | None:
    method, path, body, headers = req
    try:
        return client.request(method, path, body or None, headers)[0]
    except (OSError, http.client.HTTPException):
        return None  # the server closed the connection: a refusal, not an answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle to serve (default: zoo:n, else a fresh 640 export)")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of mixed traffic (default 300)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--hostile", type=float, default=0.10, help="share of hostile requests (default 0.10)")
    ap.add_argument(
        "--baseline-after", type=float, default=30.0, help="RSS baseline this many seconds into the soak"
    )
    args = ap.parse_args()
    if args.baseline_after >= args.duration:
        args.baseline_after = args.duration / 3

    from cvdeploy.bundle import Bundle
    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline

    workdir = Path(tempfile.mkdtemp(prefix="cvdeploy-soak-"))
    try:
        bundle = default_bundle(args.bundle, workdir)
        b = Bundle.load(bundle)
        pipe = Pipeline.from_bundle(b)
        jpeg = photo_640()
        tensor, _ = pipe.preprocess([decode_image(jpeg)])
        print("making the 25 MP 16-bit PNG of the corpus ...", flush=True)
        big_png, mid_png = png16(5000, 5000, alpha=False), png16(1600, 1200, alpha=True)
        valid = valid_requests(b.name, jpeg, tensor, pipe.runtime.outputs[0].name)
        http_hostile, fast_raw, slow_raw = hostile_corpus(b.name, jpeg, big_png, mid_png)
        mixed_hostile: list[Callable[[Client], int | None]] = [
            *[(lambda c, r=r: run_http(c, r)) for r in http_hostile[:-1]],
            *[(lambda c, d=d: send_raw(c.port, d, 0.0)) for d, _ in fast_raw],
        ]
        server = Server(bundle, workdir)
        try:
            time.sleep(2)
            rss_idle = server.rss_mb()
            print(
                f"server ready: {bundle} ({b.name}), {os.cpu_count()} CPUs, RSS idle {rss_idle:.0f} MB",
                flush=True,
            )

            # ---- the hostile corpus, once -------------------------------------------------------------
            corpus = Tally()
            slow = [threading.Thread(target=lambda d=d, p=p: corpus.add(send_raw(server.port, d, p), False, 0, "slow raw"))
                    for d, p in slow_raw]  # fmt: skip
            for th in slow:
                th.start()
            c = Client(server.port)
            for req in http_hostile:
                corpus.add(run_http(c, req), False, 0, f"{req[0]} {req[1][:60]}")
            for d, p in fast_raw:
                corpus.add(send_raw(server.port, d, p), False, 0, "raw")
            for th in slow:
                th.join()
            c = Client(server.port)  # the old connection idled past the keep-alive timeout while we waited
            for req in valid:
                st = run_http(c, req)
                corpus.add(st, True, 0, f"{req[0]} {req[1][:60]} after the corpus")
            rss_corpus = server.rss_mb()
            print(f"hostile corpus: {corpus.hostile} requests, answers {dict(sorted(corpus.statuses.items()))} "
                  f"(0 = connection closed), {corpus.got_5xx} × 5xx, valid requests after it failed: "
                  f"{corpus.failures}; RSS {rss_corpus:.0f} MB", flush=True)  # fmt: skip

            # ---- the soak -----------------------------------------------------------------------------
            tally = Tally()
            start = time.perf_counter()
            stop_at = start + args.duration
            samples: list[tuple[float, float]] = []

            def client_loop(seed: int) -> None:
                rng = random.Random(seed)
                cl = Client(server.port)
                while time.perf_counter() < stop_at:
                    if rng.random() < args.hostile:
                        tally.add(rng.choice(mixed_hostile)(cl), False, 0, "hostile")
                        continue
                    req = rng.choice(valid)
                    t = time.perf_counter()
                    st = run_http(cl, req)
                    tally.add(st, True, time.perf_counter() - t, f"{req[0]} {req[1][:60]}")

            threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
            for th in threads:
                th.start()
            rss_start = None
            while any(th.is_alive() for th in threads):
                time.sleep(1.0)
                now = time.perf_counter() - start
                samples.append((now, server.rss_mb()))
                if rss_start is None and now >= args.baseline_after:
                    rss_start = samples[-1][1]
                    print(f"  {now:.0f} s: RSS {rss_start:.0f} MB under {args.clients} clients (the baseline), "
                          f"{tally.valid + tally.hostile} requests so far", flush=True)  # fmt: skip
                elif int(now) % 60 == 0:
                    print(f"  {now:.0f} s: RSS {samples[-1][1]:.0f} MB, {tally.valid + tally.hostile} requests, "
                          f"{tally.failures} failed, {tally.got_5xx} × 5xx", flush=True)  # fmt: skip
            for th in threads:
                th.join()
            rss_end = server.rss_mb()
            rss_peak = max(r for _, r in samples)
            ready = Client(server.port).request("GET", "/v2/health/ready")[0]
        finally:
            server.stop()

        lat = np.asarray(tally.latencies) * 1000
        p99 = float(np.percentile(lat, 99)) if lat.size else float("nan")
        p50 = float(np.percentile(lat, 50)) if lat.size else float("nan")
        base = rss_start or rss_corpus
        print(f"soak: {tally.valid} valid + {tally.hostile} hostile requests in {args.duration:.0f} s from "
              f"{args.clients} clients; answers {dict(sorted(tally.statuses.items()))}; valid p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms; RSS idle {rss_idle:.0f} → after corpus {rss_corpus:.0f} → at "
              f"{args.baseline_after:.0f} s {base:.0f} → peak {rss_peak:.0f} → end {rss_end:.0f} MB", flush=True)  # fmt: skip
        for e in corpus.examples + tally.examples:
            print("  example:", e)
        failures = tally.failures + corpus.failures
        got_5xx = tally.got_5xx + corpus.got_5xx
        ratio = rss_end / base
        met = [failures == 0, got_5xx == 0, ratio <= 1.3, ready == 200]
        r = {
            "requests": tally.valid + tally.hostile, "failures": failures, "got_5xx": got_5xx,
            "rss_start_mb": f"{base:.0f}", "rss_end_mb": f"{rss_end:.0f}", "p99_ms": f"{p99:.1f}",
            "valid": tally.valid, "hostile": tally.hostile + corpus.hostile, "p50_ms": f"{p50:.1f}",
            "rss_idle_mb": f"{rss_idle:.0f}", "rss_after_corpus_mb": f"{rss_corpus:.0f}", "rss_peak_mb": f"{rss_peak:.0f}",
            "rss_ratio": f"{ratio:.3f}", "duration_s": f"{args.duration:.0f}", "clients": args.clients,
            "cpus": os.cpu_count(), "targets_met": f"{sum(met)}/{len(met)}",
        }  # fmt: skip
        print("RESULT " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
