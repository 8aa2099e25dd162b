"""INT8 for a bundle: calibration → quantization (ONNX Runtime or OpenVINO) → parity → new artifact.

``quantize_int8`` is the library entry point (``cvdeploy optimize --int8`` and ``make demo`` use it).
Everything is built in a temporary folder; the bundle only changes when the new model passed its
checks, so a failure at any step leaves it exactly as it was.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import BundleError, ConfigError
from cvdeploy.optimize.artifacts import Finished, finish
from cvdeploy.optimize.calibration import DEFAULT_LIMIT, CalibrationSet, TensorReader, load_calibration
from cvdeploy.optimize.head import HeadSplit, ensure_node_names, find_head_decode
from cvdeploy.optimize.quantize_ort import OrtQuantConfig, choose_types, pre_process, quantize_qdq
from cvdeploy.optimize.scoring import Scorer, make_scorer, record_accuracy, single_source

log = logging.getLogger("cvdeploy")

RUNTIMES = ("onnxruntime", "openvino")  # the engines with an INT8 quantizer here
Step = Callable[[str], None]


@dataclass
class Int8Options:
    """What to quantize and how; the defaults are right for most detectors on CPUs."""

    runtime: str = "onnxruntime"
    method: str = "minmax"  # minmax | entropy | percentile (ONNX Runtime)
    per_channel: bool = True
    types: str = "auto"  # auto | u8s8 | s8s8 (ONNX Runtime)
    float_head: bool = True  # keep the box-decode head in float
    max_images: int = DEFAULT_LIMIT
    val: str | Path | None = None  # labelled data.yaml: accuracy measured in mAP50-95
    fidelity_images: str | Path | None = None  # unlabelled images for the no-label accuracy check
    max_drop: float = 1.0  # mAP50-95 points (with labels)
    min_fidelity: float = 95.0  # fidelity mAP50 vs FP32 in points (without labels)
    search: bool = True  # accuracy-aware search when an accuracy check is possible
    eval_limit: int | None = None  # images scored per candidate
    preset: str = "mixed"  # NNCF
    fast_bias_correction: bool = True  # NNCF
    accuracy_control: bool = True  # NNCF quantize_with_accuracy_control when labels are given
    tag: str | None = None  # artifact name suffix
    parity_count: int = 8
    extra_float_nodes: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Refuse impossible settings before any work is done."""
        from cvdeploy.optimize.quantize_openvino import PRESETS
        from cvdeploy.optimize.quantize_ort import METHODS, TYPE_CHOICES

        for value, allowed, what in ((self.runtime, RUNTIMES, "INT8 runtime"), (self.method, METHODS,
                                     "calibration method"), (self.types, TYPE_CHOICES, "INT8 type choice"),
                                     (self.preset, PRESETS, "NNCF preset")):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
        if self.max_images < 1:
            raise ConfigError(f"max_images must be at least 1, got {self.max_images}")


def quantize_int8(
    bundle: Bundle | str | Path,
    calib_images: str | Path | Sequence[str | Path] | None,
    runtime: str = "onnxruntime",
    options: Int8Options | None = None,
    step: Step | None = None,
    source: Path | None = None,
    details: dict[str, Any] | None = None,
) -> Artifact:
    """Add an INT8 artifact (``onnx-int8`` or ``openvino-int8``) to ``bundle`` and return it.

    Calibration images go through the bundle's own preprocessing. With ``options.val`` (labels)
    the accuracy drop is measured in mAP50-95 and, for ONNX Runtime, layers go back to float until
    it is within ``max_drop``; without labels fidelity against FP32 on the calibration images is
    used instead (``min_fidelity``). ``source``: another FP32 ONNX file of the same model to quantize
    (QAT's trained weights) instead of the bundle's ``onnx-fp32``; ``details`` are recorded with it.
    """
    opts = options or Int8Options()
    opts.runtime = runtime
    say = step or (lambda msg: log.info(msg))
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    opts.check()
    if "onnx-fp32" not in b.artifact_names:
        raise BundleError(f"bundle {b.name!r} has no onnx-fp32 artifact to quantize; re-export it")
    if opts.val is not None and b.contract.task == "raw":
        raise ConfigError(
            f"--data scores accuracy; bundle {b.name!r} is a raw model (outputs are not decoded)"
        )
    calib = load_calibration(calib_images, b.contract, limit=opts.max_images, profile=_profile(b))
    say(f"calibration: {len(calib)} images through the bundle's preprocessing")
    with tempfile.TemporaryDirectory(prefix="cvdeploy-int8-") as tmp:
        work = Path(tmp)
        fp32 = source or b.file("onnx-fp32")
        quantize = {"onnxruntime": _ort, "openvino": _openvino}[runtime]  # RUNTIMES, checked above
        return quantize(b, calib, opts, work, say, calib_images, fp32, dict(details or {}))


