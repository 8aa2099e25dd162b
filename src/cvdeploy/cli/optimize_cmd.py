"""``cvdeploy optimize``: quantize, convert, prune or distill a bundle's model, then show what it cost."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from cvdeploy.cli.common import bundle_key_options, console, err_console, handle_errors, parse_list
from cvdeploy.cli.vocabulary import help_for

HELP = """Make a bundle's model faster or smaller and show exactly what it cost.

Each run adds artifacts to the bundle, then measures every artifact (bench
harness latency, accuracy from the evaluator) and prints the variants table:
artifact, runtime, precision, size, p50 latency and speedup vs FP32,
mAP50-95 and its drop in points (with --data labels) or fidelity vs FP32
(without),
parity. The table is also written into the manifest and to
BUNDLE/reports/optimize.html + .json.

Examples:

  cvdeploy optimize model.cvd --int8 --images photos/ --data data.yaml --max-drop 1.0

  cvdeploy optimize model.cvd --int8 --runtime openvino --images photos/

  cvdeploy optimize model.cvd --fp16

  cvdeploy optimize model.cvd --bf16 --images photos/      # CPUs with native BF16

  cvdeploy optimize zoo:n -o n.cvd --prune 0.3 --images photos/ --epochs 5

  cvdeploy optimize zoo:n -o n.cvd --distill-from zoo:s --images photos/ --epochs 10

  cvdeploy optimize zoo:n -o n.cvd --prune 0.2 --images photos/ --data data.yaml --epochs 20

  cvdeploy optimize model.cvd --auto --budget-ms 40 --max-drop 1.0 --images photos/ --data data.yaml

--images are unlabelled images: INT8 calibration and the training images of
pruning recovery, distillation and QAT. --data is a labelled dataset: its val
split measures accuracy (mAP for detectors, top-1 for classifiers), and its
train split adds the detection loss while training.

INT8 for ONNX Runtime is static QDQ with per-channel weights; the integer
types follow the CPU (U8S8 on x86, S8S8 on Arm with dot-product), the YOLO
box-decode head stays in float, and with an accuracy check (--val labels, or
fidelity on the --images) the most sensitive layers go back to
float until the drop is within --max-drop (labels) / --min-fidelity.

--bf16 adds openvino-bf16: the FP32 IR compiled with OpenVINO told to run
BF16, where the CPU has native BF16 (AVX512-BF16, AMX); its parity against
FP32 and its accuracy (--data labels, or fidelity on --images) are
recorded like INT8's. Every artifact executes the precision its name states:
it is pinned when compiled and read back (see 'cvdeploy inspect').

Pruning recovery, distillation and QAT train label-free on --images by
matching the teacher (the unpruned / FP32 model, or --distill-from); with
--data data.yaml the detection loss on its train split is added (zoo
detectors), which recovers accuracy in fewer steps. Pruning recovery of a
zoo detector also matches the unpruned model's neck features (the recorded
recipe, cvdeploy.optimize.retrain.PRUNE_RECIPE). They work on every bundle
that keeps its PyTorch model (made from a .pt, TorchScript or python:
factory).

