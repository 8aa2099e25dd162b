"""Benchmark ``cvdeploy serve`` against the same work done in-process, side by side, on loopback.

    python benchmarks/serve.py [--bundle zoo:n] [--requests 40] [--soak-seconds 60]

Measures, with the server in its own process (``cvdeploy serve``) and the clients here:

1. image API, one 640-px photograph: p50 of ``POST /v1/models/NAME/detect`` vs the same pipeline
   in-process (decode the JPEG, ``Pipeline.predict``) — target ≤ 1.15×;
2. v2 binary infer of a preprocessed tensor: p50 vs a bare ``session.run`` — target ≤ 1.10×;
3. throughput at concurrency 8 (v2 binary, one image per request) with dynamic batching vs a second
   server without batching (target ≥ 1.3×) and vs a bare batch-8 ``session.run`` loop, the limit
   (target ≥ 0.9×); a bare batch-1 loop is measured too, since batch-8 / batch-1 of the runtime
   itself bounds what batching can gain on this CPU. All take turns in rounds of 16 images;
4. a soak at concurrency 16 on the image API for ``--soak-seconds`` after ``--warmup-seconds`` at
   the same load: failed requests (target 0), p99, and the server's resident-memory growth from
   the warmed-up state (target ≤ 10 %; growth from the idle server is reported too).

In-process and server requests alternate one by one, so background load hits both alike. Ends
with one ``RESULT key=value ...`` line. Uses ``zoo:n`` if it exists, else exports the untrained
zoo-n architecture at 640 with a dynamic batch into a temporary folder (speed does not depend on
the weights).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")


# ---- setup -----------------------------------------------------------------------------------------


def get_bundle(spec: str | None, workdir: Path) -> str:
    from cvdeploy.bundle import resolve_path
    from cvdeploy.errors import BundleError

    if spec:
        return spec
    try:
        resolve_path("zoo:n")
        return "zoo:n"
    except BundleError:
        pass
    import torch

    from cvdeploy.export import ExportOptions, export
    from cvdeploy.sources.onnx import ContractHints
    from cvdeploy.zoo.classes import CLASS_NAMES

    print("zoo:n is not built yet: exporting the zoo-n architecture at 640 (dynamic batch)", flush=True)
    torch.manual_seed(0)
    out = workdir / "zoo-n-640.cvd"
    opts = ExportOptions(formats=("onnx",), imgsz=(640, 640), dynamic_batch=True, parity_count=2,
                         hints=ContractHints(classes=list(CLASS_NAMES)))  # fmt: skip
    export("python:cvdeploy.zoo.model:build_n", out, opts)
    return str(out)


def photo_640() -> bytes:
    """A real photograph, 640 px wide, as JPEG."""
    from cvdeploy.images import sample_images

    img = sample_images(3)[2]
    h, w = img.shape[:2]
    img = cv2.resize(img, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``cvdeploy serve`` in a subprocess with a given model config."""

    def __init__(self, bundle: str, name: str, model_cfg: dict[str, Any], workdir: Path, tag: str) -> None:
        self.port = free_port()
        cfg = workdir / f"serve-{tag}.yaml"
        cfg.write_text(json.dumps({"defaults": model_cfg, "server": {"log_format": "text"}}))
        cmd = [sys.executable, "-m", "cvdeploy.cli.serve_cmd", bundle, "--port", str(self.port),
               "--config", str(cfg), "--log-level", "warning"]  # fmt: skip
        self.log = open(workdir / f"server-{tag}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.name = name
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                tail = Path(self.log.name).read_text()[-3000:]
                raise SystemExit(f"server exited with {self.proc.returncode}:\n{tail}")
            try:
                status, _ = Client(self.port).request("GET", "/v2/health/ready")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.2)

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Client:
    """One keep-alive HTTP/1.1 connection (the lightest client the standard library has)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.last_used = time.monotonic()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
        if time.monotonic() - self.last_used > 20:  # the server closes idle keep-alive connections
            self.conn.close()
        self.last_used = time.monotonic()
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            raise


def multipart(data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "cvdeploybenchboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def v2_binary(x: np.ndarray, output: str) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({
        "inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}  # fmt: skip


# ---- measurements -----------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def alternate(a: Callable[[], Any], b: Callable[[], Any], n: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately ``n`` times each (after one warm-up of each)."""
    a(), b()
    ta, tb = [], []
    for _ in range(n):
        ta.append(timed(a))
        tb.append(timed(b))
    return ta, tb


def ok(status_body: tuple[int, bytes]) -> None:
    status, body = status_body
    if status != 200:
        raise RuntimeError(f"request failed: {status} {body[:200]!r}")