def _scorer(b: Bundle, opts: Int8Options, calib_images: Any, details: dict[str, Any]) -> Scorer | None:
    """The accuracy check for candidates (labels, else fidelity on the calibration folder), or None."""
    return make_scorer(
        b, opts.val, opts.fidelity_images or single_source(calib_images), opts.eval_limit, details
    )


def _head(model_path: Path, enabled: bool) -> HeadSplit:
    import onnx

    if not enabled:
        return HeadSplit()
    model = onnx.load(str(model_path))
    ensure_node_names(model)
    return find_head_decode(model)


def _ort(
    b: Bundle, calib: CalibrationSet, opts: Int8Options, work: Path, say: Step, calib_images: Any, fp32: Path,
    details: dict[str, Any],
) -> Artifact:  # fmt: skip
    from cvdeploy.optimize.quantize_ort import ensure_opset

    src, per_channel, notes = ensure_opset(fp32, work / "opset.onnx", opts.per_channel, fp32.name)
    for n in notes:
        say(n)
    pre = work / "pre.onnx"
    notes += pre_process(src, pre)
    head = _head(pre, opts.float_head)
    if opts.float_head:
        say(f"float head: {head.summary()}")
    types = choose_types(opts.types)
    say(f"INT8 types {types.tag.upper()}: {types.reason}")
    config = OrtQuantConfig(
        method=opts.method,
        per_channel=per_channel,
        types=types,
        exclude_nodes=head.nodes + list(opts.extra_float_nodes),
    )
    reader = TensorReader(calib.tensors, _input_name(pre))
    out = work / "int8.onnx"
    details.update({"quantization": config.describe(), "calibration": calib.describe()})
    scorer = _scorer(b, opts, calib_images, details)
    details["float_head"] = {"nodes": len(head.nodes), "boundary": head.boundary, "ops": head.op_types}
    metrics: dict[str, Any] = {}
    if notes:
        details["notes"] = notes
    if scorer is not None:
        say(f"scoring FP32 ({scorer.mode})")
        baseline = scorer.baseline()
        budget = opts.max_drop if opts.val is not None else 100.0 - opts.min_fidelity
        if opts.search:
            from cvdeploy.optimize.search import accuracy_aware_quantize

            say(f"accuracy-aware INT8: keep the {scorer.mode} drop within {budget:g} points")
            res = accuracy_aware_quantize(
                pre, out, config, reader, scorer, baseline, budget, work, calib.tensors[:4]
            )
            details["search"] = res.describe()
            config.exclude_nodes = res.exclude_nodes
            details["quantization"]["float_nodes"] = len(res.exclude_nodes)
            score, drop, within = res.score, res.drop, res.within
            say(f"INT8 {scorer.mode} {score:.2f} vs FP32 {baseline:.2f} (drop {drop:.2f}) after {len(res.rounds)} "
                f"round(s), {len(res.float_layers)} layer(s) given back to float")  # fmt: skip
        else:
            quantize_qdq(pre, out, config, reader)
            score = scorer(out)
            drop, within = baseline - score, baseline - score <= budget
        record_accuracy(metrics, scorer, baseline, score, drop, within, budget)
        if not within:
            log.warning(
                "INT8 %s drop %.2f exceeds the budget of %g points even with layers in float; try next: "
                "--calib-method entropy or percentile, more representative --images, --runtime openvino "
                "(NNCF), or keep the FP32/FP16 artifact",
                scorer.mode, drop, budget,
            )  # fmt: skip
    else:
        quantize_qdq(pre, out, config, reader)
    return _add_int8(b, "onnxruntime", {"{name}.onnx": out}, calib, opts, metrics, details, scorer, say)


