"""The deployment under diagnosis and the references it is compared with.

- :class:`Deployment`: the contract's pipeline around the model the deployment runs — an artifact
  of the bundle, or ``--model FILE`` (checked to take and give the same tensors as the bundle's).
- :class:`Reference`: the bundle's source model (PyTorch, rebuilt from the kept weights) when it
  can be rebuilt here, else the FP32 ONNX artifact that was parity-checked against it at export.
- :func:`resizable_model`: a copy of the deployed model that accepts other input sizes (the model
  itself when its input is dynamic; an ONNX re-exported from the PyTorch source otherwise), for
  simulating and timing other input sizes.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Artifact, Bundle, sha256_file
from cvdeploy.errors import BundleError, ConfigError, CvdeployError, ModelError, PrecisionError
from cvdeploy.pipeline import Pipeline
from cvdeploy.runtimes import Runtime, RuntimeOptions, registry

log = logging.getLogger("cvdeploy")

RunFn = Callable[[np.ndarray], list[np.ndarray]]


def file_key(path: Path) -> str:
    """A file's identity for caches: resolved path, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _engine_for(path: Path) -> registry.Engine:
    for e in registry.ENGINES.values():
        if path.name.lower().endswith(e.suffix) and e.deployable:
            return e
    known = ", ".join(e.suffix for e in registry.ENGINES.values() if e.deployable)
    raise ConfigError(f"--model {path}: cannot tell its runtime from the file name (known: {known})")


def load_model_file(path: Path, options: RuntimeOptions) -> Runtime:
    """Load ``--model`` at the precision it computes in (read from the graph, or the first the engine accepts)."""
    if not path.is_file():
        raise ConfigError(f"--model: no such file: {path}")
    eng = _engine_for(path)
    precision = eng.file_precision(path)
    if precision is not None:
        return eng.load(path, options.replace(precision=precision))
    last: CvdeployError | None = None
    for precision in eng.precisions:
        try:
            return eng.load(path, options.replace(precision=precision))
        except PrecisionError as exc:
            last = exc
    raise last or ModelError(f"--model {path}: cannot be loaded")


