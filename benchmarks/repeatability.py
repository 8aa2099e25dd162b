"""Repeatability: pairs of consecutive ``cvdeploy bench`` runs of one configuration, headline figures compared.

Runs the real command line twice in a row, ``--pairs`` times, on the same bundle, artifact, threads and
run count, and prints the spread (|a − b| / mean) of the headline figure — the *steady* p50, the median
of the passes foreign load did not slow down (see ``cvdeploy.bench.noise``) — beside the spread of the
plain median. With ``--hog`` two background processes burn the CPUs in random bursts (0.3–2 s busy,
0.5–3 s idle) during the whole measurement, to show what a shared machine does to each figure.
Target (issue 16): the 90th percentile of the headline's spread within 5 %.

    python benchmarks/repeatability.py [--model zoo:n] [--pairs 10] [--runs 100] [--threads 1] [--hog]

Writes ``benchmarks/results/repeatability.json`` and ends with
``RESULT spread_pct_p90=… median_spread_pct_p90=… pairs=… disturbed_runs=… within_5pct=0|1``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench_model import default_bundle

CLI = "from cvdeploy.cli.main import main; main()"


def bench_once(spec: str, out: Path, runs: int, threads: int) -> dict[str, object]:
    cmd = [sys.executable, "-c", CLI, "bench", spec, "-a", "onnx-fp32", "--runs", str(runs), "--warmup", "10",
           "--threads", str(threads), "--report", str(out.parent / out.stem), "--json"]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    (result,) = json.loads((out.parent / out.stem / "bench.json").read_text())["results"]
    return result


def _burn(stop: mp.synchronize.Event, seed: int) -> None:  # type: ignore[name-defined]
    rng = random.Random(seed)
    while not stop.is_set():
        end = time.time() + rng.uniform(0.3, 2.0)
        while time.time() < end:
            pass
        time.sleep(rng.uniform(0.5, 3.0))


def _spread(a: float, b: float) -> float:
    return abs(a - b) / ((a + b) / 2) * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle or zoo:NAME (default: zoo:n, else a 640 export)")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hog", action="store_true", help="burst foreign load on every core while measuring")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "repeatability.json"))
    args = ap.parse_args()
    from cvdeploy import env

    stop = mp.Event()
    hogs = (
        [mp.Process(target=_burn, args=(stop, i), daemon=True) for i in range(env.available_cpus())]
        if args.hog
        else []
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="cvdeploy-repeat-") as tmp:
        spec = default_bundle(args.model, Path(tmp))
        for h in hogs:
            h.start()
        try:
            for k in range(args.pairs):
                pair = [
                    bench_once(spec, Path(tmp) / f"run{k}-{i}.json", args.runs, args.threads) for i in (1, 2)
                ]
                steady = [float(r["steady"]["p50_ms"]) for r in pair]  # type: ignore[index]
                plain = [float(r["p50_ms"]) for r in pair]  # type: ignore[arg-type]
                busy = [r.get("foreign_load") for r in pair]
                rows.append({"steady_ms": steady, "median_ms": plain, "foreign_load": busy,
                             "steady_spread_pct": _spread(*steady), "median_spread_pct": _spread(*plain),
                             "noise_pct": [float(r["steady"]["noise_pct"]) for r in pair]})  # type: ignore[index]  # fmt: skip
                print(f"pair {k + 1:2d}: steady {steady[0]:.2f} / {steady[1]:.2f} ms ({rows[-1]['steady_spread_pct']:.2f} %), "
                      f"median {plain[0]:.2f} / {plain[1]:.2f} ms ({rows[-1]['median_spread_pct']:.2f} %), "
                      f"foreign load {', '.join('n/a' if b is None else f'{b:.0%}' for b in busy)}", flush=True)  # fmt: skip
        finally:
            stop.set()
            for h in hogs:
                h.join(timeout=5)
    p90 = float(np.percentile([r["steady_spread_pct"] for r in rows], 90))
    p90_med = float(np.percentile([r["median_spread_pct"] for r in rows], 90))
    disturbed = sum(1 for r in rows for b in r["foreign_load"] if b is not None and b > 0.25)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "repeatability", "hog": args.hog, "runs": args.runs,
                               "threads": args.threads, "environment": env.fingerprint(), "pairs": rows,
                               "spread_pct_p90": p90, "median_spread_pct_p90": p90_med}, indent=2))  # fmt: skip
    print(f"headline (steady p50) spread p90 {p90:.2f} %, plain median {p90_med:.2f} %; target 5 %: "
          f"{'met' if p90 <= 5 else 'NOT met'}; runs flagged too disturbed: {disturbed} of {2 * len(rows)}")  # fmt: skip
    print(
        f"RESULT spread_pct_p90={p90:.2f} median_spread_pct_p90={p90_med:.2f} pairs={len(rows)} "
        f"disturbed_runs={disturbed} hog={int(args.hog)} within_5pct={int(p90 <= 5)}"
    )


if __name__ == "__main__":
    main()
