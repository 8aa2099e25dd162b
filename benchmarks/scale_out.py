"""Scale-out on Ray Serve: throughput of 1 and 2 replicas side by side, with the single-process server.

    python benchmarks/scale_out.py [--bundle zoo:n] [--rounds 3] [--requests 96] [--concurrency 8]

Four candidates serve the same bundle and take turns, round after round, under the same closed-loop
load (``--concurrency`` clients here, each posting a 640-px JPEG to the image API on a keep-alive
connection, ``--requests`` per round). With C = the CPUs this process may use:

    single 1×C   cvdeploy serve (uvicorn, one process): 1 instance × C threads (the default layout)
    single 2×C/2 cvdeploy serve: 2 instances × C/2 threads — the in-process twin of ray 2×C/2
    ray 1×C      serve --engine ray: 1 replica × C threads
    ray 2×C/2    serve --engine ray: 2 replicas × C/2 threads

Comparing ray 2 with ray 1 is the scale-out; comparing each Ray layout with its single-process twin
separates what Ray adds (processes, its proxy hop) from what the layout does (two single-thread
sessions keep the cores busier than one two-thread session while the other request's pre- and
post-processing runs). One local Ray cluster (127.0.0.1, no dashboard, no usage statistics) stays up;
between rounds the application is replaced with the other replica count. Each candidate's figure is
its median round (images/s); each replica's share of the requests is read from ``X-CVD-Replica``.

The ceiling: replicas add throughput only while there are idle cores for them. A replica of N
threads keeps up to N cores busy, so ``replicas × threads <= C`` bounds the layouts, and Ray's proxy,
controller and raylet, and this load generator, run on the same C cores. Writes
``benchmarks/results/scale_out.json``; ends with one ``RESULT key=value ...`` line.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).parent))
from serve import free_port, photo_640


def load(
    port: int, path: str, body: bytes, requests: int, concurrency: int
) -> tuple[float, collections.Counter[str]]:
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

    def __init__(self, bundle: str, instances: int, threads: int, workdir: Path) -> None:
        self.port = free_port()
        self.log = open(workdir / f"single-{instances}.log", "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "cvdeploy.cli.serve_cmd", bundle, "--port", str(self.port),
               "--instances", str(instances), "--threads", str(threads), "--log-level", "warning"]  # fmt: skip
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
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale_out.json"))
    args = ap.parse_args()

    from cvdeploy import env
    from cvdeploy.bundle import Bundle

    cpus = env.available_cpus()
    half = max(1, cpus // 2)
    name = Bundle.load(args.bundle).name
    path = f"/v1/models/{name}/detect"
    body = photo_640()
    print(
        f"{env.capabilities_line()} · {cpus} CPUs · {args.bundle} · concurrency {args.concurrency}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="scale-out-"))
    names = {"single-1": f"single 1×{cpus}", "single-2": f"single 2×{half}", "ray-1": f"ray 1×{cpus}",
             "ray-2": f"ray 2×{half}"}  # fmt: skip
    singles = {"single-1": Single(args.bundle, 1, cpus, work), "single-2": Single(args.bundle, 2, half, work)}
    ray = RayCandidates(args.bundle, cpus)
    rates: dict[str, list[float]] = {k: [] for k in names}
    shares: list[dict[str, int]] = []
    try:
        warm = max(args.concurrency, 8)
        for srv in singles.values():
            load(srv.port, path, body, warm, args.concurrency)
        for r in range(args.rounds):
            order = ["single-1", "single-2", "ray-1", "ray-2"]
            for cand in order if r % 2 == 0 else order[::-1]:
                if cand in singles:
                    port = singles[cand].port
                else:
                    ray.use(int(cand[-1]))
                    port = ray.port
                    load(port, path, body, warm, args.concurrency)  # warm the (new) replicas
                rate, seen = load(port, path, body, args.requests, args.concurrency)
                rates[cand].append(rate)
                if cand == "ray-2":
                    shares.append(dict(seen))
                who = f"  replicas answering: {dict(seen)}" if cand.startswith("ray") else ""
                print(f"round {r + 1}: {names[cand]:13s} {rate:6.1f} images/s{who}", flush=True)
    finally:
        ray.stop()
        for srv in singles.values():
            srv.stop()

    med = {k: statistics.median(v) for k, v in rates.items()}
    share_min = min(min(s.values()) / sum(s.values()) if len(s) == 2 else 0.0 for s in shares)
    print()
    print("| candidate | images/s (median of rounds) | rounds | vs single 1× | vs ray 1 replica |")
    print("| --- | --- | --- | --- | --- |")
    for k in names:
        rounds = ", ".join(f"{x:.1f}" for x in rates[k])
        print(f"| {names[k]} | {med[k]:.1f} | {rounds} | {med[k] / med['single-1']:.2f}× | "
              f"{med[k] / med['ray-1']:.2f}× |")  # fmt: skip
    print(f"\nray 2 replicas: the smaller replica answered {share_min:.0%} of a round's requests (at least)")
    print(f"ceiling: {cpus} CPU(s) for replicas × threads, Ray's proxy, controller and raylet, and this load "
          "generator together")  # fmt: skip
    result = {
        "cpus": cpus,
        "single1_ips": round(med["single-1"], 2),
        "single2_ips": round(med["single-2"], 2),
        "ray1_ips": round(med["ray-1"], 2),
        "ray2_ips": round(med["ray-2"], 2),
        "ray2_over_ray1": round(med["ray-2"] / med["ray-1"], 3),
        "ray2_over_single2": round(med["ray-2"] / med["single-2"], 3),
        "ray1_over_single1": round(med["ray-1"] / med["single-1"], 3),
        "ray2_min_share": round(share_min, 3),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "scale_out", "environment": env.fingerprint(),
        "settings": {"bundle": args.bundle, "rounds": args.rounds, "requests": args.requests,
                     "concurrency": args.concurrency, "route": path},
        "candidates": names, "rounds_ips": rates, "ray2_shares": shares, "result": result,
    }, indent=1))  # fmt: skip
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