zoo:n / zoo:s live inside the package: give -o OUT.cvd for a copy to
optimize (without -o the copy goes to ./<name>.cvd).
"""


@dataclass
class OptimizeRequest:
    """Everything ``cvdeploy optimize`` was asked to do, typed (built once from the flags)."""

    bundle: str
    output: Path | None = None
    int8: bool = False
    runtime: str = "onnxruntime"
    calib: list[str] = field(default_factory=list)
    val: Path | None = None
    max_drop: float = 1.0
    min_fidelity: float = 95.0
    method: str = "minmax"
    types: str = "auto"
    per_tensor: bool = False
    quantize_head: bool = False
    no_search: bool = False
    max_images: int = 300
    preset: str = "mixed"
    full_bias: bool = False
    eval_limit: int | None = None
    fp16: bool = False
    bf16: bool = False
    prune: float | None = None
    sparsity: float | None = None
    distill_from: str | None = None
    qat: bool = False
    data: list[str] = field(default_factory=list)
    epochs: int = 5
    labels: Path | None = None
    fresh: bool = False
    auto: bool = False
    budget_ms: float | None = None
    no_bench: bool = False
    runs: int = 30
    report: Path | None = None
    as_json: bool = False

    @property
    def trains(self) -> bool:
        return self.prune is not None or bool(self.distill_from) or self.qat or self.sparsity is not None


def _target(bundle: str, output: Path | None) -> Path:
    """The bundle to write into: a copy when -o is given or when the source is a zoo bundle."""
    import shutil

    from cvdeploy.bundle import Bundle
    from cvdeploy.errors import InputError

    src = Bundle.load(bundle)
    if output is None and not bundle.startswith("zoo:"):
        return src.path
    dst = output or Path.cwd() / f"{src.name}.cvd"
    if dst.exists():
        raise InputError(f"{dst} already exists; choose another -o or remove it")
    shutil.copytree(src.path, dst)
    from cvdeploy.reference import ensure_profile

    ensure_profile(dst)  # every bundle written can be monitored and doctored
    if output is None:
        err_console.print(
            f"[cyan]note:[/] {bundle} is part of the cvdeploy package; optimizing a copy at {dst}"
        )
    return dst


def _check(b: Any, r: OptimizeRequest) -> None:
    """Every user mistake is found here, before any work, so a refused run changes nothing."""
    from cvdeploy.errors import ConfigError, CvdeployError, ModelError

    if not (r.int8 or r.fp16 or r.bf16 or r.auto or r.trains):
        raise ConfigError(
            "nothing to do: give --int8, --fp16, --bf16, --prune, --sparsity, --distill-from, --qat or --auto"
        )
    if r.sparsity is not None and not 0.0 < r.sparsity < 1.0:
        raise ConfigError(f"--sparsity {r.sparsity}: give the share of weights to zero, between 0 and 1")
    if (r.int8 or r.auto) and not r.calib:
        raise ConfigError(
            "--int8/--auto need calibration images: pass --images FOLDER (a few hundred images)"
        )
    if r.val is not None:
        p = Path(r.val)
        if (
            p.is_dir()
            and not any(p.glob("*.yaml"))
            and not any(p.glob("*.json"))
            and not (p / "annotations").is_dir()
        ):
            raise ConfigError(f"--data is a labelled dataset (data.yaml or COCO json); {p} holds none — give "
                              "unlabelled images with --images")  # fmt: skip
    if r.bf16:
        from cvdeploy.optimize.reduced import reduced_unsupported

        why = reduced_unsupported("bf16")
        if why:
            raise ConfigError(f"--bf16: {why}; --int8 is the faster variant on this CPU")
    task = b.contract.task
    if task == "raw" and r.val is not None:
        raise ConfigError(
            f"--data scores accuracy; bundle {b.name!r} is a raw model (outputs are not decoded)"
        )
    if task != "detect":
        detector_only = [flag for flag, on in (("--prune", r.prune is not None),
                         ("--distill-from", bool(r.distill_from)), ("--qat", r.qat)) if on]  # fmt: skip
        if detector_only:
            raise ConfigError(
                f"{', '.join(detector_only)} train with a detection loss on the YOLO box output; bundle {b.name!r} "
                f"is a {task!r} model — use --int8/--fp16/--bf16 (with --data for its accuracy)"
            )
    if r.trains:
        from cvdeploy.optimize.source import can_restructure, no_source_reason

        why = no_source_reason(b) or can_restructure(b)
        if why:
            raise ModelError(why)
        if not r.data and (r.prune is not None or r.distill_from or r.qat):
            raise ConfigError("--prune/--distill-from/--qat need training images: pass --images FOLDER")
        if r.prune is not None and not 0.0 < r.prune < 0.9:
            raise ConfigError(f"--prune {r.prune}: give the share of channels to remove, between 0 and 0.9")
    if r.labels is not None and (r.prune is not None or r.distill_from or r.qat):
        if not Path(r.labels).is_file():
            raise ConfigError(f"--data {r.labels}: no such file; give a YOLO data.yaml with a train split")
        from cvdeploy.evaluate.datasets import yolo_split_images

        try:
            names, _ = yolo_split_images(r.labels, "train")
        except CvdeployError as exc:
            raise ConfigError(f"--data: {exc}") from None  # the message already names the file
        if list(names) != list(b.contract.classes):
            raise ConfigError(
                f"--data {r.labels} names the classes {', '.join(names)}; the model predicts "
                f"{', '.join(b.contract.classes)} — training labels must use the model's classes in its order"
            )
    if r.fresh and not r.distill_from:
        raise ConfigError("--fresh starts a new student for distillation: use it with --distill-from")


@bundle_key_options(needs_files="optimize")
@handle_errors
def optimize(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    output: Path = typer.Option(
        None, "--output", "-o", help=help_for("--output", "a copy of the bundle to optimize")
    ),
    int8: bool = typer.Option(False, "--int8", help="Add a static INT8 artifact."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="INT8 runtime: onnxruntime or openvino."),
    images: str = typer.Option(
        None, "--images", help=help_for("--images", "INT8 calibration and training images, comma-separated")
    ),
    data: Path = typer.Option(
        None,
        "--data",
        "-d",
        help=help_for("--data", "val split: accuracy; train split: labels while training"),
    ),
    calib: str = typer.Option(None, "--calib", hidden=True),
    val: Path = typer.Option(None, "--val", hidden=True),
    labels: Path = typer.Option(None, "--labels", hidden=True),
    max_drop: float = typer.Option(
        1.0, "--max-drop", min=0.0, help="Allowed accuracy drop in points (mAP50-95; top-1 for classifiers)."
    ),
    min_fidelity: float = typer.Option(
        95.0, "--min-fidelity", min=0.0, max=100.0, help="Without labels: fidelity mAP50 vs FP32 to keep."
    ),
    method: str = typer.Option(
        "minmax", "--calib-method", help="minmax, entropy or percentile (ONNX Runtime)."
    ),
    types: str = typer.Option(
        "auto", "--int8-types", help="auto (from the CPU), u8s8 or s8s8 (ONNX Runtime)."
    ),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor instead of per-channel weights."),
    quantize_head: bool = typer.Option(
        False, "--quantize-head", help="Quantize the box-decode head too (breaks YOLO class scores)."
    ),
    no_search: bool = typer.Option(False, "--no-search", help="No accuracy-aware search (measure only)."),
    max_images: int = typer.Option(300, "--max-images", min=1, help="Calibration images to use at most."),
    preset: str = typer.Option("mixed", "--nncf-preset", help="NNCF preset: mixed or performance."),
    full_bias: bool = typer.Option(False, "--full-bias-correction", help="NNCF full (slow) bias correction."),
    eval_limit: int = typer.Option(None, "--eval-limit", min=1, help="Images scored per INT8 candidate."),
    fp16: bool = typer.Option(False, "--fp16", help="Add an FP16 ONNX artifact (float32 I/O)."),
    bf16: bool = typer.Option(
        False,
        "--bf16",
        help="Add openvino-bf16 (CPUs with native BF16 only); accuracy from --data or --images.",
    ),
    prune: float = typer.Option(None, "--prune", help="Structured pruning: share of channels to remove."),
    sparsity: float = typer.Option(
        None, "--sparsity", help="Unstructured magnitude pruning: share of weights to zero (no CPU speedup)."
    ),
    distill_from: str = typer.Option(None, "--distill-from", help="Teacher bundle for distillation."),
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training."),
    epochs: int = typer.Option(5, "--epochs", min=1, help="Training epochs (recovery, distillation, QAT)."),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="--distill-from: train a newly initialised student instead of the bundle's weights.",
    ),
    auto: bool = typer.Option(False, "--auto", help="Try every applicable method; recommend one."),
    budget_ms: float = typer.Option(None, "--budget-ms", min=0.0, help="--auto: latency budget (p50 ms)."),
    no_bench: bool = typer.Option(False, "--no-bench", help="Skip latency measurement of the variants."),
    runs: int = typer.Option(30, "--runs", min=5, help=help_for("--runs", "per artifact for the table")),
    report: Path = typer.Option(
        None, "--report", help=help_for("--report", "optimize.html and .json (default: BUNDLE/reports)")
    ),
    as_json: bool = typer.Option(
        False, "--json", help=help_for("--json", "the variants table as JSON on stdout")
    ),
) -> None:
    from cvdeploy.bundle import Bundle
    from cvdeploy.errors import ConfigError
    from cvdeploy.optimize.int8 import RUNTIMES

    for old, new in (
        ("--calib", calib and "--images"),
        ("--val", val and "--data"),
        ("--labels", labels and "--data"),
    ):
        if new:
            raise ConfigError(f"{old} is now {new}: one name for unlabelled images (--images) and for a labelled "
                              "dataset (--data) in every command")  # fmt: skip
    from cvdeploy.runtimes.registry import normalize

    try:
        runtime = normalize(runtime)
    except ConfigError as exc:
        raise ConfigError(f"--runtime: {exc}") from None
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: INT8 quantization is for {' or '.join(RUNTIMES)}")
    trains = prune is not None or bool(distill_from) or qat or sparsity is not None
    req = OptimizeRequest(
        bundle=bundle, output=output, int8=int8, runtime=runtime, calib=parse_list(images), val=data,
        max_drop=max_drop, min_fidelity=min_fidelity, method=method, types=types, per_tensor=per_tensor,
        quantize_head=quantize_head, no_search=no_search, max_images=max_images, preset=preset,
        full_bias=full_bias, eval_limit=eval_limit, fp16=fp16, bf16=bf16, prune=prune, sparsity=sparsity,
        distill_from=distill_from, qat=qat, data=parse_list(images), epochs=epochs,
        labels=data if trains else None, fresh=fresh,
        auto=auto, budget_ms=budget_ms, no_bench=no_bench, runs=runs, report=report, as_json=as_json,
    )  # fmt: skip
    # validate against the source first: a refused run must not even create the copy
    _check(Bundle.load(bundle), req)
    if int8 or auto:
        from cvdeploy.optimize.int8 import Int8Options

        Int8Options(runtime=runtime, method=method, types=types, preset=preset, max_images=max_images).check()
    path = _target(bundle, output)
    copied = path.resolve() != Bundle.load(bundle).path.resolve()
    try:
        _work(req, path)
    except BaseException:
        if copied:  # a copy made for this run is not left half-done
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        raise


def _work(r: OptimizeRequest, path: Path) -> None:
    """Run the requested methods on the bundle at ``path``."""
    from cvdeploy.bundle import Bundle

    b = Bundle.load(path)
    say = (lambda msg: None) if r.as_json else (lambda msg: err_console.print(f"[dim]· {msg}[/]"))
    extra: dict[str, Any] = {}
    if r.auto:
        from cvdeploy.optimize.auto import auto_optimize

        res = auto_optimize(b, r.calib, val=r.val, budget_ms=r.budget_ms, max_drop=r.max_drop,
                            min_fidelity=r.min_fidelity, runs=r.runs, report_dir=r.report, step=say)  # fmt: skip
        extra = {"recommended": res.recommended, "why": res.why, "pareto": res.pareto, "skipped": res.skipped}
        _show(Bundle.load(path), res.rows, extra, r.as_json, r.report)
        return
    if r.int8:
        from cvdeploy.optimize.int8 import Int8Options, quantize_int8

        opts = Int8Options(method=r.method, per_channel=not r.per_tensor, types=r.types,
                           float_head=not r.quantize_head, max_images=r.max_images, val=r.val,
                           max_drop=r.max_drop, min_fidelity=r.min_fidelity, search=not r.no_search,
                           eval_limit=r.eval_limit, preset=r.preset,
                           fast_bias_correction=not r.full_bias)  # fmt: skip
        quantize_int8(b, r.calib, r.runtime, opts, say)
    if r.fp16:
        from cvdeploy.optimize.fp16 import to_fp16

        to_fp16(b, say)
    if r.bf16:
        from cvdeploy.optimize.reduced import to_openvino_precision

        to_openvino_precision(b, "bf16", say, val=r.val, images=r.calib or None, max_drop=r.max_drop,
                              min_fidelity=r.min_fidelity, eval_limit=r.eval_limit)  # fmt: skip
    if r.trains:
        _train(b, r, say)
    from cvdeploy.optimize.variants import variants_table

    rows, _ = variants_table(b, measure=not r.no_bench, val=r.val, runs=r.runs, report_dir=r.report, step=say)
    _show(b, rows, extra, r.as_json, r.report)


def _train(b: Any, r: OptimizeRequest, say: Any) -> None:
    """--sparsity, --qat, --prune, --distill-from (in that order); ``--data`` adds the detection loss."""
    from cvdeploy.optimize.distill import TrainConfig
    from cvdeploy.optimize.retrain import distill_bundle, prune_bundle, sparsify_bundle

    gain = 1.0 if r.labels is not None else 0.0
    config = TrainConfig(epochs=r.epochs, labels=r.labels, label_gain=gain)
    if r.sparsity is not None:
        sparsify_bundle(b, r.sparsity, say)
    if r.qat:
        from cvdeploy.optimize.int8 import Int8Options
        from cvdeploy.optimize.qat import qat_bundle

        qat_config = TrainConfig(epochs=r.epochs, lr=1e-4, labels=r.labels, label_gain=gain)
        qat_bundle(b, r.data, r.data, qat_config, Int8Options(val=r.val), say)
    if r.prune is not None:
        from cvdeploy.optimize.retrain import PRUNE_RECIPE

        # the measured recipe for what the command line does not say (crops, batch, rate, feature matching)
        prune_bundle(b, r.prune, r.data, PRUNE_RECIPE.train_config(r.epochs, r.labels), say)
    if r.distill_from:
        distill_bundle(b, r.distill_from, r.data, config, say, fresh=r.fresh)


def _show(b: Any, rows: list[Any], extra: dict[str, Any], as_json: bool, report: Path | None) -> None:
    from cvdeploy.optimize.variants import document
    from cvdeploy.reports.terminal import print_document

    if as_json:
        typer.echo(json.dumps({"bundle": str(b.path), "variants": [r.to_dict() for r in rows], **extra}))
        return
    print_document(document(b, rows, extra), console, sections=["Variants"])
    where = report or b.path / "reports"
    console.print(f"report: {where / 'optimize.html'}  ·  recorded in {b.path / 'cvdeploy.yaml'}")


def register(app: typer.Typer) -> None:
    """Add ``cvdeploy optimize`` to the CLI."""
    app.command("optimize", help=HELP)(optimize)
