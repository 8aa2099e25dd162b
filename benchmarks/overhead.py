"""Overhead of the harness: cvdeploy's inference-stage timing vs a bare ``session.run`` loop.

Both run the same ONNX Runtime session, thread count and preprocessed real images, interleaved in
blocks (A B A B …) so that drift of a busy machine hits both alike. A is the inference stage as
``cvdeploy bench`` measures it (``time_pass``: decode → preprocess → infer → decode, the clock read
around ``Pipeline.infer``); B is ``perf_counter_ns`` around ``session.run`` and nothing else.

    python benchmarks/overhead.py [--model zoo:n] [--rounds 20] [--block 10] [--threads 1]

Ends with ``RESULT overhead_ratio=… cvdeploy_ms=… bare_ms=…``; target overhead_ratio ≤ 1.03.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench_model import default_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle or zoo:NAME (default: zoo:n, else a 640 export)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=10, help="runs per block before switching A/B")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from cvdeploy.bench.harness import ImageFeed, time_pass
    from cvdeploy.bench.stats import bootstrap_median_ratio, mann_whitney_u
    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions

    with tempfile.TemporaryDirectory() as tmp:
        spec = default_bundle(args.model, Path(tmp))
        pipe = Pipeline.from_bundle(spec, "onnx-fp32", RuntimeOptions(threads=args.threads))
        feed = ImageFeed.samples(8)
        tensors = [pipe.preprocess([decode_image(feed.batch(i, 1)[0])])[0] for i in range(len(feed.encoded))]
        session = pipe.runtime.session  # type: ignore[attr-defined]
        names = [o.name for o in session.get_outputs()]
        feed_name = pipe.input_name

        def a_block(start: int) -> list[int]:
            return [time_pass(pipe, feed.batch(start + k, 1))[2] for k in range(args.block)]

        def b_block(start: int) -> list[int]:
            out = []
            for k in range(args.block):
                x = tensors[(start + k) % len(tensors)]
                t0 = time.perf_counter_ns()
                session.run(names, {feed_name: x})
                out.append(time.perf_counter_ns() - t0)
            return out

        a_block(0), b_block(0)  # warm-up, discarded
        a_ns: list[int] = []
        b_ns: list[int] = []
        for r in range(args.rounds):
            start = r * args.block
            if r % 2 == 0:  # alternate which goes first, too
                a_ns += a_block(start)
                b_ns += b_block(start)
            else:
                b_ns += b_block(start)
                a_ns += a_block(start)
        a_ms, b_ms = np.asarray(a_ns) / 1e6, np.asarray(b_ns) / 1e6
        ratio, low, high = bootstrap_median_ratio(b_ms, a_ms)
        test = mann_whitney_u(a_ms, b_ms)
        print(f"model {spec}, threads {args.threads}, {len(a_ms)} runs each, input {tensors[0].shape}")
        print(
            f"A cvdeploy inference stage: median {np.median(a_ms):.3f} ms (p90 {np.percentile(a_ms, 90):.3f})"
        )
        print(
            f"B bare session.run:         median {np.median(b_ms):.3f} ms (p90 {np.percentile(b_ms, 90):.3f})"
        )
        print(f"ratio A/B {ratio:.4f} (95 % CI {low:.4f} … {high:.4f}), Mann-Whitney p = {test.p_value:.3g}")
        print(f"target overhead_ratio <= 1.03: {'met' if ratio <= 1.03 else 'NOT met'}")
        print(
            f"RESULT overhead_ratio={ratio:.4f} ci_low={low:.4f} ci_high={high:.4f} "
            f"cvdeploy_ms={np.median(a_ms):.3f} bare_ms={np.median(b_ms):.3f} runs={len(a_ms)} threads={args.threads}"
        )


if __name__ == "__main__":
    main()
