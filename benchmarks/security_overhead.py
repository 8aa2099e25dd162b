"""What secure serving costs per request: authenticated TLS vs anonymous plain HTTP, side by side.

    python benchmarks/security_overhead.py [--bundle zoo:n] [--rounds 8] [--block 20] [--c8-rounds 4]

Three servers run at once, each in its own process (``cvdeploy.serve.server.serve``, what
``cvdeploy serve`` runs), with the same model settings; the clients are here, one keep-alive
connection each (``http.client``, the lightest client the standard library has):

- **plain**: anonymous, plain HTTP — ``cvdeploy serve BUNDLE``;
- **secure**: TLS (dev certificates) + API key + RBAC + rate limits + the audit log on SQLite —
  ``cvdeploy serve BUNDLE --db ... --tls-cert ... --tls-key ...``. The rate limits are set so high
  that they never refuse (their whole code path runs);
- **secure, audit off**: the same, with the events going to the log only (no audit database writes).

Measured:

1. p50 latency of the same request, ``POST /v1/models/NAME/detect`` with one photograph (an
   inference), authenticated over TLS vs anonymous over plain HTTP, at concurrency 1, in
   alternating blocks (plain, secure, secure, plain, ...) so that drift of a busy machine hits both
   alike — target ≤ 1.10×; also ``GET /v2/models/NAME`` (no inference: the overhead alone, in µs);
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

    cfg = parse_config({"server": {"log_level": "info"}})
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


def latency_blocks(
    a: Callable[[], float], b: Callable[[], float], rounds: int, block: int
) -> tuple[list[float], list[float]]:
    """Alternating blocks A B B A A B ... at concurrency 1: every sample of each side."""
    xs: list[float] = []
    ys: list[float] = []
    for r in range(rounds):
        order = ((a, xs), (b, ys)) if r % 2 == 0 else ((b, ys), (a, xs))
        for fn, out in order:
            out.extend(fn() for _ in range(block))
    return xs, ys


def throughput(requesters: list[Requester], per_thread: int) -> float:
    """Requests per second of ``len(requesters)`` threads sending ``per_thread`` requests each."""
    barrier = threading.Barrier(len(requesters) + 1)

    def work(req: Requester) -> None:
        barrier.wait()
        for _ in range(per_thread):
            req()

    threads = [threading.Thread(target=work, args=(r,)) for r in requesters]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="bundle or zoo:NAME (default: zoo:n, else a 640 export)")
    ap.add_argument("--rounds", type=int, default=8, help="alternating latency blocks per side")
    ap.add_argument("--block", type=int, default=20, help="requests per latency block")
    ap.add_argument("--c8-rounds", type=int, default=4, help="alternating throughput blocks per side at c=8")
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
        servers = {m: Server(m, bundle, work) for m in MODES}
        sent_secure = 0
        try:
            plain, secure, noaudit = servers["plain"], servers["secure"], servers["secure-noaudit"]
            results: dict[str, Any] = {}
            for kind in ("detect", "metadata"):
                a, b = Requester(plain, kind, jpeg), Requester(secure, kind, jpeg)
                for _ in range(5):  # warm-up: connections, TLS handshake, first inferences
                    a(), b()
                xs, ys = latency_blocks(a, b, args.rounds, args.block)
                pa, pb = statistics.median(xs), statistics.median(ys)
                n = (
                    args.block
                )  # the ratio of each round's pair of blocks: how much the machine's noise moves it
                per_round = sorted(statistics.median(ys[i : i + n]) / statistics.median(xs[i : i + n])
                                   for i in range(0, len(xs), n))  # fmt: skip
                results[kind] = {"plain_p50_ms": pa * 1e3, "secure_p50_ms": pb * 1e3, "ratio": pb / pa,
                                 "overhead_us": (pb - pa) * 1e6, "samples": len(xs),
                                 "round_ratios": per_round}  # fmt: skip
                sent_secure += b.count if kind == "detect" else 0
                print(f"{kind:9s} c=1  plain HTTP anonymous p50 {pa * 1e3:7.2f} ms · TLS + API key + audit p50 "
                      f"{pb * 1e3:7.2f} ms · ratio {pb / pa:.3f} (rounds {per_round[0]:.3f}–{per_round[-1]:.3f}) · "
                      f"{(pb - pa) * 1e6:+.0f} µs", flush=True)  # fmt: skip

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
            results["c8"] = {"rps_audit_on": med["on"], "rps_audit_off": med["off"], "rps_plain": med["plain"],
                             "ratio_on_off": med["on"] / med["off"], "blocks": rps}  # fmt: skip
            print(f"detect    c=8  secure, audit on {med['on']:6.1f} req/s · audit off {med['off']:6.1f} req/s · "
                  f"ratio {med['on'] / med['off']:.3f} · plain HTTP anonymous {med['plain']:6.1f} req/s", flush=True)  # fmt: skip
        finally:
            for s in servers.values():
                s.stop()

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
        print(f"audit log: {rows} infer rows for {sent_secure} requests sent to the secure server; "
              f"{verdict.rows} rows, intact={verdict.ok}")  # fmt: skip
        out = Path(__file__).parent / "results" / "security_overhead.json"
        out.write_text(
            json.dumps({"machine": capabilities_line(), "bundle": bundle, **results}, indent=2) + "\n"
        )
        d, m, c8 = results["detect"], results["metadata"], results["c8"]
        print(
            f"RESULT p50_ratio_detect={d['ratio']:.3f} overhead_us_detect={d['overhead_us']:.0f} "
            f"p50_ratio_metadata={m['ratio']:.3f} overhead_us_metadata={m['overhead_us']:.0f} "
            f"c8_rps_audit_on={c8['rps_audit_on']:.1f} c8_rps_audit_off={c8['rps_audit_off']:.1f} "
            f"c8_ratio_on_off={c8['ratio_on_off']:.3f} c8_rps_plain={c8['rps_plain']:.1f} "
            f"audit_rows={rows} audit_requests={sent_secure} audit_intact={verdict.ok}"
        )


if __name__ == "__main__":
    main()
