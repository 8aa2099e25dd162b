"""What secure serving costs per request: authenticated TLS vs anonymous plain HTTP, side by side.

    python benchmarks/security_overhead.py [--bundle zoo:n] [--launches 3] [--pairs 60] [--c8-rounds 6]

Three servers run at once, each in its own process (``cvdeploy.serve.server.serve``, what
``cvdeploy serve`` runs), with the same model settings (one intra-op thread each, so that they do
not fight over the cores and a shared machine's noise stays small); the clients are here, one keep-alive
connection each (``http.client``, the lightest client the standard library has):

- **plain**: anonymous, plain HTTP — ``cvdeploy serve BUNDLE``;
- **secure**: TLS (dev certificates) + API key + RBAC + rate limits + the audit log on SQLite —
  ``cvdeploy serve BUNDLE --db ... --tls-cert ... --tls-key ...``. The rate limits are set so high
  that they never refuse (their whole code path runs);
- **secure, audit off**: the same, with the events going to the log only (no audit database writes).

Measured:

1. p50 latency of the same request, ``POST /v1/models/NAME/detect`` with one photograph (an
   inference), authenticated over TLS vs anonymous over plain HTTP, at concurrency 1, alternating
   request by request (plain, secure, secure, plain, ...) so that drift of a busy machine hits both
   alike, on ``--launches`` fresh pairs of server processes (on a shared machine a process can run
   its inference 10-20 % slower than its twin for its whole life; fresh launches average that out) —
   target ≤ 1.10×, with a 90 % bootstrap interval; also ``GET /v2/models/NAME`` (no
   inference: the overhead alone, in µs), the ratio that overhead gives the inference request (free of
   inference noise), and a control: the secure server with the audit log off vs on, whose ratio
   shows how far this machine's noise moves a ratio of two alike servers;
2. throughput at concurrency 8 (8 threads, 8 connections) of the secure server with the audit log
   on vs off, alternating blocks — audit writes (a background thread, batched, hash-chained and
   signed) must not serialise inference: the ratio should be ≈ 1; plain HTTP at c=8 is shown beside;
3. afterwards, the audit log holds one ``infer`` row per request sent to the secure server and
   ``audit verify`` finds it intact.

The TLS handshake happens once per connection (keep-alive), as for any client that reuses its
connection. Ends with one ``RESULT key=value ...`` line; the figures also go to
``benchmarks/results/security_overhead.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")

MODES = ("plain", "secure", "secure-noaudit")


# ---- the server processes ----------------------------------------------------------------------


def child(mode: str, bundle: str, workdir: Path, port: int) -> None:
    """Run one server in this process until SIGINT/SIGTERM (the parent's side is :class:`Server`)."""
    from cvdeploy.security.ratelimit import Rate
    from cvdeploy.serve.config import Platform, parse_config
    from cvdeploy.serve.logs import configure_logging
    from cvdeploy.serve.security import FanoutEventSink, LogEventSink, Security
    from cvdeploy.serve.server import TLSFiles, serve

    # connections stay open between the alternating blocks, as a client that reuses its connection's would
    cfg = parse_config(
        {"server": {"log_level": "info"}, "limits": {"keep_alive_s": 3600}, "defaults": {"threads": 1}}
    )
    configure_logging("info", "json")
    security, tls, setup = None, None, None
    if mode != "plain":
        from cvdeploy.security.setup import SecuritySetup

        never = Rate(1e9, 1e9)  # the buckets' full code path, never a refusal
        setup = SecuritySetup.build(workdir / f"{mode}.db", secrets_dir=workdir / f"secrets-{mode}",
                                    per_principal=never, per_source=never)  # fmt: skip
        security = setup.security()
        if mode == "secure-noaudit":
            security = Security(setup.authenticator, setup.authorizer, FanoutEventSink([LogEventSink()]))
        tls = TLSFiles(workdir / "certs" / "server.pem", workdir / "certs" / "server.key")
    ready = workdir / f"{mode}.ready"

    def on_ready(url: str, app: Any) -> None:
        name = sorted(app.state.service.repository.models)[0]
        token = setup.keys.create("bench", "predictor", [name]).token if setup is not None else ""
        ready.write_text(json.dumps({"url": url, "model": name, "token": token}))

    try:  # uvicorn turns SIGINT/SIGTERM into a graceful shutdown; serve() then returns
        serve(
            [bundle], cfg, Platform("local", "127.0.0.1", port), security=security, on_ready=on_ready, tls=tls
        )
    finally:
        if setup is not None:
            setup.close()  # writes what is queued for the audit log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, mode: str, bundle: str, workdir: Path) -> None:
        self.mode = mode
        self.port = free_port()
        ready = workdir / f"{mode}.ready"
        self.log = open(workdir / f"server-{mode}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", mode, "--bundle", bundle, "--workdir", str(workdir),
             "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not ready.is_file():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{mode} server did not start:\n{Path(self.log.name).read_text()[-3000:]}")
            time.sleep(0.1)
        doc = json.loads(ready.read_text())
        self.url, self.model, self.token = doc["url"], doc["model"], doc["token"]
        self.tls = self.url.startswith("https://")
        self.context = (
            ssl.create_default_context(cafile=str(workdir / "certs" / "ca.pem")) if self.tls else None
        )

    def connect(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=60)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# ---- the clients -------------------------------------------------------------------------------


class Requester:
    """One keep-alive connection to one server sending one kind of request; ``count`` of successes."""

    def __init__(self, server: Server, kind: str, jpeg: bytes) -> None:
        self.server = server
        self.conn = server.connect()
        if kind == "detect":
            self.args = ("POST", f"/v1/models/{server.model}/detect", jpeg,
                         {"Content-Type": "image/jpeg", **server.headers()})  # fmt: skip
        else:
            self.args = ("GET", f"/v2/models/{server.model}", None, server.headers())
        self.count = 0

    def __call__(self) -> float:
        method, path, body, headers = self.args
        t0 = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"{self.server.mode}: {method} {path} answered {resp.status}")
        self.count += 1
        return dt


