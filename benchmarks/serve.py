"""The server at the engine's limit (issue 16, item 3): ``cvdeploy serve`` against a bare loop of the
same pipeline on the same threads, measured side by side in one run.

    python benchmarks/serve.py [--bundle zoo:n] [--rounds 5] [--requests 32] [--load-seconds 12]
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
2. **Latency at 70 % of peak load.** Open-loop arrivals (latency counted from the scheduled send
   time, so a slow server cannot slow its own load down) at ``--load-share`` of the best closed-loop
   throughput: constant spacing (perf_analyzer's default) and Poisson; p50 and p99 per protocol.
   Target: p99 ≤ 2× p50.
3. **The batching choice** the server made at load (``GET /v2/models/NAME/config``: batch-1 vs
   batch-B throughput of the artifact, measured on this CPU), and with ``--variants`` the same
   measurement, repeated, for every runtime × precision of a bundle built here (ONNX Runtime FP32 /
   INT8, OpenVINO FP32 / INT8 / BF16 where the CPU has it).

Writes ``benchmarks/results/serve.json`` (every figure, every round, the machine's CPU and its flags)
and ends with one ``RESULT key=value ...`` line; ``limit_ratio_c8`` is the worse of the two protocols,
``p99_over_p50`` the worse of the two at constant spacing.
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


def open_loop(
    port: int, req: Request, rate: float, seconds: float, poisson: bool, seed: int
) -> dict[str, Any]:
    """Requests sent at ``rate`` per second (constant spacing or Poisson arrivals) for ``seconds``, whatever
    the answers do; latency runs from each request's scheduled time (no coordinated omission)."""
    rng = random.Random(seed)
    n = max(10, int(rate * seconds))
    gaps = [rng.expovariate(rate) if poisson else 1.0 / rate for _ in range(n)]
    t0 = time.perf_counter() + 0.2
    schedule: queue.Queue[float | None] = queue.Queue()
    at = t0
    for g in gaps:
        schedule.put(at)
        at += g
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
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "failed": failed[0], "wall": wall, "rate": rate,
            "achieved": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}  # fmt: skip


