"""``make bench``: run every benchmark, keep its RESULT as JSON, regenerate the README's performance table.

Each benchmark script prints one ``RESULT key=value ...`` line. This runner starts each script in its own
process, parses that line, and writes ``benchmarks/results/<name>.result.json`` with the figures, the
command, the date and the machine (CPU model, flags, capabilities) — so every figure in the README can be
traced to the run and the CPU that produced it. The README's table between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` is then rewritten from those files, each figure beside its target; nothing in it is
typed by hand.

    python benchmarks/run_all.py                 # everything (about 2 h on 2 cores: pruning and the distillation comparison train)
    python benchmarks/run_all.py --only precision,cold_start
    python benchmarks/run_all.py --table-only    # just regenerate the README table from the JSON files
    python benchmarks/run_all.py --record prune=prune.log --command "python benchmarks/optimize.py ..."
        # a benchmark run by hand (say, the hour of pruning, started apart): its output's RESULT line is
        # recorded like a run of its own, with the command given and the log's date
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import operator
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass
class Bench:
    """One benchmark: its script and arguments, and the RESULT keys held to a target."""

    name: str
    args: list[str]
    what: str
    targets: list[tuple[str, str, float]] = field(default_factory=list)  # (key, op, value)
    shown: list[str] = field(default_factory=list)  # further RESULT keys shown without a target


BENCHES = [
    Bench("precision", ["precision.py"], "every runtime × precision vs ORT FP32 (zoo:n, YOLOv8n)",
          [("bf16_speedup", ">=", 1.3), ("bf16_fidelity", ">=", 0.95)]),
    Bench("cold_start", ["cold_start.py"], "bundle → first result vs bare session + first run (a restart)",
          [("cold_ratio", "<=", 1.2)], ["cvdeploy_ms", "bare_ms", "first_ratio", "uncached_ratio", "hash_ms",
                                        "ort_optimized_ms", "ov_cvdeploy_ms", "ov_cvdeploy_uncached_ms",
                                        "ov_nocache_ms", "ov_cache_ms", "ov_ratio"]),
    Bench("repeatability", ["repeatability.py", "--pairs", "10"], "two consecutive bench runs, 10 pairs",
          [("spread_pct_p90", "<=", 5.0)], ["median_spread_pct_p90", "disturbed_runs"]),
    Bench("overhead", ["overhead.py"], "cvdeploy pipeline vs bare session.run, same model",
          [("overhead_ratio", "<=", 1.03)]),
    Bench("vs_ultralytics", ["vs_ultralytics.py"], "JPEG in → boxes out vs Ultralytics' predict",
          [("ratio", "<=", 0.6)], ["fidelity", "ratio_spread", "yolov8n_ratio", "yolov8n_ratio_spread"]),
    Bench("non_model", ["non_model.py"], "non-model time per 1080p JPEG vs Ultralytics'",
          [("non_model_ratio", "<=", 0.5)], ["cvdeploy_non_model_ms", "ultralytics_non_model_ms", "agreement"]),
    Bench("buffers", ["buffers.py"], "predict's reused buffers vs a new array per image, fresh processes",
          [], ["ratio", "faults_new", "faults_reused", "prep_ms_new", "prep_ms_reused"]),
    Bench("serve", ["serve.py"], "server vs the bare engine limit",
          [("limit_ratio_c8", ">=", 0.9), ("p99_over_p50", "<=", 2.0)]),
    Bench("soak", ["soak.py"], "16 clients × 5 min, 10 % hostile",
          [("failures", "==", 0), ("got_5xx", "==", 0), ("rss_ratio", "<=", 1.3)]),
    Bench("prune", ["optimize.py", "--model", "zoo:s", "--prune", "--images", "2000"],
          "pruning zoo:s with distillation recovery", [("prune_speedup", ">=", 1.3), ("prune_drop", "<=", 2.0)],
          ["prune_gmacs", "prune_steps", "prune_s"]),
    Bench("distill_gain", ["distill_gain.py"],
          "pruned zoo:s recovered with zoo:s as teacher (outputs + neck features) vs on labels alone",
          [("distill_gain", ">=", 1.0)], ["distilled_map", "labels_map", "teacher_map", "steps", "distill_s", "labels_s"]),
    Bench("scale_out", ["scale_out.py"], "Ray Serve: 2 replicas vs 1 (2 cores: little to gain)",
          [], ["ray2_over_ray1", "ray2_over_single2", "ray2_min_share"]),
    Bench("security_overhead", ["security_overhead.py"], "authenticated TLS vs anonymous plain HTTP",
          [("p50_ratio_detect", "<=", 1.10)], ["c8_ratio_on_off", "overhead_us", "audit_intact"]),
    Bench("monitor_overhead", ["monitor_overhead.py"], "monitoring at the default sample rate vs off",
          [("ratio_c1", "<=", 1.05)], ["ratio_c4", "writer_ms", "hook_us", "dropped"]),
    Bench("doctor", ["doctor.py"], "planted faults found top-1, false alarms on clean data",
          [("false_alarms", "==", 0), ("top1", "==", 18), ("time_100_images_s", "<=", 120)], ["planted"]),
]  # fmt: skip


def parse_result(text: str) -> dict[str, object]:
    """The last ``RESULT k=v ...`` line of a benchmark's output as a dict (numbers parsed)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {}
    out: dict[str, object] = {}
    for token in lines[-1][len("RESULT ") :].split():
        key, _, value = token.partition("=")
        try:
            out[key] = int(value) if re.fullmatch(r"-?\d+", value) else float(value)
        except ValueError:
            out[key] = {"True": True, "False": False}.get(value, value)
    return out


