"""Repeatability: two consecutive ``cvdeploy bench`` runs of one configuration, medians compared.

Runs the real command line twice, one after the other, on the same bundle, artifact, threads and
run count, and prints the spread of the two medians (|a − b| / mean). Target: within ±5 %.

    python benchmarks/repeatability.py [--model zoo:n] [--runs 100] [--threads 1]

Ends with ``RESULT spread_pct=… median1_ms=… median2_ms=… within_5pct=0|1``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench_model import default_bundle

CLI = "from cvdeploy.cli.main import main; main()"


def bench_once(spec: str, out: Path, runs: int, threads: int) -> dict[str, object]:
    cmd = [
        sys.executable,
        "-c",
        CLI,
        "bench",
        spec,
        "-a",
        "onnx-fp32",
        "--runs",
        str(runs),
        "--warmup",
        "10",
        "--threads",
        str(threads),
        "--report",
        str(out.parent / out.stem),
        "--json",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    (result,) = json.loads((out.parent / out.stem / "bench.json").read_text())["results"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle or zoo:NAME (default: zoo:n, else a 640 export)")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cvdeploy-repeat-") as tmp:
        spec = default_bundle(args.model, Path(tmp))
        r1 = bench_once(spec, Path(tmp) / "run1.json", args.runs, args.threads)
        r2 = bench_once(spec, Path(tmp) / "run2.json", args.runs, args.threads)
        m1, m2 = float(r1["p50_ms"]), float(r2["p50_ms"])  # type: ignore[arg-type]
        i1 = float(r1["stages"]["inference"]["p50_ms"])  # type: ignore[index]
        i2 = float(r2["stages"]["inference"]["p50_ms"])  # type: ignore[index]
        spread = abs(m1 - m2) / ((m1 + m2) / 2)
        spread_inf = abs(i1 - i2) / ((i1 + i2) / 2)
        cv1 = float(r1["latency"]["cv"])  # type: ignore[index]
        cv2 = float(r2["latency"]["cv"])  # type: ignore[index]
        print(f"{r1['key']}, {args.runs} runs each")
        print(f"run 1: median {m1:.2f} ms (inference {i1:.2f} ms, CV {100 * cv1:.1f} %)")
        print(f"run 2: median {m2:.2f} ms (inference {i2:.2f} ms, CV {100 * cv2:.1f} %)")
        print(
            f"spread of the medians {100 * spread:.2f} % (inference stage {100 * spread_inf:.2f} %); "
            f"target ±5 %: {'met' if spread <= 0.05 else 'NOT met'}"
        )
        print(
            f"RESULT spread_pct={100 * spread:.2f} spread_inference_pct={100 * spread_inf:.2f} "
            f"median1_ms={m1:.2f} median2_ms={m2:.2f} within_5pct={int(spread <= 0.05)}"
        )


if __name__ == "__main__":
    main()