def _openvino(
    b: Bundle, calib: CalibrationSet, opts: Int8Options, work: Path, say: Step, calib_images: Any, fp32: Path,
    details: dict[str, Any],
) -> Artifact:  # fmt: skip
    from cvdeploy.optimize.quantize_openvino import (
        NncfConfig,
        load_ov_model,
        map_validation,
        ov_names_for,
        quantize_nncf,
    )

    onnx_path = fp32
    own = fp32 == b.file("onnx-fp32") and "openvino-fp32" in b.artifact_names
    ov_model = load_ov_model(onnx_path, b.file("openvino-fp32") if own else None)
    ignored: list[str] = []
    details["calibration"] = calib.describe()
    if opts.float_head:
        import onnx

        model = onnx.load(str(onnx_path))
        head = find_head_decode(model)
        tensors = [o for n in model.graph.node if n.name in set(head.nodes) for o in n.output]
        ignored = ov_names_for(ov_model, head.nodes, tensors)
        details["float_head"] = {"nodes": len(head.nodes), "openvino_ops": len(ignored), "ops": head.op_types}
        say(f"float head: {head.summary()}")
    config = NncfConfig(
        preset=opts.preset,
        subset_size=opts.max_images,
        fast_bias_correction=opts.fast_bias_correction,
        ignored_names=ignored,
    )
    validation = None
    if opts.val is not None and opts.accuracy_control and b.contract.task == "detect":
        config.max_drop = opts.max_drop / 100.0
        validation = map_validation(b.contract, opts.val, limit=opts.eval_limit)
        say(f"NNCF with accuracy control (max drop {opts.max_drop:g} mAP50-95 points)")
    details["quantization"] = config.describe()
    out_dir = work / "ov"
    quantize_nncf(ov_model, calib.tensors, config, out_dir / "model.xml", validation)
    metrics: dict[str, Any] = {}
    scorer = _scorer(b, opts, calib_images, details)
    if scorer is not None:
        say(f"scoring INT8 and FP32 ({scorer.mode})")
        baseline = scorer.baseline()
        score = scorer(out_dir / "model.xml", "openvino", "int8")
        say(f"INT8 {scorer.mode} {score:.2f} vs FP32 {baseline:.2f} (drop {baseline - score:.2f})")
        budget = opts.max_drop if opts.val is not None else 100.0 - opts.min_fidelity
        record_accuracy(
            metrics, scorer, baseline, score, baseline - score, baseline - score <= budget, budget
        )
    files = {"{name}/model.xml": out_dir / "model.xml", "{name}/model.bin": out_dir / "model.bin"}
    return _add_int8(b, "openvino", files, calib, opts, metrics, details, scorer, say)


def _add_int8(
    b: Bundle,
    runtime: str,
    files: dict[str, Path],
    calib: CalibrationSet,
    opts: Int8Options,
    metrics: dict[str, Any],
    details: dict[str, Any],
    scorer: Scorer | None,
    say: Step,
) -> Artifact:
    """The shared finishing step (parity, execution read-back, record); FP32's score kept beside it."""
    _record_reference(b, scorer)
    done = Finished(runtime, "int8", files, tag=opts.tag, images=_parity_images(calib, opts), metrics=metrics,
                    details=details, notes=list(calib.warnings))  # fmt: skip
    return finish(b, done, say)


def _record_reference(b: Bundle, scorer: Scorer | None) -> None:
    """Keep FP32's mAP on the same data in the manifest (saved with the new artifact), unless scored with a limit."""
    res = scorer.reference_result if scorer is not None else None
    if res is None or scorer is None or scorer.limit is not None:
        return
    art = b.artifact(scorer.reference)
    keys = ("top1", "top5") if scorer.classifier else ("mAP50-95", "mAP50")
    art.metrics.update({"dataset": res["dataset"], "split": res["split"], "images": res["images"],
                        **{k: round(float(res[k]), 5) for k in keys}})  # fmt: skip


def _profile(b: Bundle) -> dict[str, Any] | None:
    """The bundle's reference profile (input statistics of known-good images), if it has a readable one."""
    import json

    rel = b.manifest.reference_profile
    try:
        return json.loads((b.path / rel).read_text(encoding="utf-8")) if rel else None
    except (OSError, ValueError):
        return None


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _parity_images(calib: CalibrationSet, opts: Int8Options) -> list[Any]:
    from cvdeploy.images import read_image

    return [read_image(f) for f in calib.files[: opts.parity_count]]