def machine() -> dict[str, object]:
    from cvdeploy import env

    cpu = env.cpu_info()
    return {"cpu": cpu["model"], "cpu_flags": cpu["flags"], "capabilities": env.capabilities_line(),
            "cores": env.available_cpus()}  # fmt: skip


def save(record: dict[str, object]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{record['name']}.result.json").write_text(json.dumps(record, indent=2))


def record_log(bench: Bench, log: Path, command: str) -> dict[str, object]:
    """Record a run made apart from this runner, from its saved output (this machine's CPU)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    result = parse_result(text)
    if not result:
        sys.exit(f"error: {log} has no RESULT line; was the run finished?")
    when = dt.datetime.fromtimestamp(log.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    record: dict[str, object] = {"name": bench.name, "command": command or f"(recorded from {log.name})",
                                 "recorded_from": str(log), "result": result, "date": when, **machine()}  # fmt: skip
    save(record)
    return record


def run(bench: Bench) -> dict[str, object]:
    script = HERE / bench.args[0]
    cmd = [sys.executable, str(script), *bench.args[1:]]
    print(f"\n=== {bench.name}: {' '.join(bench.args)}", flush=True)
    if not script.is_file():
        record: dict[str, object] = {"name": bench.name, "missing": f"{bench.args[0]} does not exist"}
    else:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=False)
        sys.stdout.write(proc.stdout[-4000:])
        record = {"name": bench.name, "command": " ".join(["python", f"benchmarks/{bench.args[0]}", *bench.args[1:]]),
                  "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                  "result": parse_result(proc.stdout)}  # fmt: skip
        if proc.returncode != 0:
            record["error"] = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
    record.update({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **machine()})
    save(record)
    return record


def table() -> str:
    rows = ["| benchmark | what | figure | target | met | machine |", "|---|---|---|---|---|---|"]
    for b in BENCHES:
        path = RESULTS / f"{b.name}.result.json"
        if not path.is_file():
            rows.append(f"| `{b.name}` | {b.what} | not run yet | — | — | — |")
            continue
        rec = json.loads(path.read_text())
        res = rec.get("result") or {}
        machine = f"{rec.get('cpu', '?')} ({rec.get('cores', '?')} CPUs), {str(rec.get('date', ''))[:10]}"
        if not res:
            why = rec.get("missing") or "; ".join(rec.get("error") or []) or "no RESULT line"
            rows.append(f"| `{b.name}` | {b.what} | failed: {why} | — | — | {machine} |")
            continue
        for key, op, value in b.targets:
            got = res.get(key)
            met = "—" if not isinstance(got, int | float) else ("yes" if OPS[op](got, value) else "**no**")
            rows.append(f"| `{b.name}` | {b.what} | {key} = {got} | {op} {value:g} | {met} | {machine} |")
        extra = ", ".join(f"{k} = {res[k]}" for k in b.shown if k in res)
        if extra and not b.targets:
            rows.append(f"| `{b.name}` | {b.what} | {extra} | (no target) | — | {machine} |")
        elif extra:
            rows.append(f"| `{b.name}` | (also measured) | {extra} | | | |")
    return "\n".join(rows)


def write_readme() -> None:
    text = README.read_text(encoding="utf-8")
    block = f"{START}\n{table()}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = (
            text.rstrip()
            + "\n\n## Performance\n\nProduced by `make bench` on the machine named in each row.\n\n"
            + block
            + "\n"
        )
    README.write_text(text, encoding="utf-8")
    print(f"README performance table rewritten from {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma list of benchmark names")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument(
        "--record", default="", metavar="NAME=LOG", help="record a run made apart from its output"
    )
    ap.add_argument("--command", default="", help="with --record: the command that made the output")
    args = ap.parse_args()
    if args.record:
        name, _, log = args.record.partition("=")
        bench = next((b for b in BENCHES if b.name == name), None)
        if bench is None or not Path(log).is_file():
            sys.exit(
                f"error: --record wants NAME=LOG with a known NAME and an existing LOG, not {args.record!r}"
            )
        record_log(bench, Path(log), args.command)
        write_readme()
        return
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        sys.exit(
            f"error: unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(b.name for b in BENCHES)}"
        )
    if not args.table_only:
        for b in BENCHES:
            if not only or b.name in only:
                run(b)
    write_readme()


if __name__ == "__main__":
    main()