def _dims(shape: tuple[Any, ...]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def check_same_io(model: Runtime, reference: Runtime, name: str) -> None:
    """Refuse a model that takes or gives other tensors than the bundle's artifact (dynamic dims pass)."""
    pairs = [("input", model.inputs[:1], reference.inputs[:1]), ("output", model.outputs, reference.outputs)]
    for what, mine, theirs in pairs:
        if len(mine) != len(theirs):
            raise ConfigError(
                f"--model {name} has {len(mine)} {what}(s) but the bundle's model has {len(theirs)}; doctor "
                "compares the same model in another form — pass the model this bundle was exported from"
            )
        for a, b in zip(mine, theirs, strict=True):
            da, db = _dims(a.shape), _dims(b.shape)
            bad = len(da) != len(db) or any(x is not None and y is not None and x != y for x, y in zip(da, db, strict=False))  # fmt: skip
            if bad:
                raise ConfigError(
                    f"--model {name}: {what} {a.name!r} has shape {list(a.shape)} where the bundle's model has "
                    f"{list(b.shape)}; doctor needs the same {what} shape (re-export at the contract's size)"
                )


@dataclass
class Deployment:
    """The contract's pipeline around the model the deployment runs."""

    bundle: Bundle
    artifact: Artifact  # the bundle artifact (the one --model stands in for, when given)
    pipeline: Pipeline
    model_path: Path
    label: str  # artifact name or --model file name
    from_file: bool = False  # --model
    options: RuntimeOptions = field(default_factory=RuntimeOptions)

    @property
    def runtime(self) -> Runtime:
        return self.pipeline.runtime

    @property
    def onnx_path(self) -> Path | None:
        return self.model_path if self.model_path.suffix.lower() == ".onnx" else None

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.pipeline.infer(tensor)


def open_deployment(
    bundle: Bundle, artifact: str | None = None, model: str | Path | None = None,
    options: RuntimeOptions | None = None,
) -> Deployment:  # fmt: skip
    """The deployed pipeline: the bundle's ``artifact`` (default: its default), or ``model`` in its place."""
    opts = options or RuntimeOptions()
    art = bundle.artifact(artifact)
    if model is None:
        pipe = Pipeline(bundle.contract.model_copy(deep=True), bundle.load_runtime(art, opts), art)
        pipe._check_input_size()
        return Deployment(bundle, art, pipe, bundle.file(art), art.name, options=opts)
    path = Path(model)
    runtime = load_model_file(path, opts)
    check_same_io(runtime, bundle.load_runtime(art, RuntimeOptions(threads=1)), path.name)
    pipe = Pipeline(bundle.contract.model_copy(deep=True), runtime, art)
    pipe._check_input_size()
    return Deployment(bundle, art, pipe, path, path.name, from_file=True, options=opts)


def reference_artifact(bundle: Bundle) -> Artifact | None:
    """The bundle's FP32 artifact whose every layer can be read back (the FP32 ONNX, parity-checked against
    the source at export), if it has one."""
    arts = [
        a
        for a in bundle.manifest.artifacts
        if registry.engine(a.runtime).layer_outputs and a.precision == "fp32"
    ]
    arts.sort(key=lambda a: (a.name != "onnx-fp32", a.made_by not in ("export", "import"), a.name))
    return arts[0] if arts else None


@dataclass
class Reference:
    """What the deployed model should compute: a runner and what it is."""

    label: str  # "PyTorch source", "onnx-fp32 (parity-checked against the source at export)"
    run: RunFn
    onnx_path: Path | None  # the FP32 ONNX the layers are compared with
    is_source: bool
    key: str = ""  # identifies what computes (cache key): the source's weights or the ONNX file


#: Rebuilt PyTorch sources and their dynamic-size exports, per (factory, weights sha256): loading torch
#: and exporting take seconds, and several diagnoses in one process (tests, benchmarks) share them.
_SOURCES: dict[tuple[str, str], Any] = {}
_DYNAMIC: dict[tuple[str, str], Any] = {}


def _source_key(bundle: Bundle) -> tuple[str, str] | None:
    src = bundle.manifest.provenance.source
    if not (src.factory and src.weights):
        return None
    return src.factory, src.sha256 or str((bundle.path / src.weights).resolve())


def source_module(bundle: Bundle) -> Any | None:
    """The bundle's PyTorch model rebuilt from its kept weights, or None when it cannot be here."""
    key = _source_key(bundle)
    if key is None:
        return None
    if key in _SOURCES:
        return _SOURCES[key]
    from cvdeploy._deps import available

    if not available("torch"):
        return None
    from cvdeploy.optimize.source import load_source_model

    try:
        module = load_source_model(bundle)
    except CvdeployError as exc:
        log.info("cannot rebuild the PyTorch source: %s", exc)
        return None
    _SOURCES[key] = module
    return module


def open_reference(bundle: Bundle, module: Any | None) -> Reference | None:
    """The source when it can be rebuilt, else the FP32 ONNX artifact; None when neither exists."""
    art = reference_artifact(bundle)
    onnx_path = bundle.file(art) if art is not None else None
    if module is not None:
        from cvdeploy.runtimes.torch import TorchRuntime

        rt = TorchRuntime(module, bundle.contract.input.name)
        return Reference(
            "PyTorch source", lambda t: rt.run({rt.input_name: t}), onnx_path, True, str(_source_key(bundle))
        )
    if art is None:
        return None
    onnx_rt = bundle.load_runtime(art)
    name = onnx_rt.inputs[0].name
    return Reference(f"{art.name} (checked against the source at export)", lambda t: onnx_rt.run({name: t}), onnx_path, False,
                     file_key(bundle.file(art)))  # fmt: skip


def artifact_tampered(deployment: Deployment) -> str | None:
    """Which file of the deployed artifact no longer matches its recorded sha256, if any."""
    if deployment.from_file:
        return None
    try:
        deployment.bundle.verify(deployment.artifact.name)
    except BundleError:
        for rel, digest in deployment.artifact.sha256.items():
            f = deployment.bundle.path / rel
            if not f.is_file() or sha256_file(f) != digest:
                return rel
    return None


class ResizableModel:
    """Runs the deployed model at any input size (stride multiple); ``why`` says what it runs."""

    def __init__(self, runtime: Runtime, why: str, tmp: Any = None) -> None:
        self.runtime = runtime
        self.why = why
        self._tmp = tmp  # keeps a re-exported file alive
        self.input_name = runtime.inputs[0].name

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.runtime.run({self.input_name: tensor})


def resizable_model(deployment: Deployment, module: Any | None, options: RuntimeOptions | None = None) -> ResizableModel | None:  # fmt: skip
    """The deployed model at any input size, or None when it cannot be had here (says why in the log)."""
    rt = deployment.runtime
    dims = rt.inputs[0].shape if rt.inputs else ()
    if len(dims) == 4 and not any(isinstance(d, int) and d > 0 for d in dims[2:]):
        return ResizableModel(rt, f"{deployment.label} (dynamic input size)")
    same_as_source = not deployment.from_file and deployment.artifact.precision == "fp32"
    key = _source_key(deployment.bundle)
    if module is None or not same_as_source or key is None:
        return None
    if key in _DYNAMIC:
        return ResizableModel(*_DYNAMIC[key])
    from cvdeploy.export import torch_to_onnx
    from cvdeploy.runtimes import load_runtime

    tmp = tempfile.TemporaryDirectory(prefix="cvdeploy-doctor-")
    path = Path(tmp.name) / "dynamic.onnx"
    contract = deployment.bundle.contract.model_copy(deep=True)
    try:
        torch_to_onnx(module, path, contract, dynamic_batch=True, dynamic_shape=True, simplify=False)
        runtime = load_runtime("onnxruntime", path, options or RuntimeOptions())
    except CvdeployError as exc:
        log.info("cannot re-export a dynamic-size model: %s", exc)
        tmp.cleanup()
        return None
    _DYNAMIC[key] = (runtime, "the PyTorch source re-exported with a dynamic input size", tmp)
    return ResizableModel(*_DYNAMIC[key])
