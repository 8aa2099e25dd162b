"""Export a source model into a bundle: ONNX and OpenVINO artifacts, each followed by a parity check.

source (ONNX | torch module | TorchScript | Ultralytics .pt | bundle)
    └─▶ onnx-fp32 (torch.onnx + onnxslim, or the ONNX file as given)  ── parity vs source
    └─▶ openvino-fp32 (OpenVINO IR converted from the ONNX)           ── parity vs source
    └─▶ tflite-fp32, tflite-int8 (litert-torch, PyTorch sources)      ── parity vs source
    └─▶ tensorrt-fp32, tensorrt-fp16 (engines built from the ONNX, GPU) ── parity vs source
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy import env
from cvdeploy._deps import available, require
from cvdeploy.bundle import (
    Artifact,
    Bundle,
    Manifest,
    Parity,
    Provenance,
    Source,
    artifact_name,
    now_iso,
    sha256_file,
)
from cvdeploy.contract import Contract
from cvdeploy.errors import ConfigError, InputError, MissingDependency, ModelError, ParityError
from cvdeploy.images import find_images, read_image, sample_images
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.parity import Tolerance, check_parity, tolerance_for
from cvdeploy.preprocess import Preprocessor
from cvdeploy.reference import export_profile
from cvdeploy.runtimes import RuntimeOptions, execution_record, load_runtime
from cvdeploy.sources import detect_kind
from cvdeploy.sources.onnx import ContractHints, contract_from_onnx, load_onnx

log = logging.getLogger("cvdeploy")

FORMATS = ("onnx", "openvino", "tflite", "tensorrt")
Step = Callable[[str], None]


@dataclass
class ExportOptions:
    formats: Sequence[str] = ("onnx",)
    imgsz: tuple[int, int] | None = None
    dynamic_batch: bool = False
    dynamic_shape: bool = False
    opset: int = 17
    simplify: bool = True
    name: str | None = None
    overwrite: bool = False
    hints: ContractHints = field(default_factory=ContractHints)
    parity_images: Sequence[str | Path] | None = None  # files or folders; None = bundled sample photos
    parity_count: int = 8
    tolerance: Tolerance = field(default_factory=lambda: tolerance_for("fp32"))
    weights: str | Path | None = None  # python: factories: a state dict to load into the built module
    profile_images: Sequence[str | Path] | None = None  # for profile.json; None = the parity images


@dataclass
class _TorchSource:
    module: Any
    contract: Contract
    source: Source
    weights: Any = None  # state dict to keep in the bundle for later optimisation
    architecture: dict[str, Any] | None = None  # Ultralytics model YAML to keep beside the weights
    keep_file: Path | None = None  # a TorchScript archive to keep as it is


def export(
    source: str, out: str | Path, options: ExportOptions | None = None, step: Step | None = None
) -> Bundle:
    """Export ``source`` into a new bundle at ``out``; every artifact gets a parity record.

    Raises :class:`ParityError` (and leaves no bundle behind) when an artifact disagrees with its
    source beyond the tolerance.
    """
    opts = options or ExportOptions()
    say = step or (lambda msg: log.info(msg))
    bad = [f for f in opts.formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown export format(s) {', '.join(bad)}: use {', '.join(FORMATS)}")
    if "onnx" not in opts.formats:
        opts.formats = ["onnx", *opts.formats]  # every other format is converted from the ONNX
    kind = detect_kind(source)
    if kind == "onnx" and "tflite" in opts.formats:
        raise ConfigError(
            "TFLite export converts a PyTorch model (litert-torch); export from the .pt checkpoint, TorchScript "
            "or module instead of the ONNX file"
        )
    if "tflite" in opts.formats and not available("litert_torch"):  # before minutes of export and parity
        raise MissingDependency(
            "--format tflite needs the converter litert-torch, which is not installed; install it with: "
            'pip install "cvdeploy[tflite-export]" (in an environment of its own: its pinned dependencies '
            "conflict with other extras)"
        )
    if "tensorrt" in opts.formats:
        from cvdeploy.runtimes.tensorrt import gpu_missing

        if reason := gpu_missing():
            raise ConfigError(f"--format tensorrt: {reason}")
    if opts.weights and kind != "torch":
        raise ConfigError(
            "--weights loads a state dict into a python:pkg.module:factory model; this source has its own"
        )
    images = _parity_images(opts)
    if kind == "onnx":
        return _staged(Path(out), opts, lambda root: _export_onnx_source(source, root, opts, images, say))
    ts = _torch_source(source, kind, opts, say)
    return _staged(Path(out), opts, lambda root: _export_torch_source(ts, root, opts, images, say))


def _staged(out_path: Path, opts: ExportOptions, build: Callable[[Path], Bundle]) -> Bundle:
    """Build the bundle in ``<out>.partial`` and move it into place only when every artifact passed."""
    if out_path.exists() and not opts.overwrite and any(out_path.iterdir()):
        raise InputError(f"{out_path} already exists and is not empty; pass --overwrite or choose another -o")
    if (
        out_path.exists()
        and opts.overwrite
        and not (out_path / "cvdeploy.yaml").is_file()
        and any(out_path.iterdir())
    ):
        raise InputError(f"{out_path} exists and is not a bundle; refusing to overwrite it")
    staging = out_path.with_name(out_path.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        export_profile(build(staging), opts)  # the reference profile for monitor and doctor
        if out_path.exists():
            shutil.rmtree(out_path)
        staging.rename(out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(out_path)


# ---- sources ---------------------------------------------------------------------------------


def _torch_source(source: str, kind: str, opts: ExportOptions, say: Step) -> _TorchSource:
    if kind == "ultralytics":
        return _ultralytics_source(source, opts, say)
    if kind == "bundle":
        return _bundle_source(source, opts, say)
    from cvdeploy.sources.torch import load_factory, load_state_dict, load_torchscript

    if kind == "torchscript":
        if opts.weights:
            raise ConfigError(
                "--weights is for python: factories; a TorchScript file carries its own weights"
            )
        say(f"loading TorchScript {source}")
        module = load_torchscript(source)
        src = Source(kind="torchscript", file=_abs(source), sha256=_sha(source))
    else:
        say(f"building {source}" + (f" with weights from {opts.weights}" if opts.weights else ""))
        module = load_factory(source)
        if opts.weights:
            module = load_state_dict(module, opts.weights)
        src = Source(kind="torch", factory=source, file=_abs(opts.weights) if opts.weights else None,
                     sha256=_sha(str(opts.weights)) if opts.weights else None)  # fmt: skip
    hints = opts.hints
    h, w = opts.imgsz or hints.imgsz or (640, 640)
    if not (opts.imgsz or hints.imgsz):
        say("no --imgsz given for a PyTorch module; assumed 640x640")
    contract, notes = _contract_from_module(module, h, w, None, hints, source)
    for n in notes:
        say(n)
    if kind == "torchscript":
        return _TorchSource(module, contract, src, keep_file=Path(source))
    weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return _TorchSource(module, contract, src, weights)


def _ultralytics_source(source: str, opts: ExportOptions, say: Step) -> _TorchSource:
    from cvdeploy.sources.assemble import ModelFacts
    from cvdeploy.sources.ultralytics import load_checkpoint

    if opts.weights:
        raise ConfigError(
            "--weights is for python: factories; an Ultralytics checkpoint carries its own weights"
        )
    say(f"loading Ultralytics model {source}")
    um = load_checkpoint(source)
    imgsz = opts.imgsz or opts.hints.imgsz or (um.imgsz, um.imgsz)
    facts = ModelFacts("Ultralytics checkpoint", task=um.task, names=um.names, stride=um.stride,
                       imgsz=(um.imgsz, um.imgsz), end2end=um.end2end, kpt_shape=um.kpt_shape)  # fmt: skip
    contract, notes = _contract_from_module(um.module, imgsz[0], imgsz[1], facts, opts.hints, source)
    for n in notes:
        say(n)
    src = Source(kind="ultralytics", file=_abs(source), sha256=_sha(source))
    return _TorchSource(um.module, contract, src, um.state, architecture=um.architecture)


def _bundle_source(source: str, opts: ExportOptions, say: Step) -> _TorchSource:
    """Re-export a bundle's kept PyTorch model (at another size, say) with the bundle's contract."""
    from cvdeploy.optimize.source import load_source_model, no_source_reason

    b = Bundle.load(source)
    why = no_source_reason(b)
    if why:
        raise ModelError(f"{why}; or re-import its ONNX artifact instead")
    src = b.manifest.provenance.source
    say(f"rebuilding the PyTorch model kept in {b.path}")
    module = load_source_model(b)
    contract = b.contract.model_copy(deep=True)
    if opts.imgsz:
        contract.input.height, contract.input.width = opts.imgsz
    kept = Source(**{**src.model_dump(), "file": _abs(str(b.path))})
    if src.kind == "torchscript":
        return _TorchSource(module, contract, kept, keep_file=b.path / str(src.weights))
    weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    arch = None
    if src.kind == "ultralytics":
        import yaml

        arch = yaml.safe_load((b.path / str(src.architecture)).read_text(encoding="utf-8"))
        weights = {k.removeprefix("inner."): v for k, v in weights.items()}
    return _TorchSource(module, contract, kept, weights, architecture=arch)


def _contract_from_module(
    module: Any, h: int, w: int, facts: Any, hints: ContractHints, what: str
) -> tuple[Contract, list[str]]:
    """Probe the module with a zero batch and assemble its contract as for an ONNX graph (same checks)."""
    torch = require("torch")
    from cvdeploy.runtimes.torch import _flatten
    from cvdeploy.sources.assemble import GraphInput, assemble

    with torch.inference_mode():
        try:
            outs = _flatten(module.eval()(torch.zeros(1, 3, h, w)))
        except Exception as exc:
            raise ModelError(f"{what}: a (1, 3, {h}, {w}) batch does not run through the model "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             "give the size it takes with --imgsz") from None  # fmt: skip
    shapes: list[list[int | str | None]] = [["batch", *list(o.shape[1:])] for o in outs]
    names = _module_names(module)
    if names and facts is None and hints.classes is None:
        hints = ContractHints(**{**hints.__dict__, "classes": names})
    graph = GraphInput("images", "NCHW", "height", "width", "batch")
    return assemble(graph, shapes, facts, ContractHints(**{**hints.__dict__, "imgsz": (h, w)}), what)


def _module_names(module: Any) -> list[str] | None:
    for attr in ("names", "class_names", "CLASS_NAMES"):
        v = getattr(module, attr, None)
        if isinstance(v, dict):
            return [str(v[k]) for k in sorted(v)]
        if isinstance(v, list | tuple) and v and all(isinstance(x, str) for x in v):
            return list(v)
    return None


def _sha(path: str) -> str | None:
    p = Path(path)
    return sha256_file(p) if p.is_file() else None


def _abs(path: str | Path | None) -> str | None:
    """An absolute path for the record: provenance is never relative to the working directory."""
    if path is None:
        return None
    p = Path(path)
    return str(p.resolve()) if p.exists() else str(path)


# ---- exporters -------------------------------------------------------------------------------


def torch_to_onnx(
    module: Any,
    path: Path,
    contract: Contract,
    opset: int = 17,
    dynamic_batch: bool = False,
    dynamic_shape: bool = False,
    simplify: bool = True,
) -> None:
    """``torch.onnx.export`` (TorchScript-based exporter) then optional onnxslim; writes ``path``."""
    torch = require("torch", "ONNX export from PyTorch")
    import warnings

    spec = contract.input
    dummy = torch.zeros(1, 3, spec.height, spec.width)
    output_names = ["output0", "output1"] if contract.task == "segment" else ["output0"]
    in_axes: dict[int, str] = {}
    out_axes: dict[str, dict[int, str]] = {n: {} for n in output_names}
    if dynamic_batch:
        in_axes[0] = "batch"
        for axes in out_axes.values():
            axes[0] = "batch"
    if dynamic_shape:
        in_axes.update({2: "height", 3: "width"})
        if contract.output.format == "yolov8":
            out_axes["output0"][2] = "anchors"
        if contract.task == "segment":
            out_axes["output1"].update({2: "mask_height", 3: "mask_width"})
    dynamic_axes = {k: v for k, v in (("images", in_axes), *out_axes.items()) if v} or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module.eval(),
                (dummy,),
                str(path),
                input_names=["images"],
                output_names=output_names,
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:
            raise ModelError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from None
    import onnx

    model = onnx.load(str(path))
    if simplify:
        try:
            onnxslim = require("onnxslim", "ONNX simplification")
            model = onnxslim.slim(model)
        except Exception as exc:  # simplification is an optimisation; a failure must not lose the export
            log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
    write_metadata(model, contract)
    onnx.save(model, str(path))


def write_metadata(model: Any, contract: Contract) -> None:
    """Store names/stride/imgsz/task the way Ultralytics does (so other tools read it), and the whole
    contract as JSON (so the ONNX re-imports into cvdeploy exactly, preprocessing included)."""
    import json

    meta = {
        "author": "cvdeploy",
        "task": contract.task,
        "stride": str(contract.input.stride),
        "imgsz": str([contract.input.height, contract.input.width]),
        "names": str(dict(enumerate(contract.classes))),
        "batch": "1",
        "end2end": str(contract.output.format == "end2end"),
        **({"kpt_shape": str(contract.output.kpt_shape)} if contract.output.kpt_shape else {}),
        "cvdeploy.contract": json.dumps(contract.model_dump(mode="json", exclude={"input": {"name"}})),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v


def onnx_to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """Convert ONNX to OpenVINO IR with FP32 weights (``compress_to_fp16=False``: parity first)."""
    ov = require("openvino", "OpenVINO export")
    try:
        model = ov.convert_model(str(onnx_path))
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except Exception as exc:
        raise ModelError(f"OpenVINO conversion failed: {type(exc).__name__}: {exc}") from None


# ---- the two export flows ----------------------------------------------------------------------


def export_torch(
    module: Any,
    out: str | Path,
    contract: Contract,
    source: Source,
    options: ExportOptions | None = None,
    weights: Any = None,
    step: Step | None = None,
) -> Bundle:
    """Export an in-memory ``nn.Module`` with a known contract into a new bundle (used by the zoo
    packager and by optimisers that produce new PyTorch models). ``weights``: a state dict to keep."""
    opts = options or ExportOptions()
    say = step or (lambda msg: log.info(msg))
    return _staged(
        Path(out),
        opts,
        lambda root: _export_torch_source(
            _TorchSource(module, contract, source, weights), root, opts, _parity_images(opts), say
        ),
    )


def _export_torch_source(
    ts: _TorchSource, root: Path, opts: ExportOptions, images: list[np.ndarray], say: Step
) -> Bundle:
    from cvdeploy.runtimes.torch import TorchRuntime

    contract = ts.contract
    contract.input.dynamic_batch = opts.dynamic_batch
    contract.input.dynamic_shape = opts.dynamic_shape
    bundle = Bundle.create(root, _manifest(root, opts, contract, ts.source))
    _keep_source(bundle, ts, say)
    reference = TorchRuntime(ts.module)
    ref_run = lambda t: reference.run({"images": t})  # noqa: E731
    name = artifact_name("onnxruntime", "fp32")
    say(f"exporting {name} (opset {opts.opset}{', simplified' if opts.simplify else ''})")
    torch_to_onnx(
        ts.module,
        root / f"{name}.onnx",
        contract,
        opts.opset,
        opts.dynamic_batch,
        opts.dynamic_shape,
        opts.simplify,
    )
    _add_checked(
        bundle,
        Artifact(
            name=name,
            file=f"{name}.onnx",
            runtime="onnxruntime",
            precision="fp32",
            dynamic_batch=opts.dynamic_batch,
            details={"opset": opts.opset},
        ),
        ref_run,
        "source",
        images,
        opts,
        say,
    )
    if "openvino" in opts.formats:
        _add_openvino(bundle, ref_run, "source", images, opts, say)
    if "tflite" in opts.formats:
        _add_tflite(bundle, ts.module, ref_run, images, opts, say)
    if "tensorrt" in opts.formats:
        _add_tensorrt(bundle, ref_run, images, opts, say)
    return bundle


def _keep_source(bundle: Bundle, ts: _TorchSource, say: Step) -> None:
    """Keep the PyTorch model in ``source/``: a state dict (+ the Ultralytics YAML), or the TorchScript archive."""
    src = bundle.manifest.provenance.source
    folder = bundle.path / "source"
    if ts.keep_file is not None:
        folder.mkdir(exist_ok=True)
        shutil.copyfile(ts.keep_file, folder / "model.torchscript")
        src.weights = "source/model.torchscript"
    elif ts.weights is not None:
        torch = require("torch")
        folder.mkdir(exist_ok=True)
        torch.save(ts.weights, str(folder / "model.pt"))
        src.weights = "source/model.pt"
        if ts.architecture is not None:
            import yaml

            (folder / "model.yaml").write_text(
                yaml.safe_dump(_plain(ts.architecture), sort_keys=False), encoding="utf-8"
            )
            src.architecture = "source/model.yaml"
    else:
        return
    if src.kind != "ultralytics" or src.sha256 is None:
        src.sha256 = sha256_file(bundle.path / src.weights)
    bundle.save()
    say(f"kept the PyTorch model in {src.weights} (re-export, pruning, distillation and QAT start from it)")


def _plain(value: Any) -> Any:
    """YAML-safe copy of an Ultralytics model dict (tuples → lists, paths → strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _export_onnx_source(
    source: str, root: Path, opts: ExportOptions, images: list[np.ndarray], say: Step
) -> Bundle:
    say(f"reading {source}")
    model = load_onnx(source)
    hints = opts.hints
    if opts.imgsz and not hints.imgsz:
        hints.imgsz = opts.imgsz
    contract, notes = contract_from_onnx(model, hints, Path(source).name)
    for n in notes:
        say(n)
    src = Source(kind="onnx", file=_abs(source), sha256=sha256_file(source))
    from cvdeploy.runtimes.onnxruntime import graph_precision

    precision, evidence = graph_precision(Path(source))
    if precision != "fp32":
        say(f"{Path(source).name} computes in {precision} ({evidence}): the artifact is named for it")
        if "openvino" in opts.formats and precision != "int8":
            raise ConfigError(
                f"{source} is an {precision} model: OpenVINO conversion starts from FP32 or INT8 ONNX; "
                "export the FP32 model instead and add reduced precisions with 'cvdeploy optimize'"
            )
    manifest = _manifest(root, opts, contract, src)
    name = artifact_name("onnxruntime", precision)
    manifest.default_artifact = name
    bundle = Bundle.create(root, manifest)
    shutil.copyfile(source, root / f"{name}.onnx")
    reference = load_runtime("onnxruntime", source, RuntimeOptions(precision=precision))
    ref_run = lambda t: reference.run({reference.inputs[0].name: t})  # noqa: E731
    _add_checked(
        bundle,
        Artifact(
            name=name,
            file=f"{name}.onnx",
            runtime="onnxruntime",
            precision=precision,
            made_by="import",
            dynamic_batch=contract.input.dynamic_batch,
            notes=notes,
        ),
        ref_run,
        "source",
        images,
        opts,
        say,
    )
    if "openvino" in opts.formats:
        _add_openvino(bundle, ref_run, "source", images, opts, say, precision)
    if "tensorrt" in opts.formats:
        _add_tensorrt(bundle, ref_run, images, opts, say)
    return bundle


def _manifest(root: Path, opts: ExportOptions, contract: Contract, src: Source) -> Manifest:
    name = opts.name or root.name.removesuffix(".partial").removesuffix(".cvd") or "model"
    name = Path(name).stem if name.endswith(".cvd") else name
    return Manifest(
        name=name,
        contract=contract,
        provenance=Provenance(source=src, created=now_iso(), environment=env.fingerprint()),
    )


def _add_openvino(
    bundle: Bundle,
    ref_run: Callable[[np.ndarray], list[np.ndarray]],
    ref_name: str,
    images: list[np.ndarray],
    opts: ExportOptions,
    say: Step,
    precision: str = "fp32",
) -> None:
    name = artifact_name("openvino", precision)
    say(f"converting to {name}")
    onnx_art = bundle.artifact(artifact_name("onnxruntime", precision))
    xml = bundle.path / name / "model.xml"
    onnx_to_openvino(bundle.file(onnx_art), xml)
    art = Artifact(
        name=name,
        file=f"{name}/model.xml",
        runtime="openvino",
        precision=precision,
        dynamic_batch=onnx_art.dynamic_batch,
        made_by="export",
    )
    _add_checked(bundle, art, ref_run, ref_name, images, opts, say)


def _add_tflite(
    bundle: Bundle,
    module: Any,
    ref_run: Callable[[np.ndarray], list[np.ndarray]],
    images: list[np.ndarray],
    opts: ExportOptions,
    say: Step,
) -> None:
    """tflite-fp32 (litert-torch) and tflite-int8 (dynamic range), each parity-checked against the source;
    tflite-fp16 only where LiteRT would execute FP16 (see :mod:`cvdeploy.runtimes.litert`)."""
    from cvdeploy import tflite
    from cvdeploy.runtimes import engine

    spec = bundle.contract.input
    fp32 = artifact_name("litert", "fp32")
    say(f"converting to {fp32} (litert-torch)")
    tflite.torch_to_tflite(module, bundle.path / f"{fp32}.tflite", spec.height, spec.width)
    art = Artifact(name=fp32, file=f"{fp32}.tflite", runtime="litert", details={"converter": "litert-torch"})
    _add_checked(bundle, art, ref_run, "source", images, opts, say)
    reason = engine("litert").unsupported("fp16")
    if reason:
        say(f"tflite-fp16 not added: {reason}")
    int8 = artifact_name("litert", "int8")
    say(f"quantizing {int8} ({tflite.INT8_METHOD.split(':')[0]})")
    tflite.quantize_int8(bundle.path / f"{fp32}.tflite", bundle.path / f"{int8}.tflite")
    art = Artifact(name=int8, file=f"{int8}.tflite", runtime="litert", precision="int8",
                   details={"converter": "litert-torch", "quantization": tflite.INT8_METHOD})  # fmt: skip
    _add_checked(bundle, art, ref_run, "source", images, opts, say)


def _add_tensorrt(
    bundle: Bundle,
    ref_run: Callable[[np.ndarray], list[np.ndarray]],
    images: list[np.ndarray],
    opts: ExportOptions,
    say: Step,
) -> None:
    """tensorrt-fp32 and tensorrt-fp16 engines built from onnx-fp32 on this GPU, each parity-checked."""
    from cvdeploy.runtimes.tensorrt import build_engine, gpu_missing

    reason = gpu_missing()
    if reason:
        raise ConfigError(f"--format tensorrt: {reason}")
    onnx_art = bundle.artifact(artifact_name("onnxruntime", "fp32"))
    for precision in ("fp32", "fp16"):
        name = artifact_name("tensorrt", precision)
        say(f"building {name} (TensorRT engine for this GPU)")
        build_engine(bundle.file(onnx_art), bundle.path / f"{name}.engine", precision)
        art = Artifact(name=name, file=f"{name}.engine", runtime="tensorrt", precision=precision,
                       dynamic_batch=onnx_art.dynamic_batch)  # fmt: skip
        _add_checked(bundle, art, ref_run, "source", images, opts, say)


def _add_checked(
    bundle: Bundle,
    art: Artifact,
    ref_run: Callable[[np.ndarray], list[np.ndarray]],
    ref_name: str,
    images: list[np.ndarray],
    opts: ExportOptions,
    say: Step,
    files: list[str] | None = None,
) -> None:
    """Measure parity of a freshly written artifact, refuse it past tolerance, else record it.

    The artifact is loaded at the precision its name states (pinned, then read back: a mismatch is a
    :class:`~cvdeploy.errors.PrecisionError`); what it executed is recorded with its parity. An FP32
    artifact is held to ``opts.tolerance``; any other to its precision's tolerance.
    """
    runtime = load_runtime(art.runtime, bundle.path / art.file, RuntimeOptions(precision=art.precision))
    tolerance = opts.tolerance if art.precision == "fp32" else tolerance_for(art.precision)
    in_name = runtime.inputs[0].name
    tensors, geoms = batches(bundle.contract, images, runtime.inputs[0].static_batch)
    say(f"checking parity of {art.name} against the {ref_name} on {len(images)} images")
    parity, problem = check_parity(
        ref_run,
        lambda t: runtime.run({in_name: t}),
        bundle.contract,
        tensors,
        geoms,
        ref_name,
        tolerance,
    )
    ex = runtime.execution()
    if problem:
        hint = ""
        if art.precision == "fp32" and _only_max_abs(parity, tolerance):
            hint = _rounding_hint(bundle, images, parity.max_abs_diff)
        raise ParityError(
            f"{art.name} (executing {ex.precision}) disagrees with its {ref_name}: {problem}{hint}"
        )
    art.parity = parity
    art.execution = execution_record(runtime)
    bundle.add_artifact(art, files)
    agree = "n/a" if parity.box_agreement is None else f"{parity.box_agreement:.3f}"
    say(f"{art.name}: executes {ex.precision}; max abs diff {parity.max_abs_diff:.2e}, cosine {parity.cosine:.6f}, "
        f"agreement {agree}")  # fmt: skip


def _only_max_abs(parity: Parity, tol: Tolerance) -> bool:
    """Whether the largest difference is the only criterion an artifact failed (cosine and detections pass)."""
    return parity.cosine >= tol.min_cosine and (
        parity.box_agreement is None or parity.box_agreement >= tol.min_agreement
    )


def fp32_rounding(onnx_file: Path, contract: Contract, images: list[np.ndarray]) -> float | None:
    """How far FP32 rounding alone moves a model's outputs: the largest difference between ONNX Runtime
    running the FP32 ONNX model with all its graph optimizations (fused, re-laid-out and reordered
    arithmetic) and with none, on ``images``. None where the file cannot be run that way, or where the two
    agree to within a few units in the last place of the largest output (then they say nothing of it).

    Both are FP32 evaluations of one graph, so another engine that differs from the reference by about as
    much is within rounding. Measured on an untrained YOLO26n at 256 (outputs up to 447): the two differ by
    0.097, OpenVINO FP32 from ONNX Runtime by 0.057, and each engine from a float64 evaluation of the
    PyTorch model by 0.06-0.08 — past the default tolerance there, 0.001 + 1e-4 × 447 = 0.046."""
    import onnxruntime as ort

    try:
        sessions = []
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            sessions.append(ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"]))
        inp = sessions[0].get_inputs()[0]
        tensors, _ = batches(contract, images, inp.shape[0] if isinstance(inp.shape[0], int) else None)
        runs: list[list[list[np.ndarray]]] = [[s.run(None, {inp.name: t}) for t in tensors] for s in sessions]
    # onnxruntime raises its own exception types; without the measurement the error stays as it was
    except Exception as exc:
        log.debug("could not measure the FP32 rounding of %s: %s", onnx_file, exc)
        return None
    pairs = [(a, b) for ra, rb in zip(*runs, strict=True) for a, b in zip(ra, rb, strict=True)
             if a.size and a.dtype == np.float32]  # fmt: skip
    if not pairs:
        return None
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in pairs)
    scale = max(float(np.max(np.abs(a))) for a, _ in pairs)
    return diff if np.isfinite(diff) and diff >= 4 * float(np.spacing(np.float32(scale))) else None


#: A difference up to this many times the measured FP32 rounding counts as rounding: the measurement is one
#: pair of FP32 evaluations, and two engines' rounding errors of the same size can differ by twice it.
ROUNDING_MARGIN = 2.0


def _rounding_hint(bundle: Bundle, images: list[np.ndarray], max_abs: float) -> str:
    """What to tell the user of an FP32 artifact that failed on its largest difference alone: whether FP32
    rounding explains that difference, measured on the bundle's FP32 ONNX model, and what to do."""
    onnx_file = bundle.path / f"{artifact_name('onnxruntime', 'fp32')}.onnx"
    rounding = fp32_rounding(onnx_file, bundle.contract, images) if onnx_file.is_file() else None
    if rounding is None or not np.isfinite(max_abs) or max_abs <= 0:
        return ""
    said = (f"; FP32 rounding alone moves this model's outputs by up to {rounding:.3g} (ONNX Runtime with and "
            f"without graph optimizations)")  # fmt: skip
    if max_abs > ROUNDING_MARGIN * rounding:
        return f"{said}: this difference is {max_abs / rounding:.1f}× that, more than rounding explains"
    step = 10.0 ** (np.floor(np.log10(max_abs)) - 1)
    atol = float(np.ceil(max_abs / step) * step)
    return f"{said}, and cosine and detections agree: this is rounding; to accept it, export again with --atol {atol:g}"


def batches(
    contract: Contract, images: list[np.ndarray], static_batch: int | None
) -> tuple[list[np.ndarray], list[list[Geometry]]]:
    """Preprocess images into batches the artifact accepts (one at a time for a fixed batch of 1)."""
    pre = Preprocessor(contract.input)
    size = static_batch or (4 if contract.input.dynamic_batch else 1)
    tensors, geoms = [], []
    for i in range(0, len(images), size):
        chunk = images[i : i + size]
        if static_batch and len(chunk) != static_batch:
            break
        t, g = pre(chunk)
        tensors.append(t)
        geoms.append(g)
    return tensors, geoms


def _parity_images(opts: ExportOptions) -> list[np.ndarray]:
    if opts.parity_images:
        files = find_images(opts.parity_images)
        if not files:
            raise InputError(f"no images found in {', '.join(str(p) for p in opts.parity_images)}")
        return [read_image(f) for f in files[: opts.parity_count]]
    return sample_images(opts.parity_count)