def bare_loop(fn: Callable[[], Any], images: int, per_call: int = 1) -> dict[str, Any]:
    calls = max(1, -(-images // per_call))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return {"requests": calls * per_call, "failed": 0, "wall": time.perf_counter() - t0, "latencies": []}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


# ---- the batching choice per runtime × precision (--variants) ----------------------------------------


def variants_table(
    source: str, workdir: Path, repeats: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Build every runtime × precision of ``source`` this machine runs and repeat, per artifact, the
    measurement the server makes at load (batch 1 vs the configured max batch)."""
    from precision import _variants

    from cvdeploy.bundle import Bundle
    from cvdeploy.export import ExportOptions, export
    from cvdeploy.images import sample_images
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions, engine
    from cvdeploy.serve.autobatch import measure_batching

    formats = ("onnx", "openvino") if engine("openvino").available() else ("onnx",)
    spec = workdir / "variants.cvd"
    b0 = Bundle.load(source)
    src = b0.manifest.provenance.source if b0.manifest.provenance else None
    origin = source
    kept = Path(b0.path) / "source"
    if kept.is_dir():  # a bundle made from PyTorch keeps its source: export from it
        origin = str(next(p for p in sorted(kept.iterdir()) if p.is_file()))
    del src
    say(f"building the variants of {source} in {spec} (export, INT8, BF16: a few minutes)")
    export(origin if origin != source else source, spec, ExportOptions(formats=formats, dynamic_batch=True,
                                                                       parity_count=2))  # fmt: skip
    calib = workdir / "calib"
    calib.mkdir()
    for i, img in enumerate(sample_images(16)):
        cv2.imwrite(str(calib / f"{i}.jpg"), img)
    bundle = Bundle.load(spec)
    skipped = _variants(bundle, calib, say)
    bundle = Bundle.load(spec)
    rows = []
    options = RuntimeOptions(spinning=False)
    pipes = {a.name: Pipeline.from_bundle(bundle, a.name, options) for a in bundle.manifest.artifacts}
    runs: dict[str, list[Any]] = {name: [] for name in pipes}
    for _ in range(repeats):
        for name, pipe in pipes.items():
            runs[name].append(measure_batching(pipe, 8))
    for name, ms_ in runs.items():
        gains = [m.gain for m in ms_]
        rows.append({"artifact": name, "batch1_ms": statistics.median(m.batch1_ms for m in ms_),
                     "batchB_ms": statistics.median(m.batched_ms for m in ms_), "batch": 8,
                     "gain": statistics.median(gains), "gain_min": min(gains), "gain_max": max(gains),
                     "batching": statistics.median(gains) >= ms_[0].threshold})  # fmt: skip
    for name, why in skipped.items():
        rows.append({"artifact": name, "skipped": why})
    return rows


# ---- main -------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle to serve (default: zoo:n, else a fresh 640 export)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every contender")
    ap.add_argument("--requests", type=int, default=32, help="requests per contender per round")
    ap.add_argument("--load-seconds", type=float, default=12.0, help="length of each open-loop run")
    ap.add_argument("--load-share", type=float, default=0.7, help="open-loop rate as a share of peak")
    ap.add_argument("--batching", default="auto", choices=["auto", "on", "off"], help="the server's setting")
    ap.add_argument("--variants", action="store_true", help="batching gain per runtime × precision")
    ap.add_argument("--variant-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = ap.parse_args()

    from cvdeploy import env
    from cvdeploy.bundle import Bundle
    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions
    from cvdeploy.serve.config import ModelConfig

    def say(msg: str) -> None:
        print(msg, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="cvdeploy-bench-serve-"))
    load0 = os.getloadavg()
    try:
        bundle = default_bundle(args.bundle, workdir)
        b = Bundle.load(bundle)
        name = b.name
        defaults = ModelConfig()
        server = Server(bundle, {"batching": args.batching}, workdir, "serve")
        try:
            tcfg = server.get(f"/v2/models/{name}/config")
            choice = tcfg["parameters"].get("cvdeploy_batching", {}).get("string_value", "")
            batch = int(tcfg.get("max_batch_size", 1)) if "dynamic_batching" in tcfg else 1
            say(f"server: {choice}")
            # the bare side: the server's runtime settings (threads, spinning off), in this process
            options = RuntimeOptions(threads=defaults.threads, spinning=bool(defaults.spinning))
            pipe = Pipeline.from_bundle(b, None, options)
            ex = pipe.runtime.execution()
            jpeg = photo_640()
            tensor, _ = pipe.preprocess([decode_image(jpeg)])
            out_name = pipe.runtime.outputs[0].name
            tensor_b = np.concatenate([tensor] * batch)
            say(f"bundle {bundle} ({name}), artifact {pipe.artifact.name if pipe.artifact else '?'}, "
                f"input {tuple(tensor.shape)}, threads {ex.threads}, spinning {ex.spinning}, "
                f"{env.available_cpus()} CPUs ({env.capabilities_line()}), load average {load0[0]:.1f}")  # fmt: skip

            img_body, img_headers = multipart(jpeg)
            v2_body, v2_headers = v2_binary(tensor, out_name, pipe.input_name)
            reqs: dict[str, Request] = {
                "image": (f"/v1/models/{name}/detect", img_body, img_headers),
                "v2": (f"/v2/models/{name}/infer", v2_body, v2_headers),
            }
            bare: dict[str, Callable[[], dict[str, Any]]] = {
                "image": lambda n: bare_loop(lambda: pipe.predict([decode_image(jpeg)]), n),
                "v2": lambda n: bare_loop(lambda: pipe.infer(tensor), n),
            }  # type: ignore[dict-item]
            bare_b: dict[str, Callable[[int], dict[str, Any]]] = {}
            if batch > 1:
                x_imgs = [decode_image(jpeg)] * batch
                bare_b = {
                    "image": lambda n: bare_loop(lambda: pipe.predict(x_imgs), n, batch),
                    "v2": lambda n: bare_loop(lambda: pipe.infer(tensor_b), n, batch),
                }
            # warm-up: the server at every concurrency, the bare loops
            for proto, req in reqs.items():
                bare[proto](2)  # type: ignore[call-arg]
                if proto in bare_b:
                    bare_b[proto](batch)
                for c in CONCURRENCY:
                    res = closed_loop(server.port, req, c, c)
                    if res["failed"]:
                        raise SystemExit(f"{proto}: {res['failed']} warm-up requests failed")

            contenders = [(p, k) for p in reqs for k in ["bare", *(["bareB"] if batch > 1 else []),
                                                       *(f"c{c}" for c in CONCURRENCY)]]  # fmt: skip
            rounds: list[dict[str, dict[str, float]]] = []
            totals: dict[tuple[str, str], list[float]] = {k: [0, 0.0] for k in contenders}
            lat: dict[tuple[str, str], list[float]] = {k: [] for k in contenders}
            for r in range(args.rounds):
                row: dict[str, dict[str, float]] = {}
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for proto, kind in order:
                    if kind == "bare":
                        res = bare[proto](args.requests)  # type: ignore[call-arg]
                    elif kind == "bareB":
                        res = bare_b[proto](args.requests)
                    else:
                        res = closed_loop(server.port, reqs[proto], int(kind[1:]), args.requests)
                        if res["failed"]:
                            raise SystemExit(f"{proto} {kind}: {res['failed']} requests failed")
                    totals[(proto, kind)][0] += res["requests"]
                    totals[(proto, kind)][1] += res["wall"]
                    lat[(proto, kind)].extend(res["latencies"])
                    row.setdefault(proto, {})[kind] = res["requests"] / res["wall"]
                rounds.append(row)
                say(f"round {r + 1}/{args.rounds}: " + "; ".join(
                    f"{p} " + " ".join(f"{k} {v:.1f}" for k, v in row[p].items()) for p in reqs))  # fmt: skip

            rps = {k: n / wall for k, (n, wall) in totals.items()}
            result: dict[str, Any] = {}
            table: dict[str, Any] = {}
            say("\nthroughput (req/s = img/s) against the bare limit, all rounds together; "
                "in brackets the per-round ratio's min-max (the noise of this shared machine)")  # fmt: skip
            for proto in reqs:
                limit_kind = "bareB" if batch > 1 and rps[(proto, "bareB")] > rps[(proto, "bare")] else "bare"
                limit = rps[(proto, limit_kind)]
                per_round_limit = [max(rw[proto]["bare"], rw[proto].get("bareB", 0.0)) for rw in rounds]
                t = {"bare_b1": rps[(proto, "bare")], "limit": limit, "limit_from": limit_kind}
                if batch > 1:
                    t[f"bare_b{batch}"] = rps[(proto, "bareB")]
                say(f"  {proto:5s} bare loop batch 1 {rps[(proto, 'bare')]:.2f}/s"
                    + (f", batch {batch} {rps[(proto, 'bareB')]:.2f}/s" if batch > 1 else ""))  # fmt: skip
                for c in CONCURRENCY:
                    k = (proto, f"c{c}")
                    ratios = [
                        rw[proto][f"c{c}"] / lim for rw, lim in zip(rounds, per_round_limit, strict=True)
                    ]
                    t[f"c{c}"] = {"rps": rps[k], "ratio": rps[k] / limit, "ratio_min": min(ratios),
                                  "ratio_max": max(ratios), "p50_ms": pct(lat[k], 50) * 1e3,
                                  "p99_ms": pct(lat[k], 99) * 1e3}  # fmt: skip
                    say(f"        concurrency {c:2d}: {rps[k]:6.2f}/s = {rps[k] / limit:.3f}× limit "
                        f"[{min(ratios):.3f}-{max(ratios):.3f}], p50 {ms(pct(lat[k], 50))} ms, "
                        f"p99 {ms(pct(lat[k], 99))} ms")  # fmt: skip
                table[proto] = t
                result[f"limit_ratio_c8_{proto}"] = f"{rps[(proto, 'c8')] / limit:.3f}"

            # latency at a share of peak load, open loop
            tails: dict[str, Any] = {}
            say(
                f"\nlatency at {args.load_share:.0%} of peak load (open loop, latency from the scheduled time)"
            )
            for proto, req in reqs.items():
                peak = max(rps[(proto, f"c{c}")] for c in CONCURRENCY)
                rate = args.load_share * peak
                for poisson in (False, True):
                    res = open_loop(server.port, req, rate, args.load_seconds, poisson, seed=7)
                    kind = "poisson" if poisson else "constant"
                    res["p99_over_p50"] = res["p99"] / res["p50"]
                    tails[f"{proto}_{kind}"] = res
                    say(f"  {proto:5s} {kind:8s} {rate:5.2f}/s offered ({res['achieved']:.2f} done), "
                        f"p50 {ms(res['p50'])} ms, p99 {ms(res['p99'])} ms, p99/p50 {res['p99_over_p50']:.2f}, "
                        f"{res['failed']} failed")  # fmt: skip

            stats = server.get(f"/v2/models/{name}/stats")["model_stats"][0]
        finally:
            server.stop()

        variants = variants_table(bundle, workdir, args.variant_repeats, say) if args.variants else []
        for row in variants:
            if "skipped" in row:
                say(f"  {row['artifact']:16s} skipped: {row['skipped']}")
            else:
                say(f"  {row['artifact']:16s} batch 1 {row['batch1_ms']:.2f} ms/img, batch {row['batch']} "
                    f"{row['batchB_ms']:.2f} ms/img: gain {row['gain']:.2f}× [{row['gain_min']:.2f}-"
                    f"{row['gain_max']:.2f}] → batching {'on' if row['batching'] else 'off'}")  # fmt: skip

        load1 = os.getloadavg()
        result = {
            "limit_ratio_c8": f"{min(float(result[f'limit_ratio_c8_{p}']) for p in reqs):.3f}",
            "p99_over_p50": f"{max(tails[f'{p}_constant']['p99_over_p50'] for p in reqs):.2f}",
            **result,
            "p99_over_p50_poisson": f"{max(tails[f'{p}_poisson']['p99_over_p50'] for p in reqs):.2f}",
            "image_c8_rps": f"{table['image']['c8']['rps']:.2f}",
            "image_limit_rps": f"{table['image']['limit']:.2f}",
            "v2_c8_rps": f"{table['v2']['c8']['rps']:.2f}",
            "v2_limit_rps": f"{table['v2']['limit']:.2f}",
            "c8_ratio_spread": f"{min(table[p]['c8']['ratio_min'] for p in reqs):.3f}-"
                               f"{max(table[p]['c8']['ratio_max'] for p in reqs):.3f}",
            "batching": choice.split(":")[0].split()[0] if choice else "unknown",
            "loadavg": f"{load0[0]:.1f}-{load1[0]:.1f}",
        }  # fmt: skip
        met = [float(result["limit_ratio_c8"]) >= LIMIT_TARGET, float(result["p99_over_p50"]) <= TAIL_TARGET]
        result["targets_met"] = f"{sum(met)}/{len(met)}"
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "serve", "environment": env.fingerprint(), "bundle": bundle, "batching": choice,
            "settings": vars(args), "execution": ex.to_dict(), "throughput": table, "rounds": rounds,
            "tails": tails, "server_stats": stats, "variants": variants, "result": result,
        }, indent=2, default=str))  # fmt: skip
        say(f"wrote {out}")
        print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
