"""Distillation gain: a pruned zoo:s recovered with the unpruned zoo:s as teacher vs on the labels alone.

Issue 16 (item 5): with the shipped zoo:s as teacher, show the gain of distillation over a label-only
student at the same budget (target ≥ +1 mAP50-95 point on the unseen split). The student both times is
zoo:s pruned by the recorded recipe (``PRUNE_RECIPE``: the same channels removed, so the same start);
both recover on the same labelled 320 px crops of the same fresh dataset (``--images`` generated with
seed 4242, never seen by zoo:s), in the same order, for the same number of steps (``--epochs``), with
the same schedule. One adds the teacher to the loss: its outputs, and its neck features through fitted
1x1 maps (``--feature-gain``, the recipe's ``PRUNE_RECIPE.feature_gain``; 0 for outputs alone). Both are
scored on that dataset's val split. The two runs are ``benchmarks/optimize.py --prune --prune-recovery distill|labels``, started
side by side (one torch thread each, one per core) so the budget is steps, not a share of the CPU.

    python benchmarks/distill_gain.py [--model zoo:s] [--epochs 5] [--images 2000]

Ends with ``RESULT distill_gain=… distilled_map=… labels_map=… …``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from run_all import parse_result

HERE = Path(__file__).resolve().parent


def _result(text: str) -> dict[str, object]:
    found = parse_result(text)
    if not found:
        raise SystemExit("a run ended without its RESULT line:\n" + text[-3000:])
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:s", help="the teacher; its pruned copy is the student")
    ap.add_argument("--epochs", type=int, default=5, help="recovery epochs of each student (the budget)")
    ap.add_argument("--images", type=int, default=2000, help="fresh labelled images (train + val split)")
    ap.add_argument("--runs", type=int, default=20, help="timed passes per variant in each run's table")
    ap.add_argument("--log-dir", default=None, help="keep each run's full output here")
    from cvdeploy.optimize.retrain import PRUNE_RECIPE

    ap.add_argument(
        "--feature-gain",
        type=float,
        default=PRUNE_RECIPE.feature_gain,
        help="the distilling run also matches the teacher's neck features (default: the recipe's)",
    )
    args = ap.parse_args()
    runs = {}
    t0 = time.perf_counter()
    for recovery in ("distill", "labels"):
        cmd = [sys.executable, str(HERE / "optimize.py"), "--model", args.model, "--prune", "--images",
               str(args.images), "--runs", str(args.runs), "--prune-epochs", str(args.epochs),
               "--prune-budget-s", "1e9", "--prune-recovery", recovery]  # fmt: skip
        if recovery == "distill":
            cmd += ["--prune-feature-gain", str(args.feature_gain)]
        runs[recovery] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(f"· started: {' '.join(cmd[1:])}", flush=True)
    out = {k: p.communicate()[0] for k, p in runs.items()}
    wall = time.perf_counter() - t0
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        for k, text in out.items():
            (Path(args.log_dir) / f"distill_gain_{k}.log").write_text(text)
    res = {k: _result(text) for k, text in out.items()}
    d, lab = res["distill"], res["labels"]
    base = float(d["fp32_map"])  # type: ignore[arg-type]
    dm, lm = base - float(d["prune_drop"]), float(lab["fp32_map"]) - float(lab["prune_drop"])  # type: ignore[arg-type]
    gain = dm - lm
    print(f"{args.model} (teacher) mAP50-95 on the unseen val split: {base:.2f}")
    print(
        f"pruned, recovered with the teacher + labels: {dm:.2f} ({d['prune_steps']} steps, {d['prune_s']} s)"
    )
    print(
        f"pruned, recovered on the labels alone:      {lm:.2f} ({lab['prune_steps']} steps, {lab['prune_s']} s)"
    )
    print(f"distillation gain: {gain:+.2f} points (target ≥ +1.0)")
    fields = {"distill_gain": f"{gain:.2f}", "distilled_map": f"{dm:.2f}", "labels_map": f"{lm:.2f}",
              "teacher_map": f"{base:.2f}", "steps": d["prune_steps"], "distill_s": d["prune_s"],
              "labels_s": lab["prune_s"], "speedup": d["prune_speedup"], "gmacs": d["prune_gmacs"],
              "wall_s": f"{wall:.0f}", "target_met": int(gain >= 1.0)}  # fmt: skip
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


if __name__ == "__main__":
    main()
