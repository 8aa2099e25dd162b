"""OpenVINO: runs IR (``.xml`` + ``.bin``) or ONNX files through ``openvino.Core``.

OpenVINO's CPU plugin picks its own inference precision: **BF16 by default wherever the CPU has native
BF16** (AVX512-BF16, AMX), and a requested ``f16`` silently becomes BF16 on such CPUs. So every
artifact is compiled with ``INFERENCE_PRECISION_HINT`` set from its precision (``int8`` keeps its
non-quantized operations in FP32), and after compiling the runtime model is read back: the property
itself and the precision every node will execute in. Any difference is refused.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.errors import ModelError
from cvdeploy.runtimes.base import Dims, Execution, Runtime, RuntimeOptions, TensorInfo
from cvdeploy.runtimes.compiled_cache import CompiledCache

log = logging.getLogger("cvdeploy")

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")  # no phoning home, ever

#: INFERENCE_PRECISION_HINT per artifact precision: INT8 runs its non-quantized operations in FP32.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
_IGNORED = {"i32", "i64", "boolean", "u1", "undefined", "dynamic", "?"}


def _ov_shape(pshape: Any) -> tuple[int | str | None, ...]:
    dims: list[int | str | None] = []
    for d in pshape:
        dims.append(d.get_length() if d.is_static else None)
    return tuple(dims)


def node_precisions(compiled: Any) -> collections.Counter[str]:
    """How many nodes of the compiled (runtime) model execute in each precision (``f32``, ``bf16``, ``i8``…)."""
    counts: collections.Counter[str] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            counts[str(info["runtimePrecision"].astype(str)).lower()] += 1
    return counts


def effective_precision(counts: collections.Counter[str]) -> str:
    """The precision a compiled model computes in, from the precisions its nodes execute in.

    ``fp32`` when every float node runs in f32; ``int8`` when the only lower precision is 8-bit
    integer; otherwise the lower precisions joined (``bf16``, ``bf16+int8``) — an INT8 model whose
    float part runs in BF16 is not the INT8 model that was checked.
    """
    compute = {k for k, v in counts.items() if k not in _IGNORED and v}
    low = sorted({_NAMES.get(k, k) for k in compute} - {"fp32"})
    return "+".join(low) if low else "fp32"


def _fix_batch(ov: Any, model: Any) -> None:
    """Give every input whose first dimension is dynamic a batch of 1, the other dimensions as they are.

    OpenVINO's CPU plugin runs a static shape faster than a dynamic one: on this project's AMD EPYC the
    NNCF INT8 zoo:n took 7.82 ms per image compiled for batch 1 against 8.72 ms with a dynamic batch (and
    an upper bound, [1, 16], 8.65 ms: only a fixed size helps); its FP32 and BF16 IRs gained 5-7 %. A model
    this cannot reshape keeps its dynamic batch."""
    shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        if ps.rank.is_static and len(ps) > 0 and ps[0].is_dynamic:
            ps[0] = ov.Dimension(1)
            shapes[port] = ps
    if shapes:
        try:
            model.reshape(shapes)
        except Exception as exc:  # a graph whose shapes do not propagate: run it dynamic, as before
            log.debug("OpenVINO could not compile %s for batch 1 (%s); keeping the dynamic batch", model, exc)


class OpenVinoRuntime(Runtime):
    """A compiled OpenVINO model behind the runtime interface."""

    name = "openvino"
    awaits_verification = True
    compiles_for_batch = True

    def __init__(
        self,
        path: str | Path,
        options: RuntimeOptions | None = None,
        model_bytes: tuple[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(path, options)
        ov = require("openvino", "the OpenVINO runtime")
        opts = self.options
        self.core = ov.Core()
        device = {"cpu": "CPU", "gpu": "GPU", "cuda": "GPU", "auto": "AUTO"}.get(
            opts.device, opts.device.upper()
        )
        precision = opts.precision or "fp32"
        hint = opts.extra.get("precision_hint") or HINTS.get(precision, "f32")
        perf = opts.extra.get("hint") or ("THROUGHPUT" if opts.concurrency > 1 else "LATENCY")
        self._threads = opts.resolved_threads()
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": perf,
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": self._threads,
        }
        self._profiling = bool(opts.profile or opts.extra.get("profile"))
        if self._profiling:
            config["PERF_COUNT"] = True
        cache = opts.extra.get("cache_dir") or os.environ.get("CVDEPLOY_OPENVINO_CACHE")
        if cache:
            # opt-in: OpenVINO keeps compiled blobs there (keyed by model, device and config, so a pinned
            # precision gets its own blob). The cache is not covered by the bundle's hashes: use a folder
            # only the service account can write.
            config["CACHE_DIR"] = str(cache)
        # the compiled blob kept between processes (see compiled_cache): only for files the bundle is
        # verifying (``model_sha256``), on the CPU, without profiling or OpenVINO's own cache
        if model_bytes is None and device == "CPU" and not self._profiling and not cache:
            settings = {"openvino": ov.get_version(), "device": device, "config": config}
            if opts.batch == 1:  # a dynamic batch compiled for one image is another compiled form
                settings["batch"] = 1
            self._cache = CompiledCache.open("openvino", opts.extra.get("model_sha256"), settings, ".blob")
        self.compiled = self._compile(ov, model_bytes, device, config)
        self.device = device
        self.config = {k: str(v) for k, v in config.items()}
        self._request = self.compiled.create_infer_request()
        self._profile_rows: list[list[tuple[str, str, float, str]]] = []
        self._inputs = [
            TensorInfo(
                p.get_any_name(), _ov_shape(p.get_partial_shape()), p.get_element_type().to_dtype().name
            )
            for p in self.compiled.inputs
        ]
        self._outputs = [
            TensorInfo(
                p.get_any_name() if p.get_names() else f"output{i}",
                _ov_shape(p.get_partial_shape()),
                p.get_element_type().to_dtype().name,
            )
            for i, p in enumerate(self.compiled.outputs)
        ]
        self._execution = self._read_back()
        self._check_precision()

    def _compile(
        self, ov: Any, model_bytes: tuple[bytes, bytes] | None, device: str, config: dict[str, Any]
    ) -> Any:
        cache = self._cache
        hit = cache.lookup() if cache is not None else None  # hashed while the bundle hashes the IR
        self._await_verification()  # never read a model file (nor its compiled form) before that check
        if cache is not None and hit is not None:
            try:
                compiled = self.core.import_model(hit.read_bytes(), device, config)
                cache.used = hit
                return compiled
            except Exception as exc:  # a blob this build cannot import: compile again from the bundle
                log.warning("cannot import the cached OpenVINO blob %s (%s); recompiling", hit, exc)
                cache.discard(hit)
        try:
            if model_bytes is not None:
                # IR from memory: the .xml text and the .bin weights as a tensor (kept alive with the model)
                self._weights = np.frombuffer(model_bytes[1], dtype=np.uint8)
                model = self.core.read_model(model_bytes[0], ov.Tensor(self._weights))
            else:
                model = self.core.read_model(str(self.path))
            if self.options.batch == 1:
                _fix_batch(ov, model)
            compiled = self.core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelError(f"{self.path}: OpenVINO cannot load this model: {exc}") from None
        if cache is not None:
            try:
                cache.store(compiled.export_model().getvalue())
            except Exception as exc:  # a plugin that cannot export: run without the cache
                log.debug("OpenVINO could not export %s for the engine cache: %s", self.path, exc)
        return compiled

    @classmethod
    def open_memory(
        cls, path: Path, blobs: Sequence[bytes], options: RuntimeOptions | None = None
    ) -> Runtime:
        if len(blobs) != 2:
            raise ModelError(
                f"{path.name}: an OpenVINO IR in memory needs its .xml and .bin ({len(blobs)} given)"
            )
        return cls(path, options, model_bytes=(bytes(blobs[0]), bytes(blobs[1])))

    @staticmethod
    def read_input_dims(path: Path) -> Dims | None:
        try:
            ov = require("openvino", "the OpenVINO runtime")
            model = ov.Core().read_model(str(path))
            return tuple(d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape())
        except ModelError:
            raise
        except Exception:  # an unreadable file is reported when it is loaded for real
            return None

    @staticmethod
    def pinned_settings(precision: str) -> dict[str, Any]:
        return {"INFERENCE_PRECISION_HINT": HINTS.get(precision, "f32")}

    @staticmethod
    def precision_unsupported(precision: str, device: str = "cpu") -> str | None:
        from cvdeploy import env

        if device not in ("cpu", "CPU") or precision in ("fp32", "int8"):
            return None
        caps = env.cpu_capabilities()
        cpu = env.cpu_info()["model"]
        if precision == "bf16" and not caps["bf16"]:
            return (
                f"this CPU ({cpu}) has no native BF16 arithmetic (AVX512-BF16 or AMX): OpenVINO would emulate "
                "it slowly or run FP32 instead"
            )
        if precision == "fp16" and not caps["fp16"]:
            return (
                f"this CPU ({cpu}) has no native FP16 arithmetic (AVX512-FP16, AMX-FP16 or Arm FP16): "
                "OpenVINO would run another precision instead"
            )
        return None

    def _read_back(self) -> Execution:
        try:
            prop = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            hint = prop.to_string() if hasattr(prop, "to_string") else str(prop)
        except Exception:  # a plugin without the property (some GPUs): judge by the nodes alone
            hint = "?"
        counts = node_precisions(self.compiled)
        precision = effective_precision(counts)
        shown = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        evidence = (
            f"INFERENCE_PRECISION_HINT={hint}; runtime precision of the nodes: {shown or 'none reported'}"
        )
        settings: dict[str, Any] = dict(self.config)
        if self.options.batch == 1 and all(t.static_batch == 1 for t in self._inputs):
            settings["batch"] = "1 (compiled for one image per call)"
        if self.cached_graph is not None:  # no path here: execution records travel in manifests
            settings["compiled_blob"] = (
                "from cvdeploy's engine cache (compiled with this config on this machine, hash-checked)"
            )
        return Execution(precision, evidence, settings, self._threads, None)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer(feeds)
        if self._profiling:
            self._profile_rows.append(_counters(self._request))
        return [np.asarray(result[out]) for out in self.compiled.outputs]

    def execution(self) -> Execution:
        return self._execution

    def thread_copy(self) -> Runtime:
        """The same compiled model with its own infer request (one per thread)."""
        return _InferRequest(self)

    def new_request(self) -> Any:
        """A fresh infer request for concurrent use from another thread."""
        return self.compiled.create_infer_request()

    def profile(self) -> list[dict[str, Any]]:
        """Per-layer performance counters of the last inference (needs ``profile=True``)."""
        return [
            {"name": n, "type": t, "exec_type": e, "time_us": us} for n, t, us, e in _counters(self._request)
        ]

    def profile_runs(self) -> list[list[tuple[str, str, float, str]]]:
        if not self._profiling:
            raise ModelError("this OpenVINO model was not compiled with profiling on")
        return list(self._profile_rows)

    @property
    def device_used(self) -> str:
        try:
            devices = self.compiled.get_property("EXECUTION_DEVICES")
            return ",".join(devices) if isinstance(devices, list) else str(devices)
        except Exception:
            return self.device


def _counters(request: Any) -> list[tuple[str, str, float, str]]:
    return [
        (i.node_name, i.node_type, i.real_time.total_seconds() * 1e6, i.exec_type)
        for i in request.profiling_info
        if i.real_time.total_seconds() > 0
    ]


class _InferRequest(Runtime):
    """One infer request of a shared compiled model, so each worker thread has its own."""

    name = "openvino"

    def __init__(self, base: OpenVinoRuntime) -> None:
        super().__init__(base.path, base.options)
        self._base = base
        self._request = base.compiled.create_infer_request()

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._base.inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._base.outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer(feeds)
        return [np.asarray(result[out]) for out in self._base.compiled.outputs]

    def execution(self) -> Execution:
        return self._base.execution()

    def thread_copy(self) -> Runtime:
        return _InferRequest(self._base)

    @property
    def device_used(self) -> str:
        return self._base.device_used