def latency_pairs(
    a: Callable[[], float], b: Callable[[], float], pairs: int
) -> tuple[list[float], list[float]]:
    """``pairs`` requests to each side at concurrency 1, alternating one by one (A B B A A B ...), so
    drift of a busy machine hits both alike."""
    xs: list[float] = []
    ys: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            xs.append(a())
            ys.append(b())
        else:
            ys.append(b())
            xs.append(a())
    return xs, ys


def ratio_ci(xs: list[float], ys: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 90 % bootstrap interval of p50(ys) / p50(xs), resampling the pairs: how far noise moves it."""
    rng = random.Random(seed)
    idx = range(len(xs))
    ratios = sorted(
        statistics.median(ys[i] for i in pick) / statistics.median(xs[i] for i in pick)
        for pick in (rng.choices(idx, k=len(xs)) for _ in range(n))
    )
    return ratios[int(0.05 * n)], ratios[int(0.95 * n) - 1]


def throughput(requesters: list[Requester], per_thread: int) -> float:
    """Requests per second of ``len(requesters)`` threads sending ``per_thread`` requests each."""
    barrier = threading.Barrier(len(requesters) + 1)
    errors: list[BaseException] = []

    def work(req: Requester) -> None:
        barrier.wait()
        try:
            for _ in range(per_thread):
                req()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in requesters]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"a request failed at concurrency {len(requesters)}: {errors[0]!r}")
    return len(requesters) * per_thread / (time.perf_counter() - t0)


def photo() -> bytes:
    import cv2

    from cvdeploy.images import sample_images

    img = sample_images(3)[2]
    h, w = img.shape[:2]
    img = cv2.resize(img, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def compare(label: str, a: Requester, b: Requester, pairs: int) -> dict[str, Any]:
    """p50 of ``b`` over ``a`` at concurrency 1, alternating request by request, with its 90 % interval."""
    for _ in range(5):  # warm-up: connections, TLS handshake, first inferences
        a(), b()
    xs, ys = latency_pairs(a, b, pairs)
    pa, pb = statistics.median(xs), statistics.median(ys)
    lo, hi = ratio_ci(xs, ys)
    print(f"  {label:9s} c=1  {a.server.mode:14s} p50 {pa * 1e3:7.2f} ms · {b.server.mode:6s} p50 {pb * 1e3:7.2f} ms · "
          f"ratio {pb / pa:.3f} (90 % CI {lo:.3f}–{hi:.3f}) · {(pb - pa) * 1e6:+.0f} µs", flush=True)  # fmt: skip
    return {"a_ms": [x * 1e3 for x in xs], "b_ms": [y * 1e3 for y in ys], "ratio": pb / pa, "ci90": [lo, hi]}


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every launch's samples together: p50s, their ratio and its 90 % interval, and each launch's ratio."""
    xs = [x for r in runs for x in r["a_ms"]]
    ys = [y for r in runs for y in r["b_ms"]]
    pa, pb = statistics.median(xs), statistics.median(ys)
    lo, hi = ratio_ci(xs, ys)
    return {"a_p50_ms": pa, "b_p50_ms": pb, "ratio": pb / pa, "ratio_ci90": [lo, hi], "overhead_us": (pb - pa) * 1e3,
            "samples": len(xs), "launch_ratios": [r["ratio"] for r in runs]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="bundle or zoo:NAME (default: zoo:n, else a 640 export)")
    ap.add_argument("--launches", type=int, default=3, help="fresh server processes for the c=1 comparisons")
    ap.add_argument("--pairs", type=int, default=60, help="requests per side per launch at c=1, alternating")
    ap.add_argument("--c8-rounds", type=int, default=6, help="alternating throughput blocks per side at c=8")
    ap.add_argument("--c8-block", type=int, default=8, help="requests per thread per throughput block")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.bundle, Path(args.workdir), args.port)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from _bench_model import default_bundle

    from cvdeploy.env import capabilities_line
    from cvdeploy.security.certs import dev_certificates

    with tempfile.TemporaryDirectory(prefix="cvdeploy-secbench-") as tmp:
        work = Path(tmp)
        bundle = default_bundle(args.bundle, work)
        dev_certificates(work / "certs")
        jpeg = photo()
        print(f"model {bundle} · {capabilities_line()}", flush=True)
        sent_secure = 0
        runs: dict[str, list[dict[str, Any]]] = {"detect": [], "metadata": [], "control": []}
        results: dict[str, Any] = {}
        for launch in range(args.launches):
            last = launch == args.launches - 1
            print(f"launch {launch + 1}/{args.launches}: fresh server processes", flush=True)
            for ready in work.glob("*.ready"):
                ready.unlink()
            servers = {m: Server(m, bundle, work) for m in MODES if last or m != "secure-noaudit"}
            try:
                plain, secure = servers["plain"], servers["secure"]
                for label, kind in (("detect", "detect"), ("metadata", "metadata")):
                    b = Requester(secure, kind, jpeg)
                    runs[label].append(compare(label, Requester(plain, kind, jpeg), b, args.pairs))
                    sent_secure += b.count if kind == "detect" else 0
                if not last:
                    continue
                noaudit = servers["secure-noaudit"]
                b = Requester(secure, "detect", jpeg)
                runs["control"].append(compare("control", Requester(noaudit, "detect", jpeg), b, args.pairs))
                sent_secure += b.count
                on = [Requester(secure, "detect", jpeg) for _ in range(8)]
                off = [Requester(noaudit, "detect", jpeg) for _ in range(8)]
                bare = [Requester(plain, "detect", jpeg) for _ in range(8)]
                for group in (on, off, bare):
                    throughput(group, 2)  # warm-up
                rps: dict[str, list[float]] = {"on": [], "off": [], "plain": []}
                for r in range(args.c8_rounds):
                    order = [("on", on), ("off", off), ("plain", bare)]
                    if r % 2:
                        order.reverse()
                    for label, group in order:
                        rps[label].append(throughput(group, args.c8_block))
                sent_secure += sum(q.count for q in on)
                med = {k: statistics.median(v) for k, v in rps.items()}
                rounds = sorted(x / y for x, y in zip(rps["on"], rps["off"], strict=True))
                results["c8"] = {"rps_audit_on": med["on"], "rps_audit_off": med["off"], "rps_plain": med["plain"],
                                 "ratio_on_off": med["on"] / med["off"], "round_ratios": rounds, "blocks": rps}  # fmt: skip
            finally:
                for srv in servers.values():
                    srv.stop()

        for label in runs:
            results[label] = pooled(runs[label])
        d, m, ctl, c8 = results["detect"], results["metadata"], results["control"], results["c8"]
        # the security work is added to a request, not multiplied into its inference: the overhead measured on a
        # request without inference, over the inference request's p50, is the ratio free of inference noise
        d["ratio_from_overhead"] = (d["a_p50_ms"] + m["overhead_us"] / 1e3) / d["a_p50_ms"]
        print()
        print(f"detect    c=1  plain HTTP anonymous p50 {d['a_p50_ms']:.2f} ms · TLS + API key + audit p50 "
              f"{d['b_p50_ms']:.2f} ms · ratio {d['ratio']:.3f} (90 % CI {d['ratio_ci90'][0]:.3f}–"
              f"{d['ratio_ci90'][1]:.3f}; launches {', '.join(f'{r:.3f}' for r in d['launch_ratios'])})")  # fmt: skip
        print(f"metadata  c=1  plain HTTP anonymous p50 {m['a_p50_ms']:.3f} ms · TLS + API key p50 {m['b_p50_ms']:.3f} ms "
              f"· the security overhead alone {m['overhead_us']:+.0f} µs per request")  # fmt: skip
        print(f"detect    c=1  ratio from that overhead: ({d['a_p50_ms']:.2f} ms + {m['overhead_us']:.0f} µs) / "
              f"{d['a_p50_ms']:.2f} ms = {d['ratio_from_overhead']:.4f}")  # fmt: skip
        print(f"control   c=1  the secure server, audit off vs on (alike servers: this machine's noise): ratio "
              f"{ctl['ratio']:.3f} (90 % CI {ctl['ratio_ci90'][0]:.3f}–{ctl['ratio_ci90'][1]:.3f})")  # fmt: skip
        print(f"detect    c=8  secure, audit on {c8['rps_audit_on']:6.1f} req/s · audit off {c8['rps_audit_off']:6.1f} req/s"
              f" · ratio {c8['ratio_on_off']:.3f} (rounds {c8['round_ratios'][0]:.3f}–{c8['round_ratios'][-1]:.3f}) · "
              f"plain HTTP anonymous {c8['rps_plain']:6.1f} req/s")  # fmt: skip

        from cvdeploy.security.audit import AuditLog
        from cvdeploy.security.db import open_database
        from cvdeploy.security.serverkeys import ServerKeys

        db = open_database(work / "secure.db")
        audit = AuditLog(db, ServerKeys(work / "secrets-secure"))
        rows = db.query("SELECT COUNT(*) FROM audit_log WHERE action = 'infer' AND outcome = 'success'")[0][0]
        verdict = audit.verify()
        db.close()
        results["audit"] = {"infer_rows": int(rows), "requests_sent": sent_secure, "intact": verdict.ok,
                            "rows": verdict.rows}  # fmt: skip
        print(f"audit log: {rows} infer rows for {sent_secure} requests sent to the secure servers; "
              f"{verdict.rows} rows, intact={verdict.ok}")  # fmt: skip
        out = Path(__file__).parent / "results" / "security_overhead.json"
        doc = {"machine": capabilities_line(), "bundle": bundle, "launches": args.launches, "pairs": args.pairs,
               **results}  # fmt: skip
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(
            f"RESULT p50_ratio_detect={d['ratio']:.3f} ci90={d['ratio_ci90'][0]:.3f}-{d['ratio_ci90'][1]:.3f} "
            f"ratio_from_overhead={d['ratio_from_overhead']:.4f} overhead_us={m['overhead_us']:.0f} "
            f"control_ratio={ctl['ratio']:.3f} c8_rps_audit_on={c8['rps_audit_on']:.1f} "
            f"c8_rps_audit_off={c8['rps_audit_off']:.1f} c8_ratio_on_off={c8['ratio_on_off']:.3f} "
            f"c8_rps_plain={c8['rps_plain']:.1f} audit_rows={rows} audit_requests={sent_secure} "
            f"audit_intact={verdict.ok}"
        )


if __name__ == "__main__":
    main()
