"""The server at the engine's limit (issue 16, item 3): ``cvdeploy serve`` against a bare loop of the
same pipeline on the same threads, measured side by side in one run.

    python benchmarks/serve.py [--bundle zoo:n] [--rounds 5] [--requests 32] [--load-seconds 8]
    python benchmarks/serve.py --variants      # also: where batching helps, per runtime × precision

The server runs in its own process (``cvdeploy serve`` with its defaults: batching ``auto``); the
clients and the bare loops run here. Measured:

1. **Throughput against the bare limit.** At concurrency 1, 4, 8 and 16, closed-loop clients (one
   keep-alive connection each) send ``--requests`` requests per contender per round on

   - the image API (``POST /v1/models/NAME/detect``, multipart JPEG, as ``curl -F`` sends it), against
     a bare loop of ``decode_image`` + ``Pipeline.predict`` (JPEG → boxes, what ``cvdeploy predict``
     does per image);
   - v2 binary infer (one preprocessed tensor per request), against a bare loop of the runtime call;

   the bare loops run the server's runtime settings (threads, spinning) in this process. When the
   model batches (batch size B > 1 chosen), a bare batch-B loop is measured too and the better of
   the two is the limit. Contenders take turns round by round (the order rotating), so a burst of
   foreign load on this shared machine hits all of them alike; the per-round spread of each ratio is
   printed as the noise of the figure. Target: ≥ 0.9× the limit at concurrency 8.
2. **Latency at 70 % of peak load.** Open-loop arrivals at ``--load-share`` of the best closed-loop
   throughput of part 1, for ``--load-windows`` windows of ``--load-seconds`` per arrival kind:
   constant spacing (perf_analyzer's default) and Poisson. Latency counts from each request's
   scheduled send time (a slow server cannot slow its own load down). In every window the bare
   pipeline (one worker taking the requests in order) gets the same arrivals just before or after
   the server, so the tail this shared machine's noise causes on its own is measured beside the
   server's; the server's busy share (runtime time / wall time, from its ``/stats``) shows the load
   it really had. Target: p99 ≤ 2× p50 — the headline is the median window at constant spacing (it
   resists a burst of foreign load in one window; all windows pooled is printed beside it).
3. **The batching choice** the server made at load (``GET /v2/models/NAME``: batch-1 vs
   batch-B throughput of the artifact, measured on this CPU), and with ``--variants`` the same
   measurement, repeated, for every runtime × precision of a bundle built here (ONNX Runtime FP32 /
   INT8, OpenVINO FP32 / INT8 / BF16 where the CPU has it).

The server's process CPU per request (``psutil``) is printed beside the bare loop's CPU per image:
the difference is what serving costs beyond the pipeline. The clients' CPU per request (this process's,
while only they run) is printed too: they share the machine's CPUs with the server, which the bare loop
does not (a v2 request carries the 4.9 MB float32 tensor of a 640 × 640 image). This process runs with the server's
allocator setting (:func:`cvdeploy.serve.process.keep_large_buffers`), so both sides match.

Writes ``benchmarks/results/serve.json`` (every figure, every round and window, the machine's CPU
and its flags) and ends with one ``RESULT key=value ...`` line; ``limit_ratio_c8`` is the worse of
the two protocols, ``p99_over_p50`` the worse of the two at constant spacing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
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
sys.path.insert(0, str(Path(__file__).parent))
from _bench_model import default_bundle

CONCURRENCY = (1, 4, 8, 16)
LIMIT_TARGET = 0.9
TAIL_TARGET = 2.0


# ---- setup -----------------------------------------------------------------------------------------


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

    def __init__(self, bundle: str, model_cfg: dict[str, Any], workdir: Path, tag: str) -> None:
        self.port = free_port()
        cfg = workdir / f"serve-{tag}.yaml"
        cfg.write_text(json.dumps({"defaults": model_cfg, "server": {"log_format": "text"}}))
        cmd = [sys.executable, "-m", "cvdeploy.cli.serve_cmd", bundle, "--port", str(self.port),
               "--config", str(cfg), "--log-level", "info"]  # fmt: skip
        self.log = open(workdir / f"server-{tag}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
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

    def get(self, path: str) -> Any:
        status, body = Client(self.port).request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)

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
        if time.monotonic() - self.last_used > 10:  # the server closes idle keep-alive connections
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


Request = tuple[str, bytes, dict[str, str]]


def multipart(data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "cvdeploybenchboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def v2_binary(x: np.ndarray, output: str, input_name: str = "images") -> tuple[bytes, dict[str, str]]:
    head = json.dumps({
        "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}  # fmt: skip


# ---- load generators --------------------------------------------------------------------------------


def closed_loop(port: int, req: Request, clients: int, total: int) -> dict[str, Any]:
    """``clients`` threads, one connection each, sending ``total`` requests back to back between them."""
    per_client = max(1, -(-total // clients))
    lat: list[float] = []
    failed = [0]
    lock = threading.Lock()
    conns = [Client(port) for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def worker(c: Client) -> None:
        path, body, headers = req
        start.wait()
        for _ in range(per_client):
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

    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    for c in conns:
        c.conn.close()
    return {"requests": len(lat), "failed": failed[0], "wall": wall, "latencies": lat}


def arrivals(rate: float, seconds: float, poisson: bool, seed: int) -> list[float]:
    """Send times (seconds from the start): constant spacing (perf_analyzer's default) or Poisson."""
    rng = random.Random(seed)
    out, at = [], 0.0
    for _ in range(max(10, int(rate * seconds))):
        out.append(at)
        at += rng.expovariate(rate) if poisson else 1.0 / rate
    return out


def open_loop(port: int, req: Request, times: list[float]) -> dict[str, Any]:
    """Requests sent at ``times`` whatever the answers do; each latency runs from the request's scheduled
    time, so a server that falls behind cannot slow its own load down (no coordinated omission)."""
    t0 = time.perf_counter() + 0.2
    schedule: queue.Queue[float | None] = queue.Queue()
    for t in times:
        schedule.put(t0 + t)
    workers = 48
    for _ in range(workers):
        schedule.put(None)
    lat: list[float] = []
    failed = [0]
    lock = threading.Lock()

    def worker() -> None:
        c = Client(port)
        path, body, headers = req
        while True:
            when = schedule.get()
            if when is None:
                c.conn.close()
                return
            delay = when - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                status, _ = c.request("POST", path, body, headers)
                good = status == 200
            except (OSError, http.client.HTTPException):
                good = False
            done = time.perf_counter()
            with lock:
                lat.append(done - when)
                failed[0] += 0 if good else 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"requests": len(lat), "failed": failed[0], "wall": time.perf_counter() - t0, "latencies": lat}


