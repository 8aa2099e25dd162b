"""Optimization targets side by side in one run: speed and accuracy of each variant of ``zoo:n``.

On a copy of ``zoo:n`` (640 px) and the val split of a fresh shapes dataset
(``generate_dataset(tmp, images=300, seed=4242)``; its train split is the calibration set):

- ONNX Runtime INT8 (accuracy-aware, float head)  target ≥ 1.35× faster than ORT FP32, drop ≤ 1.0
- OpenVINO INT8 (NNCF, accuracy control)           target ≥ 1.6× faster than ORT FP32, drop ≤ 1.0
- ONNX FP16                                        reported (no CPU speedup expected)
- 30 % channel pruning + recovery (label-free distillation from the unpruned model, 320 px crops of
  the train images, time-boxed)                    target ≥ 1.25× faster, drop ≤ 2.0
- distillation s → n vs the same budget without a teacher: ≥ +1.0 point (with --distill-epochs N:
  two students start from the same fresh initialisation and train on the same labelled crops for
  the same number of steps, one with ``--teacher``'s outputs added to the loss; the "drop" of each
  is against the bundle's trained FP32 model, so the gain is the difference of the two drops)
- QAT drop ≥ 30 % smaller than PTQ drop at the same settings (QAT: fake-quant training distilled
  from FP32 for --qat-budget-s, then the same ORT QDQ quantization as PTQ; compared with
  ``onnx-int8-ptq``: PTQ with the same types and float head and no accuracy-aware search — the
  searched artifact keeps layers in float, which QAT does not)

Speedups are model p50 (runtime alone, batch 1) measured with the bench harness, all variants
interleaved. Parts that are not implemented print why and are reported as skipped.

    python benchmarks/optimize.py [--model zoo:n] [--images 300] [--runs 60] [--distill-epochs 20]

Ends with one ``RESULT key=value ...`` line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:n", help="bundle or zoo:NAME (default zoo:n)")
    ap.add_argument("--images", type=int, default=300, help="images in the fresh dataset")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--runs", type=int, default=60, help="measured passes per variant")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--skip", default="", help="comma list of: ort,openvino,fp16,prune")
    ap.add_argument(
        "--prune-epochs", type=int, default=500, help="recovery epochs (the time budget ends it first)"
    )
    ap.add_argument("--qat-budget-s", type=float, default=150.0, help="QAT training seconds (0: skip)")
    ap.add_argument("--teacher", default="zoo:s", help="teacher bundle for the distillation comparison")
    ap.add_argument(
        "--distill-epochs",
        type=int,
        default=0,
        help="epochs for each of two fresh students, trained without and with the teacher (0: skip)",
    )
    ap.add_argument("--distill-data", default=None, help="labelled data.yaml for the distillation runs "
                    "(default: the fresh dataset)")  # fmt: skip
    ap.add_argument("--prune-budget-s", type=float, default=420.0, help="recovery training time budget")
    ap.add_argument("--qat-labels", action="store_true", help="QAT with the train split's labels as well")
    ap.add_argument("--prune-ratio", type=float, default=0.3, help="share of channels to remove")
    ap.add_argument("--prune-recovery", choices=("distill", "labels"), default="distill",
                    help="recover the pruned model by distillation from the unpruned one (+ labels with "
                    "--prune-labels), or on the labels alone (the baseline of benchmarks/distill_gain.py)")  # fmt: skip
    ap.add_argument(
        "--prune-feature-gain",
        type=float,
        default=None,
        help="also match the unpruned model's neck features (TrainConfig.feature_gain; default: the recipe's "
        "with --prune, else 0)",
    )
    ap.add_argument("--prune-labels", action="store_true",
                    help="recover with the train split's labels as well as by distillation")  # fmt: skip
    ap.add_argument("--keep", default=None, help="keep the optimized bundle at this path")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="torch threads for the training parts (1: on a shared 2-core machine more threads "
                    "oversubscribe the cores and training slows down by an order of magnitude)")  # fmt: skip
    ap.add_argument("--prune", action="store_true",
                    help="only the pruning target: the recorded recipe (cvdeploy.optimize.retrain.PRUNE_RECIPE) on "
                    "--model (issue 16 measures it on zoo:s): ratio, labels, recovery budget and threads from it")  # fmt: skip
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.prune:
        from cvdeploy.optimize.retrain import PRUNE_RECIPE

        skip |= {"ort", "openvino", "fp16"}
        args.qat_budget_s = 0.0
        args.prune_ratio = PRUNE_RECIPE.ratio
        if args.prune_feature_gain is None:
            args.prune_feature_gain = PRUNE_RECIPE.feature_gain
        args.prune_labels = True
        args.prune_budget_s = PRUNE_RECIPE.budget_s if args.prune_budget_s == 420.0 else args.prune_budget_s

    from cvdeploy.bundle import Bundle
    from cvdeploy.optimize.fp16 import to_fp16
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.optimize.variants import variants_table
    from cvdeploy.zoo.dataset import generate_dataset

    say = lambda msg: print(f"· {msg}", flush=True)  # noqa: E731
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = Bundle.load(args.model)
        work = root / f"{src.name}.cvd"
        shutil.copytree(src.path, work)
        b = Bundle.load(work)
        # drop artifacts other than the FP32 exports so the table shows only this run's variants
        b.manifest.artifacts = [a for a in b.manifest.artifacts if a.name in ("onnx-fp32", "openvino-fp32")]
        b.save()
        t0 = time.perf_counter()
        data = generate_dataset(root / "data", images=args.images, seed=args.seed,
                                imgsz=b.contract.input.height, progress=False)  # fmt: skip
        calib = root / "data" / "images" / "train"
        say(f"dataset {data} ({time.perf_counter() - t0:.0f} s); calibration from {calib}")
        timings: dict[str, float] = {}
        prune_name = "onnx-fp32-pruned"
        if "ort" not in skip:
            t = time.perf_counter()
            art = quantize_int8(b, calib, "onnxruntime", Int8Options(val=data, max_drop=args.max_drop), say)
            timings["ort_int8_s"] = time.perf_counter() - t
            search = art.details.get("search", {})
            result["ort_float_layers"] = len(search.get("float_layers", []))
            result["ort_types"] = (
                art.details["quantization"]["activations"] + art.details["quantization"]["weights"]
            )
        if args.qat_budget_s > 0:
            # QAT's comparison point: plain PTQ at QAT's settings (same types, same float head, no search)
            t = time.perf_counter()
            quantize_int8(b, calib, "onnxruntime", Int8Options(val=data, search=False, tag="ptq"), say)
            timings["ort_ptq_s"] = time.perf_counter() - t
        if "openvino" not in skip:
            t = time.perf_counter()
            try:
                quantize_int8(b, calib, "openvino", Int8Options(val=data, max_drop=args.max_drop), say)
            except Exception as exc:  # report and go on: one method failing must not hide the others
                result["openvino_error"] = type(exc).__name__
                say(f"OpenVINO INT8 failed: {exc}")
            timings["ov_int8_s"] = time.perf_counter() - t
        if "fp16" not in skip:
            to_fp16(b, say)
        if "prune" not in skip:
            from cvdeploy.optimize.retrain import PRUNE_RECIPE, prune_bundle

            t = time.perf_counter()
            cfg = PRUNE_RECIPE.train_config(args.prune_epochs, data if args.prune_labels else None,
                                            threads=args.train_threads, time_budget_s=args.prune_budget_s,
                                            feature_gain=args.prune_feature_gain or 0.0)  # fmt: skip
            art = prune_bundle(b, args.prune_ratio, calib, cfg, say, distill=args.prune_recovery == "distill")
            prune_name = art.name
            timings["prune_s"] = time.perf_counter() - t
            result["prune_steps"] = art.details["recovery"]["steps"]
            result["prune_gmacs"] = (
                f"{art.details['pruning']['gmacs_after']:.2f}/{art.details['pruning']['gmacs_before']:.2f}"
            )
        if args.qat_budget_s > 0:
            from cvdeploy.optimize.distill import TrainConfig
            from cvdeploy.optimize.qat import qat_bundle

            t = time.perf_counter()
            cfg = TrainConfig(epochs=500, crop=320, batch=8, lr=1e-4, time_budget_s=args.qat_budget_s,
                              threads=args.train_threads, labels=data if args.qat_labels else None,
                              label_gain=1.0 if args.qat_labels else 0.0)  # fmt: skip
            qat_bundle(b, calib, calib, cfg, Int8Options(val=data), say)
            timings["qat_s"] = time.perf_counter() - t
        if args.distill_epochs > 0:
            from cvdeploy.optimize.distill import TrainConfig
            from cvdeploy.optimize.retrain import distill_bundle

            labels = args.distill_data or data
            # same fresh initialisation, same labelled crops, same number of steps; one adds the teacher
            for spec, tag in ((None, "nokd"), (args.teacher, "distilled")):
                t = time.perf_counter()
                cfg = TrainConfig(epochs=args.distill_epochs, crop=320, batch=8, lr=2e-3, labels=labels,
                                  label_gain=1.0, threads=args.train_threads)  # fmt: skip
                art = distill_bundle(b, spec, calib, cfg, say, tag=tag, fresh=True)
                key = "training" if spec is None else "distillation"
                result[f"{tag}_steps"] = art.details[key]["steps"]
                timings[f"{tag}_s"] = time.perf_counter() - t
        rows, doc = variants_table(b, measure=True, val=data, runs=args.runs, step=say)
        from rich.console import Console

        from cvdeploy.reports.terminal import print_document

        print_document(doc, Console(width=160), sections=["Variants"])
        by = {r.artifact: r for r in rows}
        for key, name in (("ort_int8", "onnx-int8"), ("ov_int8", "openvino-int8"), ("fp16", "onnx-fp16"),
                          ("ov_fp32", "openvino-fp32"), ("prune", prune_name),
                          ("nokd", "onnx-fp32-nokd"), ("distilled", "onnx-fp32-distilled"),
                          ("ptq", "onnx-int8-ptq"), ("qat", "onnx-int8-qat")):  # fmt: skip
            r = by.get(name)
            if r is None:
                continue
            result[f"{key}_speedup"] = f"{r.speedup:.3f}" if r.speedup is not None else "nan"
            result[f"{key}_drop"] = f"{r.drop:.2f}" if r.drop is not None else "nan"
        fp32 = by["onnx-fp32"]
        result["fp32_map"] = f"{fp32.map50_95:.2f}" if fp32.map50_95 is not None else "nan"
        result["fp32_model_ms"] = f"{fp32.model_p50_ms:.1f}" if fp32.model_p50_ms else "nan"
        targets = {
            "ort_int8": ("ort_int8_speedup", 1.35, "ort_int8_drop", args.max_drop),
            "ov_int8": ("ov_int8_speedup", 1.6, "ov_int8_drop", args.max_drop),
            "prune": ("prune_speedup", 1.25, "prune_drop", 2.0),
        }
        for key, (sk, smin, dk, dmax) in targets.items():
            if sk in result and result[sk] != "nan" and result.get(dk, "nan") != "nan":
                result[f"{key}_ok"] = int(float(result[sk]) >= smin and float(result[dk]) <= dmax)
        if result.get("distilled_drop", "nan") != "nan" and result.get("nokd_drop", "nan") != "nan":
            gain = float(result["nokd_drop"]) - float(result["distilled_drop"])
            result["distill_gain"] = f"{gain:.2f}"
            result["distill_ok"] = int(gain >= 1.0)
        else:
            result["distill"] = "skipped"
        if "qat_drop" in result and result.get("ptq_drop", "nan") != "nan" and result["qat_drop"] != "nan":
            ptq, qat = float(result["ptq_drop"]), float(result["qat_drop"])
            # "30 % smaller drop" needs a PTQ drop to shrink; with none, QAT must simply not lose more
            result["qat_ok"] = int(qat <= 0.7 * ptq) if ptq > 0.05 else int(qat <= max(ptq, 0.0) + 0.05)
        else:
            result["qat"] = "skipped"
        result.update({k: f"{v:.0f}" for k, v in timings.items()})
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
            say(f"kept the optimized bundle at {args.keep}")
    if "distill" in result:
        print("note: the distillation comparison runs only with --distill-epochs N", flush=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
