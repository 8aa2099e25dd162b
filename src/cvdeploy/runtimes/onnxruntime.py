"""ONNX Runtime: the default runtime, with execution-provider choice and a loud CPU fallback.

Numerics pinned here, whatever the build's defaults: no TF32 on CUDA, no FP16/INT8 in TensorRT for
an FP32 artifact, no BF16 fast-math GEMMs on Arm, denormals kept. The graph optimizer stays at
``ORT_ENABLE_ALL``: its fusions are exact rewrites in FP32. Threads default to the CPUs this process
may use; intra-op spinning is off when several requests run at once.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.errors import ConfigError, ModelError
from cvdeploy.runtimes.base import Dims, Execution, Runtime, RuntimeOptions, TensorInfo
from cvdeploy.runtimes.compiled_cache import CompiledCache

log = logging.getLogger("cvdeploy")

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "auto": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

#: Session settings that change numerics, pinned to exact arithmetic.
_EXACT_SESSION = {
    "mlas.enable_gemm_fastmath_arm64_bfloat16": "0",
    "session.set_denormal_as_zero": "0",
}
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul"}  # fmt: skip
KERNEL_SUFFIX = "_kernel_time"


def _shape(dims: list[object]) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, int | str) else None for d in dims)


def _provider_options(provider: str, precision: str) -> dict[str, str]:
    """Per-provider options that decide the arithmetic: TF32 and TensorRT reduced precision pinned."""
    if provider == "CUDAExecutionProvider":
        return {"use_tf32": "0"}
    if provider == "TensorrtExecutionProvider":
        return {"trt_fp16_enable": "1" if precision == "fp16" else "0", "trt_int8_enable": "0"}
    return {}


_SPINNING = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def _config(so: Any, keys: Sequence[str]) -> dict[str, str]:
    out = {}
    for key in keys:
        try:
            out[key] = so.get_session_config_entry(key)
        except Exception:  # onnxruntime raises when an entry was never set
            continue
    return out


def _copy_options(ort: Any, so: Any) -> Any:
    """A copy of session options (``SessionOptions`` has no copy; the fields set in ``__init__``)."""
    new = ort.SessionOptions()
    for attr in ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level"):
        setattr(new, attr, getattr(so, attr))
    for key, value in _config(so, (*_SPINNING, *_EXACT_SESSION)).items():
        new.add_session_config_entry(key, value)
    return new


def _cache_settings(so: Any) -> dict[str, Any]:
    """The session settings that decide the optimized graph or its numerics (part of the cache key;
    threads and spinning only schedule it)."""
    return {"level": str(so.graph_optimization_level), "config": _config(so, tuple(_EXACT_SESSION))}


def graph_precision(path: Path, model_bytes: bytes | None = None) -> tuple[str, str]:
    """The precision an ONNX graph computes in, from its operators and weights, with the evidence."""
    import onnx

    try:
        if model_bytes is not None:
            model = onnx.load_model_from_string(model_bytes)
        else:
            model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX file ({exc})") from None
    ops = [n.op_type for n in model.graph.node]
    q = sum(op in _INT8_OPS for op in ops)
    if q:
        return "int8", f"{q} quantize/dequantize or integer operators in the graph"
    half = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    casts = sum(
        n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)
        for n in model.graph.node
    )
    if half or casts:
        return "fp16", f"{half} FP16 weight tensors, {casts} casts to FP16"
    return "fp32", "no reduced-precision weights, casts or quantization in the graph"


class OnnxRuntime(Runtime):
    """An ``onnxruntime.InferenceSession`` behind the runtime interface."""

    name = "onnxruntime"
    awaits_verification = True

    def __init__(
        self, path: str | Path, options: RuntimeOptions | None = None, model_bytes: bytes | None = None
    ) -> None:
        super().__init__(path, options)
        import onnxruntime as ort

        opts = self.options
        precision = opts.precision or "fp32"
        so = ort.SessionOptions()
        self._threads = opts.resolved_threads()
        self._spinning = opts.resolved_spinning()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = 1
        for key in _SPINNING:
            so.add_session_config_entry(key, "1" if self._spinning else "0")
        for key, value in _EXACT_SESSION.items():
            so.add_session_config_entry(key, value)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._profiling = bool(opts.profile or opts.extra.get("profile"))
        self._tmp_profile: Any = None
        if self._profiling:
            import tempfile

            self._tmp_profile = tempfile.TemporaryDirectory(prefix="cvdeploy-ort-profile-")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(self._tmp_profile.name) / "ort")
        if opts.providers:
            requested = list(opts.providers)
        else:
            if opts.device not in _DEVICE_PROVIDERS:
                raise ConfigError(
                    f"unknown device {opts.device!r}: use one of {', '.join(_DEVICE_PROVIDERS)}"
                )
            requested = _DEVICE_PROVIDERS[opts.device]
        available = ort.get_available_providers()
        providers = [p for p in requested if p in available]
        missing = [p for p in requested if p not in available and p != "CPUExecutionProvider"]
        if not providers:
            providers = ["CPUExecutionProvider"]
        if missing and opts.device != "auto":
            log.warning(
                "requested execution provider(s) %s not available in this onnxruntime build "
                "(available: %s); running on %s",
                ", ".join(missing),
                ", ".join(available),
                providers[0],
            )
        self._provider_options = [_provider_options(p, precision) for p in providers]
        # the optimized graph kept between processes (see compiled_cache): only for a file the bundle is
        # verifying (``model_sha256``), on the CPU provider alone, without profiling
        if model_bytes is None and providers == ["CPUExecutionProvider"] and not self._profiling:
            settings = {"onnxruntime": ort.__version__, **_cache_settings(so)}
            self._cache = CompiledCache.open("onnxruntime", opts.extra.get("model_sha256"), settings, ".onnx")
        self.session = self._create_session(ort, so, model_bytes, providers)
        self.requested_providers = requested
        self._fell_back = bool(missing) and self.session.get_providers()[0] == "CPUExecutionProvider"
        self._inputs = [
            TensorInfo(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]
        self._outputs = [
            TensorInfo(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type))
            for o in self.session.get_outputs()
        ]
        self._output_names = [o.name for o in self._outputs]
        # read from the bytes that run, never from the manifest's record (which no hash covers)
        self._graph = graph_precision(self.path, model_bytes)
        self._check_precision()

    def _create_session(self, ort: Any, so: Any, model_bytes: bytes | None, providers: list[str]) -> Any:
        def create(source: str | bytes, options: Any) -> Any:
            return ort.InferenceSession(
                source, sess_options=options, providers=providers, provider_options=self._provider_options
            )

        cache = self._cache
        hit = cache.lookup() if cache is not None else None  # hashed while the bundle hashes the model file
        self._await_verification()  # never read a model file (nor its optimized graph) before that check
        if cache is not None and hit is not None:
            cached = _copy_options(ort, so)
            # the graph was optimized at ORT_ENABLE_ALL when it was written; optimizing it again is the time
            # this saves
            cached.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                session = create(str(hit), cached)
                cache.used = hit
                return session
            except Exception as exc:  # a graph this build cannot read back: rebuild it from the bundle
                log.warning("cannot load the cached optimized graph %s (%s); rebuilding it", hit, exc)
                cache.discard(hit)
        staged = cache.staging() if cache is not None else None
        if cache is not None and staged is not None:
            writing = _copy_options(ort, so)
            writing.optimized_model_filepath = str(staged)
            writing.log_severity_level = 3  # its "hardware specific" warning is why the key has the CPU
            try:
                session = create(str(self.path), writing)
            except Exception as exc:  # could not serialize: load it the ordinary way below
                log.debug("ONNX Runtime could not write the optimized graph of %s: %s", self.path, exc)
                cache.discard(staged)
            else:
                cache.commit(staged)
                return session
        try:
            return create(model_bytes if model_bytes is not None else str(self.path), so)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load this model: {exc}") from None

    @classmethod
    def open_memory(
        cls, path: Path, blobs: Sequence[bytes], options: RuntimeOptions | None = None
    ) -> Runtime:
        return cls(path, options, model_bytes=bytes(blobs[0]))

    @staticmethod
    def read_precision(path: Path) -> str | None:
        return graph_precision(path)[0]

    @staticmethod
    def read_input_dims(path: Path) -> Dims | None:
        try:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            init = {i.name for i in model.graph.initializer}
            inp = next(i for i in model.graph.input if i.name not in init)
        except Exception as exc:  # an unreadable file is reported when it is loaded for real
            log.debug("cannot read the input shape of %s: %s", path, exc)
            return None
        dims = inp.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)

    @staticmethod
    def precision_unsupported(precision: str, device: str = "cpu") -> str | None:
        return None  # FP32, FP16 (through casts on CPUs without FP16 kernels) and INT8 run everywhere

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self._output_names, feeds))

    @property
    def device_used(self) -> str:
        return str(self.session.get_providers()[0])

    @property
    def fell_back(self) -> bool:
        return self._fell_back

    def execution(self) -> Execution:
        precision, evidence = self._graph
        provider = self.device_used
        if precision == "fp16" and provider == "CPUExecutionProvider":
            evidence += (
                "; on the CPU provider, operators without FP16 kernels run in FP32 through inserted casts"
            )
        settings: dict[str, Any] = {
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "providers": self.session.get_providers(),
            **_EXACT_SESSION,
        }
        if self.cached_graph is not None:  # no path here: execution records travel in manifests
            settings["optimized_graph"] = (
                "from cvdeploy's cache (written at ORT_ENABLE_ALL on this machine, hash-checked)"
            )
        for p, o in zip(self.session.get_providers(), self._provider_options, strict=False):
            if o:
                settings[p] = o
        return Execution(precision, evidence, settings, self._threads, self._spinning)

    def end_profiling(self) -> str:
        """Stop profiling and return the path of the JSON trace ONNX Runtime wrote."""
        return str(self.session.end_profiling())

    def profile_runs(self) -> list[list[tuple[str, str, float, str]]]:
        if not self._profiling:
            raise ModelError("this ONNX Runtime session was not loaded with profiling on")
        trace = Path(self.end_profiling())
        events = json.loads(trace.read_text(encoding="utf-8"))
        return trace_runs(events)


def trace_runs(events: list[dict[str, Any]]) -> list[list[tuple[str, str, float, str]]]:
    """Split an ONNX Runtime trace (Chrome trace format) into node timings per inference.

    Every inference is a ``Session`` event ``model_run``; every executed node an event of category
    ``Node`` named ``<node>_kernel_time`` with ``args.op_name``/``args.provider`` and ``dur`` in µs.
    """
    if not isinstance(events, list):
        raise ModelError("not an ONNX Runtime profile trace (expected a JSON list of events)")
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e.get("ts", 0),
    )
    starts = [float(r.get("ts", 0)) for r in runs]
    out: list[list[tuple[str, str, float, str]]] = [[] for _ in runs]
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX) or not runs:
            continue
        ts = float(e.get("ts", 0))
        k = bisect.bisect_right(starts, ts) - 1
        if k < 0:
            continue
        args = e.get("args") or {}
        node = name[: -len(KERNEL_SUFFIX)].rstrip("_") or name
        out[k].append(
            (node, str(args.get("op_name", "?")), float(e.get("dur", 0.0)), str(args.get("provider", "")))
        )
    return out


def session_with_outputs(model: Any, names: Sequence[str]) -> Any:
    """An ONNX Runtime session of ``model`` (an ``onnx.ModelProto``) that also returns the tensors ``names``.

    Graph optimizations are off so every intermediate tensor still exists (layer-by-layer comparisons:
    ``doctor``'s conversion review, INT8 sensitivity). For inspection only: it pins nothing.
    """
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