def bare_open_loop(fn: Callable[[], Any], times: list[float]) -> dict[str, Any]:
    """The bare pipeline under the same arrivals: one worker runs ``fn`` per request, in arrival order,
    as soon as it is free; latency from the scheduled time, as for the server."""
    t0 = time.perf_counter() + 0.2
    lat = []
    for t in times:
        when = t0 + t
        delay = when - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        fn()
        lat.append(time.perf_counter() - when)
    return {"requests": len(lat), "failed": 0, "wall": time.perf_counter() - t0, "latencies": lat}


def bare_loop(fn: Callable[[], Any], images: int, per_call: int = 1) -> dict[str, Any]:
    """``fn`` called back to back for ``images`` images; wall time, CPU time and per-call latencies."""
    calls = max(1, -(-images // per_call))
    lat = []
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"requests": calls * per_call, "failed": 0, "wall": wall, "cpu": cpu, "latencies": lat}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


# ---- the batching choice per runtime × precision (--variants) ----------------------------------------


def variants_table(
    source: str, workdir: Path, repeats: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Build every runtime × precision of ``source`` this machine runs (as ``precision.py`` does) and
    repeat, per artifact, the measurement the server makes at load (batch 1 vs batch 8)."""
    from precision import _variants

    from cvdeploy.bundle import Bundle
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions, engine
    from cvdeploy.serve.autobatch import MIN_GAIN, measure_batching
    from cvdeploy.zoo.dataset import generate_dataset

    formats = ("onnx", "openvino") if engine("openvino").available() else ("onnx",)
    spec = workdir / "variants.cvd"
    say(f"\nbatching per runtime × precision: building the variants of {source} (export, INT8, BF16)")
    export(source, spec, ExportOptions(formats=formats, dynamic_batch=True, parity_count=2))
    data = generate_dataset(workdir / "shapes", images=32, seed=9191, splits=(0.0, 1.0, 0.0), progress=False)
    skipped = _variants(Bundle.load(spec), data.parent / "images" / "val", lambda m: say(f"  · {m}"))
    bundle = Bundle.load(spec)
    options = RuntimeOptions(spinning=False)  # the server's settings
    pipes = {a.name: Pipeline.from_bundle(bundle, a.name, options) for a in bundle.manifest.artifacts}
    runs: dict[str, list[Any]] = {name: [] for name in pipes}
    for _ in range(repeats):  # artifacts interleaved, repeat by repeat
        for name, pipe in pipes.items():
            runs[name].append(measure_batching(pipe, 8))
    rows: list[dict[str, Any]] = []
    for name, found in runs.items():
        gains = [m.gain for m in found]
        art = bundle.artifact(name)
        rows.append({"artifact": name, "runtime": art.runtime, "precision": art.precision,
                     "batch1_ms": statistics.median(m.batch1_ms for m in found),
                     "batch8_ms": statistics.median(m.batched_ms for m in found),
                     "gain": statistics.median(gains), "gain_min": min(gains), "gain_max": max(gains),
                     "batching": statistics.median(gains) >= MIN_GAIN})  # fmt: skip
    rows += [{"artifact": name, "skipped": why} for name, why in skipped.items()]
    return rows


# ---- main -------------------------------------------------------------------------------------------


class Contenders:
    """Every contender's requests, wall time, CPU time and latencies, summed over the rounds."""

    def __init__(self) -> None:
        self.n: dict[tuple[str, str], int] = {}
        self.wall: dict[tuple[str, str], float] = {}
        self.cpu: dict[tuple[str, str], float] = {}
        self.client_cpu: dict[tuple[str, str], float] = {}
        self.lat: dict[tuple[str, str], list[float]] = {}

    def add(self, key: tuple[str, str], res: dict[str, Any]) -> None:
        self.n[key] = self.n.get(key, 0) + res["requests"]
        self.wall[key] = self.wall.get(key, 0.0) + res["wall"]
        self.cpu[key] = self.cpu.get(key, 0.0) + res["cpu"]
        self.client_cpu[key] = self.client_cpu.get(key, 0.0) + res.get("client_cpu", 0.0)
        self.lat.setdefault(key, []).extend(res["latencies"])

    def rps(self, key: tuple[str, str]) -> float:
        return self.n[key] / self.wall[key]

    def cpu_ms(self, key: tuple[str, str]) -> float:
        return self.cpu[key] / self.n[key] * 1e3

    def client_cpu_ms(self, key: tuple[str, str]) -> float:
        return self.client_cpu[key] / self.n[key] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle to serve (default: zoo:n, else a fresh 640 export)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every contender")
    ap.add_argument("--requests", type=int, default=32, help="requests per contender per round")
    ap.add_argument("--load-seconds", type=float, default=8.0, help="length of each open-loop window")
    ap.add_argument(
        "--load-windows", type=int, default=3, help="open-loop windows per protocol and arrival kind"
    )
    ap.add_argument("--load-share", type=float, default=0.7, help="open-loop rate as a share of peak")
    ap.add_argument("--batching", default="auto", choices=["auto", "on", "off"], help="the server's setting")
    ap.add_argument("--variants", action="store_true", help="also: batching gain per runtime × precision")
    ap.add_argument("--variant-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = ap.parse_args()

    import psutil

    from cvdeploy import env
    from cvdeploy.bundle import Bundle
    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions
    from cvdeploy.serve.config import ModelConfig
    from cvdeploy.serve.process import keep_large_buffers

    def say(msg: str) -> None:
        print(msg, flush=True)

    keep_large_buffers()  # the server process runs with it: the bare side gets the same allocator
    workdir = Path(tempfile.mkdtemp(prefix="cvdeploy-bench-serve-"))
    load0 = os.getloadavg()
    try:
        bundle = default_bundle(args.bundle, workdir)
        b = Bundle.load(bundle)
        name = b.name
        server = Server(bundle, {"batching": args.batching}, workdir, "serve")
        proc = psutil.Process(server.proc.pid)

        def server_cpu() -> float:
            t = proc.cpu_times()
            return float(t.user + t.system)

        def busy_s() -> float:
            """Seconds the server's instances have spent in the runtime (its stats), for its utilization."""
            st = server.get(f"/v2/models/{name}/stats")["model_stats"][0]
            return float(st["inference_stats"]["compute_infer"]["ns"]) / 1e9

        try:
            meta = server.get(f"/v2/models/{name}")
            choice = meta["parameters"]["batching"]
            batch = int(choice["max_batch_size"]) if choice["enabled"] else 1
            instances = int(server.get(f"/v2/models/{name}/config")["instance_group"][0]["count"])
            say(f"server: batching {'on' if choice['enabled'] else 'off'} ({choice['reason']})")
            # the bare side: the server's runtime settings (threads, spinning), in this process
            defaults = ModelConfig()
            # and, where the server does not batch, one image per call as it runs it (OpenVINO: compiled for
            # batch 1; without this the bare limit of an OpenVINO artifact would be its slower dynamic form)
            options = RuntimeOptions(threads=defaults.threads, spinning=bool(defaults.spinning),
                                     batch=1 if batch == 1 else None)  # fmt: skip
            pipe = Pipeline.from_bundle(b, None, options)
            ex = pipe.runtime.execution()
            jpeg = photo_640()
            tensor, _ = pipe.preprocess([decode_image(jpeg)])
            say(f"bundle {bundle} ({name}), artifact {pipe.artifact.name if pipe.artifact else '?'}, "
                f"input {tuple(tensor.shape)}, threads {ex.threads}, spinning {ex.spinning}, {instances} instance(s); "
                f"{env.available_cpus()} CPUs ({env.capabilities_line()}), load average {load0[0]:.1f}")  # fmt: skip

            img_body, img_headers = multipart(jpeg)
            v2_body, v2_headers = v2_binary(tensor, pipe.runtime.outputs[0].name, pipe.input_name)
            reqs: dict[str, Request] = {
                "image": (f"/v1/models/{name}/detect", img_body, img_headers),
                "v2": (f"/v2/models/{name}/infer", v2_body, v2_headers),
            }
            images_b = [decode_image(jpeg)] * batch
            tensor_b = np.concatenate([tensor] * batch)
            bare: dict[tuple[str, str], Callable[[int], dict[str, Any]]] = {
                ("image", "bare"): lambda n: bare_loop(lambda: pipe.predict([decode_image(jpeg)]), n),
                ("v2", "bare"): lambda n: bare_loop(lambda: pipe.infer(tensor), n),
            }
            if batch > 1:  # the model batches: the limit may be a batched loop
                bare[("image", "bareB")] = lambda n: bare_loop(lambda: pipe.predict(images_b), n, batch)
                bare[("v2", "bareB")] = lambda n: bare_loop(lambda: pipe.infer(tensor_b), n, batch)

            def served(proto: str, clients: int, n: int) -> dict[str, Any]:
                c0, k0 = server_cpu(), time.process_time()  # the clients are this process's only work here
                res = closed_loop(server.port, reqs[proto], clients, n)
                if res["failed"]:
                    raise SystemExit(f"{proto} at concurrency {clients}: {res['failed']} requests failed")
                return {**res, "cpu": server_cpu() - c0, "client_cpu": time.process_time() - k0}

            for proto in reqs:  # warm-up: every bare loop, the server at every concurrency
                for (p, _k), fn in bare.items():
                    if p == proto:
                        fn(batch)
                for c in CONCURRENCY:
                    served(proto, c, c)

            # 1. throughput against the bare limit, contenders taking turns round by round
            contenders = [(p, k) for p in reqs for k in [*(k for q, k in bare if q == p),
                                                       *(f"c{c}" for c in CONCURRENCY)]]  # fmt: skip
            acc = Contenders()
            rounds: list[dict[str, dict[str, float]]] = []
            for r in range(args.rounds):
                row: dict[str, dict[str, float]] = {}
                shift = r * 3 % len(contenders)
                for key in contenders[shift:] + contenders[:shift]:
                    proto, kind = key
                    res = (
                        bare[key](args.requests)
                        if key in bare
                        else served(proto, int(kind[1:]), args.requests)
                    )
                    acc.add(key, res)
                    row.setdefault(proto, {})[kind] = res["requests"] / res["wall"]
                rounds.append(row)
                say(f"round {r + 1}/{args.rounds}: " + "; ".join(
                    f"{p} " + " ".join(f"{k} {v:.1f}" for k, v in row[p].items()) for p in reqs))  # fmt: skip

            table: dict[str, Any] = {}
            say("\nthroughput (requests/s = images/s) against the bare limit, all rounds together; in brackets "
                "the per-round ratio's min-max (this shared machine's noise); CPU = process CPU per image")  # fmt: skip
            for proto in reqs:
                kinds = [k for q, k in bare if q == proto]
                limit_kind = max(kinds, key=lambda k: acc.rps((proto, k)))
                limit = acc.rps((proto, limit_kind))
                per_round = [max(rw[proto][k] for k in kinds) for rw in rounds]
                t: dict[str, Any] = {
                    "limit": limit,
                    "limit_from": "batch 1" if limit_kind == "bare" else f"batch {batch}",
                }
                for k in kinds:
                    t[f"bare_{k}"] = {"rps": acc.rps((proto, k)), "cpu_ms": acc.cpu_ms((proto, k)),
                                      "p50_ms": pct(acc.lat[(proto, k)], 50) * 1e3}  # fmt: skip
                    say(f"  {proto:5s} bare loop, batch {1 if k == 'bare' else batch}: {acc.rps((proto, k)):.2f}/s, "
                        f"CPU {acc.cpu_ms((proto, k)):.1f} ms/image")  # fmt: skip
                for c in CONCURRENCY:
                    key = (proto, f"c{c}")
                    ratios = [rw[proto][f"c{c}"] / lim for rw, lim in zip(rounds, per_round, strict=True)]
                    rps = acc.rps(key)
                    t[f"c{c}"] = {"rps": rps, "ratio": rps / limit, "ratio_min": min(ratios), "ratio_max": max(ratios),
                                  "p50_ms": pct(acc.lat[key], 50) * 1e3, "p99_ms": pct(acc.lat[key], 99) * 1e3,
                                  "server_cpu_ms": acc.cpu_ms(key), "client_cpu_ms": acc.client_cpu_ms(key)}  # fmt: skip
                    say(f"        concurrency {c:2d}: {rps:6.2f}/s = {rps / limit:.3f}× limit "
                        f"[{min(ratios):.2f}-{max(ratios):.2f}], p50 {ms(pct(acc.lat[key], 50))} ms, "
                        f"p99 {ms(pct(acc.lat[key], 99))} ms, CPU per request: server {acc.cpu_ms(key):.1f} ms, "
                        f"clients {acc.client_cpu_ms(key):.1f} ms")  # fmt: skip
                table[proto] = t

            # 2. latency at a share of peak load: open-loop windows, the bare pipeline under the same arrivals
            say(f"\nlatency at {args.load_share:.0%} of peak load: open loop, latency from the scheduled send time, "
                f"{args.load_windows} windows of {args.load_seconds:g} s per arrival kind; in each, the bare pipeline "
                "(one worker) gets the same arrivals right before or after the server (alternating)")  # fmt: skip
            tails: dict[str, Any] = {}
            for proto in reqs:
                peak = max(acc.rps((proto, f"c{c}")) for c in CONCURRENCY)
                rate = args.load_share * peak
                one = bare[(proto, "bare")]
                for kind in ("constant", "poisson"):
                    windows = []
                    for w in range(args.load_windows):
                        times = arrivals(rate, args.load_seconds, kind == "poisson", seed=7 + w)
                        got: dict[str, dict[str, Any]] = {}
                        for side in ("bare", "server") if w % 2 == 0 else ("server", "bare"):
                            if side == "bare":
                                got[side] = bare_open_loop(lambda one=one: one(1), times)
                            else:
                                b0 = busy_s()
                                got[side] = open_loop(server.port, reqs[proto], times)
                                got[side]["utilization"] = (busy_s() - b0) / got[side]["wall"] / instances
                        srv, ref = got["server"]["latencies"], got["bare"]["latencies"]
                        windows.append({
                            "requests": len(srv), "failed": got["server"]["failed"],
                            "utilization": got["server"]["utilization"],
                            "p50_ms": pct(srv, 50) * 1e3, "p99_ms": pct(srv, 99) * 1e3,
                            "p99_over_p50": pct(srv, 99) / pct(srv, 50),
                            "bare_p50_ms": pct(ref, 50) * 1e3, "bare_p99_ms": pct(ref, 99) * 1e3,
                            "bare_p99_over_p50": pct(ref, 99) / pct(ref, 50),
                            "latencies": srv, "bare_latencies": ref,
                        })  # fmt: skip
                        wd = windows[-1]
                        say(f"  {proto:5s} {kind:8s} window {w + 1}: server busy {wd['utilization']:.0%}, p50 "
                            f"{wd['p50_ms']:.1f} ms, p99 {wd['p99_ms']:.1f} ms, p99/p50 {wd['p99_over_p50']:.2f} | bare "
                            f"p50 {wd['bare_p50_ms']:.1f} ms, p99 {wd['bare_p99_ms']:.1f} ms, p99/p50 "
                            f"{wd['bare_p99_over_p50']:.2f}; {wd['failed']} failed")  # fmt: skip
                    srv_all = [x for wd in windows for x in wd.pop("latencies")]
                    ref_all = [x for wd in windows for x in wd.pop("bare_latencies")]
                    tl = tails[f"{proto}_{kind}"] = {
                        "rate": rate, "peak": peak, "windows": windows,
                        "median_p99_over_p50": statistics.median(wd["p99_over_p50"] for wd in windows),
                        "pooled_p99_over_p50": pct(srv_all, 99) / pct(srv_all, 50),
                        "bare_median_p99_over_p50": statistics.median(wd["bare_p99_over_p50"] for wd in windows),
                        "bare_pooled_p99_over_p50": pct(ref_all, 99) / pct(ref_all, 50),
                        "p50_ms": pct(srv_all, 50) * 1e3, "p99_ms": pct(srv_all, 99) * 1e3,
                        "failed": sum(wd["failed"] for wd in windows),
                    }  # fmt: skip
                    say(f"  {proto:5s} {kind:8s} at {rate:.2f}/s → p99/p50 median of windows "
                        f"{tl['median_p99_over_p50']:.2f} (bare {tl['bare_median_p99_over_p50']:.2f}), pooled "
                        f"{tl['pooled_p99_over_p50']:.2f} (bare {tl['bare_pooled_p99_over_p50']:.2f})")  # fmt: skip
            stats = server.get(f"/v2/models/{name}/stats")["model_stats"][0]
        finally:
            server.stop()

        variants = variants_table(bundle, workdir, args.variant_repeats, say) if args.variants else []
        for row in variants:
            if "skipped" in row:
                say(f"  {row['artifact']:16s} not made: {row['skipped']}")
            else:
                say(f"  {row['artifact']:16s} batch 1 {row['batch1_ms']:6.2f} ms/image, batch 8 {row['batch8_ms']:6.2f} "
                    f"ms/image: {row['gain']:.2f}× [{row['gain_min']:.2f}-{row['gain_max']:.2f}] → batching "
                    f"{'on' if row['batching'] else 'off'}")  # fmt: skip

        load1 = os.getloadavg()
        ratio = {p: table[p]["c8"]["ratio"] for p in reqs}
        result: dict[str, Any] = {
            "limit_ratio_c8": f"{min(ratio.values()):.3f}",
            "p99_over_p50": f"{max(tails[f'{p}_constant']['median_p99_over_p50'] for p in reqs):.2f}",
            "limit_ratio_c8_image": f"{ratio['image']:.3f}",
            "limit_ratio_c8_v2": f"{ratio['v2']:.3f}",
            "c8_ratio_spread": f"{min(table[p]['c8']['ratio_min'] for p in reqs):.2f}-"
                               f"{max(table[p]['c8']['ratio_max'] for p in reqs):.2f}",
            "p99_over_p50_pooled": f"{max(tails[f'{p}_constant']['pooled_p99_over_p50'] for p in reqs):.2f}",
            "p99_over_p50_poisson": f"{max(tails[f'{p}_poisson']['median_p99_over_p50'] for p in reqs):.2f}",
            "bare_p99_over_p50": f"{max(tails[f'{p}_constant']['bare_median_p99_over_p50'] for p in reqs):.2f}",
            "bare_p99_over_p50_poisson": f"{max(tails[f'{p}_poisson']['bare_median_p99_over_p50'] for p in reqs):.2f}",
            "image_c8_rps": f"{table['image']['c8']['rps']:.2f}",
            "image_limit_rps": f"{table['image']['limit']:.2f}",
            "v2_c8_rps": f"{table['v2']['c8']['rps']:.2f}",
            "v2_limit_rps": f"{table['v2']['limit']:.2f}",
            "image_server_cpu_ms": f"{table['image']['c8']['server_cpu_ms']:.1f}",
            "image_bare_cpu_ms": f"{table['image']['bare_bare']['cpu_ms']:.1f}",
            "v2_server_cpu_ms": f"{table['v2']['c8']['server_cpu_ms']:.1f}",
            "v2_bare_cpu_ms": f"{table['v2']['bare_bare']['cpu_ms']:.1f}",
            "image_client_cpu_ms": f"{table['image']['c8']['client_cpu_ms']:.2f}",
            "v2_client_cpu_ms": f"{table['v2']['c8']['client_cpu_ms']:.2f}",
            "batching": "on" if choice["enabled"] else "off",
            "batching_gain": f"{choice['measurement']['gain']:.2f}" if choice.get("measurement") else "n/a",
            "failed": sum(t["failed"] for t in tails.values()),
            "loadavg": f"{load0[0]:.1f}-{load1[0]:.1f}",
        }  # fmt: skip
        met = [float(result["limit_ratio_c8"]) >= LIMIT_TARGET, float(result["p99_over_p50"]) <= TAIL_TARGET]
        result["targets_met"] = f"{sum(met)}/{len(met)}"
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "serve", "environment": env.fingerprint(), "bundle": bundle, "settings": vars(args),
            "execution": ex.to_dict(), "batching": choice, "throughput": table, "rounds": rounds, "tails": tails,
            "server_stats": stats, "variants": variants, "result": result,
        }, indent=1, default=str))  # fmt: skip
        say(f"wrote {out}")
        print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
