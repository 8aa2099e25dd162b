"""Scale-out on Ray Serve: throughput of 1 and 2 replicas side by side, with the single-process server.

    python benchmarks/scale_out.py [--bundle zoo:n] [--rounds 3] [--requests 48] [--concurrency 8]

Three candidates serve the same bundle and take turns, round after round, under the same closed-loop
load (``--concurrency`` clients here, each posting a 640-px JPEG to the image API on a keep-alive
connection, ``--requests`` per round):

    single     cvdeploy serve (uvicorn, one process), --threads = every CPU this process may use
    ray-1      serve --engine ray, 1 replica × every CPU
    ray-2      serve --engine ray, 2 replicas × (CPUs / 2) each

One local Ray cluster (127.0.0.1, no dashboard, no usage statistics) stays up; between rounds the
application is replaced with the other replica count. Each candidate's figure is its median round
(images/s); the share of requests each replica answered is read from ``X-CVD-Replica``.

The ceiling: replicas add throughput only while there are idle cores for them. A replica of N
threads keeps N cores busy during inference, so with C cores ``replicas × threads <= C`` bounds it;
on top, Ray's proxy, controller and raylet, and this load generator, run on the same cores. On a
2-core machine ray-2 therefore has no idle core to gain from, and the proxy hop costs ray-1 and ray-2
against the single-process server. Writes ``benchmarks/results/scale_out.json``; ends with one
``RESULT key=value ...`` line.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")


def photo_640() -> bytes:
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


def load(port: int, path: str, body: bytes, requests: int, concurrency: int) -> tuple[float, collections.Counter[str]]:
    """``requests`` POSTs from ``concurrency`` keep-alive clients → (images/s, answers per replica)."""
    todo = iter(range(requests))
    lock = threading.Lock()
    seen: collections.Counter[str] = collections.Counter()
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                if next(todo, None) is None:
                    break
            conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            data = resp.read()
            with lock:
                if resp.status != 200:
                    errors.append(f"{resp.status} {data[:200]!r}")
                seen[resp.getheader("x-cvd-replica") or "-"] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return requests / took, seen


class Single:
    """``cvdeploy serve`` in its own process."""

    def __init__(self, bundle: str, threads: int, workdir: Path) -> None:
        self.port = free_port()
        self.log = open(workdir / "single.log", "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "cvdeploy.cli.serve_cmd", bundle, "--port", str(self.port),
               "--threads", str(threads), "--log-level", "warning"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"cvdeploy serve exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("cvdeploy serve did not become ready")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


class RayCandidates:
    """One local Ray cluster; the application replaced by 1 or 2 replicas on demand."""

    def __init__(self, bundle: str, cpus: int) -> None:
        from cvdeploy.serve.config import Platform, ServeConfig
        from cvdeploy.serve.ray_engine import RayOptions, deploy

        self.bundle, self.cpus = bundle, cpus
        self.deployment = deploy([bundle], ServeConfig(), Platform("local", "127.0.0.1", 0),
                                 RayOptions(replicas=1, threads=cpus))  # fmt: skip
        self.port = int(self.deployment.url.rsplit(":", 1)[1])
        self.replicas = 1

    def use(self, replicas: int) -> None:
        if replicas == self.replicas:
            return
        from ray import serve

        from cvdeploy.serve.ray_app import build_app
        from cvdeploy.serve.ray_engine import APP_NAME, _wait_ready
        from cvdeploy.serve.ray_replica import RayAppArgs

        serve.delete(APP_NAME)  # the cores are all taken: the old replicas go before the new ones start
        args = RayAppArgs(bundles=[self.bundle], port=self.port, replicas=replicas,
                          threads=max(1, self.cpus // replicas))  # fmt: skip
        serve.run(build_app(args.model_dump(mode="json")), name=APP_NAME, route_prefix="/", blocking=False)
        _wait_ready(self.deployment.url, 300)
        self.replicas = replicas

    def stop(self) -> None:
        self.deployment.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="zoo:n")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale_out.json"))
    args = ap.parse_args()

    from cvdeploy import env
    from cvdeploy.bundle import Bundle

    cpus = env.available_cpus()
    name = Bundle.load(args.bundle).name
    path = f"/v1/models/{name}/detect"
    body = photo_640()
    print(f"{env.capabilities_line()} · {cpus} CPUs · {args.bundle} · concurrency {args.concurrency}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="scale-out-"))
    single = Single(args.bundle, cpus, work)
    ray = RayCandidates(args.bundle, cpus)
    rates: dict[str, list[float]] = {"single": [], "ray-1": [], "ray-2": []}
    shares: dict[str, collections.Counter[str]] = {"ray-1": collections.Counter(), "ray-2": collections.Counter()}
    try:
        warm = max(args.concurrency, 8)
        load(single.port, path, body, warm, args.concurrency)
        for r in range(args.rounds):
            order = ["single", "ray-1", "ray-2"] if r % 2 == 0 else ["ray-2", "ray-1", "single"]
            for cand in order:
                if cand == "single":
                    port = single.port
                else:
                    ray.use(int(cand[-1]))
                    port = ray.port
                    load(port, path, body, warm, args.concurrency)  # warm the (new) replicas
                rate, seen = load(port, path, body, args.requests, args.concurrency)
                rates[cand].append(rate)
                if cand in shares:
                    shares[cand].update(seen)
                print(f"round {r + 1}: {cand:7s} {rate:6.1f} images/s  replicas answering: {dict(seen)}", flush=True)
    finally:
        ray.stop()
        single.stop()

    med = {k: statistics.median(v) for k, v in rates.items()}
    two = sorted(shares["ray-2"].values())
    share_min = two[0] / sum(two) if len(two) == 2 else 0.0
    print()
    print("| candidate | replicas × threads | images/s (median of rounds) | vs single | vs ray-1 |")
    print("| --- | --- | --- | --- | --- |")
    shape = {"single": f"1 process × {cpus}", "ray-1": f"1 × {cpus}", "ray-2": f"2 × {max(1, cpus // 2)}"}
    for k in ("single", "ray-1", "ray-2"):
        print(f"| {k} | {shape[k]} | {med[k]:.1f} | {med[k] / med['single']:.2f}× | {med[k] / med['ray-1']:.2f}× |")
    print(f"\nray-2 replicas' shares of requests: {dict(shares['ray-2'])} (smallest {share_min:.0%})")
    print(f"ceiling: {cpus} CPU(s); ray-2 needs {2 * max(1, cpus // 2)} idle cores for its inference alone, "
          "and Ray's proxy, controller and raylet plus this load generator share the same cores")  # fmt: skip
    result = {
        "cpus": cpus,
        "single_ips": round(med["single"], 2),
        "ray1_ips": round(med["ray-1"], 2),
        "ray2_ips": round(med["ray-2"], 2),
        "ray2_over_ray1": round(med["ray-2"] / med["ray-1"], 3),
        "ray1_over_single": round(med["ray-1"] / med["single"], 3),
        "ray2_min_share": round(share_min, 3),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "scale_out", "environment": env.fingerprint(),
        "settings": {"bundle": args.bundle, "rounds": args.rounds, "requests": args.requests,
                     "concurrency": args.concurrency, "route": path},
        "rounds_ips": rates, "shares": {k: dict(v) for k, v in shares.items()}, "result": result,
    }, indent=1))  # fmt: skip
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