def concurrent(port: int, make: Callable[[], tuple[str, bytes, dict[str, str]]], clients: int,
               per_client: int | None = None, seconds: float | None = None) -> dict[str, Any]:  # fmt: skip
    """``clients`` threads each sending requests back to back; returns counts, latencies and rate."""
    lat: list[float] = []
    failed = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds if seconds else None

    def worker() -> None:
        c = Client(port)
        path, body, headers = make()
        done = 0
        while True:
            if per_client is not None and done >= per_client:
                return
            if stop_at is not None and time.perf_counter() >= stop_at:
                return
            t = time.perf_counter()
            try:
                status, _ = c.request("POST", path, body, headers)
                good = status == 200
            except (OSError, http.client.HTTPException):
                good = False
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                failed[0] += 0 if good else 1
            done += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "failed": failed[0], "wall": wall, "rps": len(lat) / wall,
            "p50": pct(lat, 50), "p99": pct(lat, 99)}  # fmt: skip


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle to serve (default: zoo:n, else a fresh 640 export)")
    ap.add_argument("--requests", type=int, default=40, help="requests per latency measurement")
    ap.add_argument(
        "--throughput-requests",
        type=int,
        default=64,
        help="requests per throughput contender, sent in rounds of 16",
    )
    ap.add_argument("--soak-seconds", type=float, default=60.0, help="duration of the concurrency-16 soak")
    ap.add_argument(
        "--warmup-seconds", type=float, default=10.0, help="soak warm-up before memory is measured"
    )
    ap.add_argument("--max-batch-size", type=int, default=8, help="the batching server's max_batch_size")
    ap.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=50.0,
        help="the batching server's max_queue_delay_ms (long enough for answered clients to come back)",
    )
    args = ap.parse_args()

    from cvdeploy.bundle import Bundle
    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline

    workdir = Path(tempfile.mkdtemp(prefix="cvdeploy-bench-serve-"))
    load0 = os.getloadavg()
    try:
        bundle = get_bundle(args.bundle, workdir)
        b = Bundle.load(bundle)
        pipe, name = Pipeline.from_bundle(b), b.name
        out_name = pipe.runtime.outputs[0].name
        jpeg = photo_640()
        tensor, _ = pipe.preprocess([decode_image(jpeg)])
        session = pipe.runtime.session  # type: ignore[attr-defined]
        feeds = {pipe.input_name: tensor}
        outs = [o.name for o in session.get_outputs()]
        print(f"bundle {bundle} ({name}), input {tuple(tensor.shape)}, {os.cpu_count()} CPUs, "
              f"load average {load0[0]:.1f}", flush=True)  # fmt: skip

        batching = Server(bundle, name, {"max_batch_size": args.max_batch_size,
                                         "max_queue_delay_ms": args.max_queue_delay_ms,
                                         "queue_size": 64}, workdir, "batch")  # fmt: skip
        plain = Server(bundle, name, {"max_batch_size": 1, "queue_size": 64}, workdir, "nobatch")
        try:
            c = Client(batching.port)
            img_body, img_headers = multipart(jpeg)
            img_path = f"/v1/models/{name}/detect"
            t_inproc, t_img = alternate(
                lambda: pipe.predict([decode_image(jpeg)]),
                lambda: ok(c.request("POST", img_path, img_body, img_headers)),
                args.requests,
            )
            v2_body, v2_headers = v2_binary(tensor, out_name)
            v2_path = f"/v2/models/{name}/infer"
            t_bare, t_v2 = alternate(
                lambda: session.run(outs, feeds),
                lambda: ok(c.request("POST", v2_path, v2_body, v2_headers)),
                args.requests,
            )
            print(f"image API   p50 {ms(statistics.median(t_img))} ms vs in-process "
                  f"{ms(statistics.median(t_inproc))} ms", flush=True)  # fmt: skip
            print(f"v2 binary   p50 {ms(statistics.median(t_v2))} ms vs bare session.run "
                  f"{ms(statistics.median(t_bare))} ms", flush=True)  # fmt: skip

            # throughput: the three contenders take turns, round by round, so load drift hits all
            v2_req = lambda: (v2_path, v2_body, v2_headers)  # noqa: E731
            batch8 = np.concatenate([tensor] * 8)
            session.run(outs, {pipe.input_name: batch8})
            ok(Client(plain.port).request("POST", v2_path, v2_body, v2_headers))
            done = {"batch": [0, 0.0], "plain": [0, 0.0], "bare": [0, 0.0], "bare1": [0, 0.0]}
            rounds = max(1, args.throughput_requests // 16)
            for _ in range(rounds):
                for key, srv in (("batch", batching), ("plain", plain)):
                    res = concurrent(srv.port, v2_req, 8, per_client=2)
                    if res["failed"]:
                        raise RuntimeError(f"{res['failed']} throughput requests failed")
                    done[key][0] += res["requests"]
                    done[key][1] += res["wall"]
                done["bare"][1] += timed(
                    lambda: [session.run(outs, {pipe.input_name: batch8}) for _ in range(2)]
                )
                done["bare"][0] += 16
                done["bare1"][1] += timed(lambda: [session.run(outs, feeds) for _ in range(16)])
                done["bare1"][0] += 16
            rps = {k: n / wall for k, (n, wall) in done.items()}
            print(f"throughput  at concurrency 8: batching {rps['batch']:.2f} req/s, no batching "
                  f"{rps['plain']:.2f} req/s, bare batch-8 session.run {rps['bare']:.2f} img/s, bare batch-1 "
                  f"{rps['bare1']:.2f} img/s "
                  f"({int(done['batch'][0])} requests each, {rounds} interleaved rounds)", flush=True)  # fmt: skip
            stats = json.loads(c.request("GET", f"/v2/models/{name}/stats")[1])["model_stats"][0]
            batches = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
            print(f"batch sizes seen by the batching server (latency runs included): {batches}", flush=True)
            plain.stop()

            # warm up at the soak's concurrency first (allocator and runtime arenas settle), so the
            # growth measured next is what a long run would keep adding
            soak_req = lambda: (img_path, img_body, img_headers)  # noqa: E731
            rss_cold = batching.rss()
            warm = concurrent(batching.port, soak_req, 16, seconds=args.warmup_seconds)
            rss0 = batching.rss()
            soak = concurrent(batching.port, soak_req, 16, seconds=args.soak_seconds)
            rss1 = batching.rss()
            soak["failed"] += warm["failed"]
            print(f"soak        {soak['requests']} requests in {soak['wall']:.1f} s at concurrency 16, "
                  f"{soak['failed']} failed (warm-up included), p99 {ms(soak['p99'])} ms, RSS "
                  f"{rss_cold / 2**20:.0f} MiB idle → {rss0 / 2**20:.0f} after {warm['wall']:.0f} s warm-up "
                  f"→ {rss1 / 2**20:.0f} at the end", flush=True)  # fmt: skip
        finally:
            batching.stop()
            if plain.proc.poll() is None:
                plain.stop()

        load1 = os.getloadavg()
        r = {
            "image_p50_ms": ms(statistics.median(t_img)),
            "image_inproc_p50_ms": ms(statistics.median(t_inproc)),
            "image_ratio": f"{statistics.median(t_img) / statistics.median(t_inproc):.3f}",
            "v2_p50_ms": ms(statistics.median(t_v2)),
            "bare_p50_ms": ms(statistics.median(t_bare)),
            "v2_ratio": f"{statistics.median(t_v2) / statistics.median(t_bare):.3f}",
            "thr_batch_rps": f"{rps['batch']:.2f}",
            "thr_nobatch_rps": f"{rps['plain']:.2f}",
            "thr_bare_rps": f"{rps['bare']:.2f}",
            "thr_bare1_rps": f"{rps['bare1']:.2f}",
            "bare_batch_gain": f"{rps['bare'] / rps['bare1']:.3f}",  # the most batching can give here
            "batch_gain": f"{rps['batch'] / rps['plain']:.3f}",
            "vs_bare": f"{rps['batch'] / rps['bare']:.3f}",
            "max_batch_seen": max(batches, default=0),
            "soak_s": f"{soak['wall']:.0f}",
            "soak_requests": soak["requests"],
            "soak_failed": soak["failed"],
            "soak_p99_ms": ms(soak["p99"]),
            "rss_growth_pct": f"{(rss1 - rss0) / rss0 * 100:.1f}",
            "rss_growth_from_idle_pct": f"{(rss1 - rss_cold) / rss_cold * 100:.1f}",
            "loadavg": f"{load0[0]:.1f}-{load1[0]:.1f}",
            "cpus": os.cpu_count(),
        }
        met = [
            float(r["image_ratio"]) <= 1.15,
            float(r["v2_ratio"]) <= 1.10,
            float(r["batch_gain"]) >= 1.3,
            float(r["vs_bare"]) >= 0.9,
            soak["failed"] == 0,
            float(r["rss_growth_pct"]) <= 10.0,
        ]
        r["targets_met"] = f"{sum(met)}/{len(met)}"
        print("RESULT " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
