"""Does ``cvdeploy doctor`` name the fault that was planted, and nothing on a clean deployment? How fast is it?

Plants every fault of the finding catalogue (:class:`cvdeploy.doctor.faults.Planter`) into a
deployment of the shipped ``zoo:n`` on freshly generated shapes (seed 8181 — no test uses it),
runs ``doctor`` on each, and prints a confusion table of planted vs top finding. Then diagnoses
clean deployments — seed 8282 images with their true results, tensors, labels and ``--speed``, and
the plant images with correct results — where any critical finding is a false alarm. Finally it
times the real command line on 100 fresh images in a new process, without ``--speed``, with a fault
planted (``--observed`` from a BGR deployment, so the variant search runs) and ``--labels`` (so the
source's mAP is computed too): the most work ``doctor`` does without ``--speed``.

    python benchmarks/doctor.py [--images 12] [--time-images 100] [--skip-timing | --timing-only]

Ends with ``RESULT planted=N top1=N false_alarms=N time_100_images_s=S``. Targets: every planted fault
top-1, zero false alarms, under 120 s for 100 images.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")

from cvdeploy import env
from cvdeploy.doctor import FINDING_IDS, Doctor, faults
from cvdeploy.doctor.faults import Planter

PLANT_SEED, CLEAN_SEED, TIMING_SEED = 8181, 8282, 8383  # 8182 (drift) and 8184 (large objects) too


def not_a_fault_here(finding: str) -> str | None:
    """Why a planted fault is no fault on this machine (then it is not counted)."""
    if finding == "speed.precision" and env.cpu_capabilities()["fp16"]:
        return "this CPU has FP16 arithmetic"
    if finding == "speed.provider_fallback":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "CUDA is available: nothing falls back"
    return None


def plant_all(root: Path, images: int) -> list[tuple[str, str, str, float]]:
    """``(planted, top finding, its severity, seconds)`` for every finding id."""
    data = faults.shapes_dataset(root / "plant", PLANT_SEED, images)
    drift = faults.shapes_dataset(root / "drift", PLANT_SEED + 1, 30)
    doctor = Doctor("zoo:n", data.parent / "images" / "val")
    drift_images = sorted((drift.parent / "images" / "val").glob("*.jpg"))
    rows = []
    for finding in FINDING_IDS:
        why = not_a_fault_here(finding)
        if why:
            print(f"  {finding:26s} skipped: {why}", flush=True)
            continue
        work = root / finding.replace(".", "-")
        t0 = time.perf_counter()
        d, options = Planter(doctor, work, drift_images, data_yaml=data, seed=PLANT_SEED + 3).plant(finding)
        report = d.diagnose(options)
        top = report.top
        seconds = time.perf_counter() - t0
        rows.append((finding, top.id if top else "none", top.severity if top else "-", seconds))
        mark = "ok " if rows[-1][1] == finding else "MISS"
        print(f"  {mark} {finding:26s} → {rows[-1][1]:26s} ({rows[-1][2]}, {seconds:.1f} s)", flush=True)
    return rows


def clean_runs(root: Path, images: int) -> list[tuple[str, list[str], list[str]]]:
    """``(run, critical finding ids, warning ids)`` of correct deployments."""
    out = []
    data = faults.shapes_dataset(root / "clean", CLEAN_SEED, images)
    doctor = Doctor("zoo:n", data.parent / "images" / "val")
    report = doctor.diagnose(Planter(doctor, root / "clean-work").clean(data))
    out.append((f"seed {CLEAN_SEED}, {images} images: results, tensors, labels, --speed",
                [f.id for f in report.critical], [f.id for f in report.findings if f.severity == "warning"]))  # fmt: skip
    plant = root / "plant" / "images" / "val"
    doctor = Doctor("zoo:n", plant)
    report = doctor.diagnose(
        Planter(doctor, root / "clean-work2").clean(root / "plant" / "data.yaml", speed=False)
    )
    out.append((f"seed {PLANT_SEED} (the plant images), correct results and labels",
                [f.id for f in report.critical], [f.id for f in report.findings if f.severity == "warning"]))  # fmt: skip
    return out


def time_cli(root: Path, images: int) -> float:
    """Seconds of ``cvdeploy doctor`` on ``images`` fresh images, in a new process, without --speed."""
    data = faults.shapes_dataset(root / "timing", TIMING_SEED, images)
    folder = data.parent / "images" / "val"
    doctor = Doctor("zoo:n", folder)
    observed = Planter(doctor, root / "timing-work").observed(color="BGR")
    cmd = [sys.executable, "-c", "from cvdeploy.cli.main import main; main()", "doctor", "zoo:n", "--images",
           str(folder), "--observed", str(observed), "--labels", str(data), "--json"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"doctor failed ({proc.returncode}): {proc.stderr[-2000:]}")
    import json

    doc = json.loads(proc.stdout)
    top = doc["findings"][0]["id"]
    print("  per check: " + ", ".join(f"{c['id']} {c['seconds']:.1f} s" for c in doc["checks"]))
    load = os.getloadavg()[0]
    print(f"  {images} images, --observed (BGR deployment) --labels, no --speed: {seconds:.1f} s wall, {cpu:.1f} s CPU "
          f"(load average {load:.1f} on {os.cpu_count()} cores); top finding {top}")  # fmt: skip
    return seconds


def confusion(rows: list[tuple[str, str, str, float]]) -> None:
    """Planted (rows) vs top finding (columns), columns numbered as the rows."""
    ids = [r[0] for r in rows]
    cols = ids + sorted({r[1] for r in rows} - set(ids))
    width = max(len(i) for i in ids)
    print("\nconfusion: planted (rows) vs top finding (columns)")
    print(" " * (width + 6) + " ".join(f"{k + 1:>2}" for k in range(len(cols))))
    for k, (planted, top, _, _) in enumerate(rows):
        cells = " ".join(" X" if top == c else (" ." if c != planted else " -") for c in cols)
        print(f"{k + 1:>2}  {planted:<{width}}  {cells}")
    extra = cols[len(ids) :]
    if extra:
        print(
            "columns beyond the planted ids: "
            + ", ".join(f"{len(ids) + i + 1}={c}" for i, c in enumerate(extra))
        )
    print("X = top finding; - = the planted id (a diagonal of X is a perfect score)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12, help="plant images (fresh, seed 8181)")
    ap.add_argument("--clean-images", type=int, default=24, help="clean images (fresh, seed 8282)")
    ap.add_argument("--time-images", type=int, default=100)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--timing-only", action="store_true", help="only time the command line on --time-images")
    args = ap.parse_args()
    print(f"machine: {env.cpu_info()['model']}, {env.available_cpus()} CPUs ({env.capabilities_line()})")
    with tempfile.TemporaryDirectory(prefix="cvdeploy-doctor-bench-") as tmp:
        root = Path(tmp)
        if args.timing_only:
            seconds = time_cli(root, args.time_images)
            print(f"\nRESULT time_{args.time_images}_images_s={seconds:.1f}")
            return
        print(f"planting every fault into zoo:n on {args.images} fresh images:")
        rows = plant_all(root, args.images)
        confusion(rows)
        print("\nclean deployments (any critical finding is a false alarm):")
        clean = clean_runs(root, args.clean_images)
        for name, critical, warnings in clean:
            print(f"  {name}: critical {critical or 'none'}; warnings {warnings or 'none'}")
        seconds = float("nan")
        if not args.skip_timing:
            print("\ntiming the command line:")
            seconds = time_cli(root, args.time_images)
    top1 = sum(r[0] == r[1] for r in rows)
    false_alarms = sum(len(c) for _, c, _ in clean)
    print(
        f"\nRESULT planted={len(rows)} top1={top1} false_alarms={false_alarms} time_{args.time_images}_images_s={seconds:.1f}"
    )


if __name__ == "__main__":
    main()
