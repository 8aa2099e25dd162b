"""Cost of the security gate around one inference, without the transport: A/B in one process.

A is a bare inference (one preprocessed image through ``zoo:n``'s ONNX Runtime session); B is the
same inference behind the whole security gate as the server will run it per request — API-key
authentication against the database (SHA-256 + lookup), rate limits, the RBAC decision, and an
inference summary emitted to the audit sink (written by its background thread, hash-chained and
signed). Both run at concurrency 1 and 8 (threads), interleaved in blocks (A B A B …) so drift of a
busy machine hits both alike. The audit log is verified at the end.

    python benchmarks/security_gate.py [--model zoo:n] [--db sqlite|URL] [--rounds 6] [--block 20]

Ends with ``RESULT gate_us_p50=… ratio_c1=… ratio_c8=… audit_rows=… audit_intact=…``. The HTTP/TLS
comparison of the issue's acceptance (``benchmarks/security_overhead.py``) needs the server wiring.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _bench_model import default_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle or zoo:NAME (default: zoo:n, else a 640 export)")
    ap.add_argument("--db", default="sqlite", help="'sqlite' (a temporary file) or a postgresql:// URL")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--block", type=int, default=20, help="requests per thread per block")
    args = ap.parse_args()

    from cvdeploy.images import sample_images
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions
    from cvdeploy.security.ratelimit import Rate
    from cvdeploy.security.setup import SecuritySetup
    from cvdeploy.serve.security import Connection, Event

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CVDEPLOY_SECRETS_DIR"] = str(Path(tmp) / "secrets")
        spec = default_bundle(args.model, Path(tmp))
        pipe = Pipeline.from_bundle(spec, "onnx-fp32", RuntimeOptions(threads=1, concurrency=8))
        x = pipe.preprocess(sample_images(1))[0]
        name = pipe.input_name
        db = str(Path(tmp) / "bench.db") if args.db == "sqlite" else args.db
        never = Rate(1e9, 1e9)  # the buckets' full code path, but never a refusal
        setup = SecuritySetup.build(db, per_principal=never, per_source=never)
        token = setup.keys.create("bench", "predictor", ["zoo-n"]).token
        model = pipe.artifact.name if pipe.artifact else "model"

        def bare() -> None:
            pipe.runtime.run({name: x})

        def gated() -> None:
            conn = Connection({"authorization": f"Bearer {token}"}, ("127.0.0.1", 50000))
            p = setup.authenticator.resolve(conn)
            setup.authorizer.authorize(p, "infer", "model:zoo-n")
            pipe.runtime.run({name: x})
            setup.sink.emit(Event("infer", "model:zoo-n", p.id, "success", {"images": 1, "artifact": model}))

        def gate_only() -> None:
            conn = Connection({"authorization": f"Bearer {token}"}, ("127.0.0.1", 50000))
            p = setup.authenticator.resolve(conn)
            setup.authorizer.authorize(p, "infer", "model:zoo-n")
            setup.sink.emit(Event("infer", "model:zoo-n", p.id, "success", {"images": 1}))

        def block(fn, threads: int) -> list[float]:  # type: ignore[no-untyped-def]
            times: list[float] = []
            lock = threading.Lock()

            def worker() -> None:
                mine = []
                for _ in range(args.block):
                    t0 = time.perf_counter()
                    fn()
                    mine.append(time.perf_counter() - t0)
                with lock:
                    times.extend(mine)

            ts = [threading.Thread(target=worker) for _ in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return times

        gate_us = statistics.median(block(gate_only, 1)) * 1e6
        ratios = {}
        for conc in (1, 8):
            block(bare, conc), block(gated, conc)  # warm-up
            a: list[float] = []
            b: list[float] = []
            for _ in range(args.rounds):
                a += block(bare, conc)
                b += block(gated, conc)
            pa, pb = statistics.median(a), statistics.median(b)
            ratios[conc] = pb / pa
            print(
                f"concurrency {conc}: bare p50 {pa * 1e3:.2f} ms, gated p50 {pb * 1e3:.2f} ms, ratio {pb / pa:.3f}"
            )
        setup.sink.flush(60)
        verdict = setup.audit.verify()
        print(f"gate alone (authenticate + authorize + audit emit): p50 {gate_us:.0f} us per request")
        print(f"audit log: {verdict.rows} rows, intact={verdict.ok}")
        setup.close()
        print(
            f"RESULT gate_us_p50={gate_us:.0f} ratio_c1={ratios[1]:.3f} ratio_c8={ratios[8]:.3f} "
            f"audit_rows={verdict.rows} audit_intact={verdict.ok}"
        )


if __name__ == "__main__":
    main()
