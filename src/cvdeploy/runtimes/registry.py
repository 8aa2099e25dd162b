"""One declaration per inference engine; every other module reads engine facts from here.

An :class:`Engine` says what the rest of cvdeploy needs to know about an engine without importing
it: its name, aliases and artifact prefix, the optional extra that installs it, its files, which
precisions it can execute on purpose, its Triton platform/backend names, whether it has an operator
profiler and whether it needs writable input buffers. The engine's class (``impl``) does the work:
loading, pinning the precision, reading back what runs, per-thread copies, profiling.

Adding a runtime: write ``runtimes/<engine>.py`` (a :class:`~cvdeploy.runtimes.base.Runtime`), add
one :class:`Engine` to ``ENGINES`` below, and list its module in ``_deps._EXTRAS``; the contract
test (``tests/runtimes/test_contract.py``) then runs it through the same checks as every other.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvdeploy.errors import ConfigError

if TYPE_CHECKING:
    from cvdeploy.runtimes.base import Dims, Runtime, RuntimeOptions


@dataclass(frozen=True)
class Engine:
    """Everything cvdeploy knows about one engine, declared once."""

    name: str  # canonical name, stored in manifests
    prefix: str  # artifact names start with it: onnx-fp32, openvino-int8
    aliases: tuple[str, ...]  # other names users type
    module: str  # the Python module of the engine itself
    extra: str  # pip extra that installs it
    impl: str  # "module:Class" of its Runtime
    precisions: tuple[str, ...]  # precisions it can be asked to execute
    triton_platform: str
    triton_backend: str
    suffix: str  # model file suffix
    sidecars: tuple[str, ...] = ()  # files next to the model file with the same stem (".bin")
    writable_inputs: bool = False  # the engine writes into / needs writable host buffers
    profiler: str | None = None  # what its operator profile comes from
    loads_from_memory: bool = False  # can run a model held in memory (decrypted bundles)
    # any intermediate tensor can be read back (doctor's layer-by-layer reference)
    layer_outputs: bool = False
    deployable: bool = True  # False for a reference engine that checks exports but is not itself deployed
    # a compact runtime for devices, which the edge package prefers (no PyTorch, small wheel)
    edge: bool = False
    dists: tuple[str, ...] = ()  # pip distributions that install it, the one to pin first

    def runtime_class(self) -> type[Runtime]:
        module, _, cls = self.impl.partition(":")
        found: type[Runtime] = getattr(importlib.import_module(module), cls)
        return found

    def load(self, path: str | Path, options: RuntimeOptions | None = None) -> Runtime:
        """Load the artifact at ``path`` (precision pinned and checked from ``options.precision``)."""
        return self.runtime_class().open(path, options)

    def load_memory(
        self, path: str | Path, blobs: Sequence[bytes], options: RuntimeOptions | None = None
    ) -> Runtime:
        """Load an artifact from bytes in memory (``blobs`` in :meth:`files` order); ``path`` names it."""
        return self.runtime_class().open_memory(Path(path), blobs, options)

    def files(self, model_file: str) -> list[str]:
        """Every file of an artifact whose model file is ``model_file`` (bundle-relative)."""
        stem = model_file[: -len(self.suffix)] if model_file.endswith(self.suffix) else model_file
        return [model_file, *(stem + s for s in self.sidecars)]

    def input_dims(self, path: str | Path) -> Dims | None:
        """The first input's dimensions read cheaply from the file (None where unknown)."""
        return self.runtime_class().read_input_dims(Path(path))

    def pinned_settings(self, precision: str) -> dict[str, Any]:
        """The engine settings that pin ``precision`` (see ``Runtime.pinned_settings``)."""
        return self.runtime_class().pinned_settings(precision)

    def file_precision(self, path: str | Path) -> str | None:
        """The precision a model file computes in, read from the file (None where the engine cannot tell)."""
        return self.runtime_class().read_precision(Path(path))

    def unsupported(self, precision: str, device: str = "cpu") -> str | None:
        """Why this engine cannot execute ``precision`` on ``device`` here, or None when it can."""
        if precision not in self.precisions:
            return f"{self.name} does not execute {precision} (it executes {', '.join(self.precisions)})"
        return self.runtime_class().precision_unsupported(precision, device)

    def available(self) -> bool:
        from cvdeploy._deps import available

        return available(self.module)


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            name="onnxruntime",
            dists=("onnxruntime", "onnxruntime-gpu"),
            prefix="onnx",
            aliases=("onnx", "ort"),
            module="onnxruntime",
            extra="",  # a core dependency
            impl="cvdeploy.runtimes.onnxruntime:OnnxRuntime",
            precisions=("fp32", "fp16", "int8"),
            triton_platform="onnxruntime_onnx",
            triton_backend="onnxruntime",
            suffix=".onnx",
            profiler="ONNX Runtime profiler",
            loads_from_memory=True,
            layer_outputs=True,
        ),
        Engine(
            name="openvino",
            dists=("openvino",),
            prefix="openvino",
            aliases=("ov",),
            module="openvino",
            extra="openvino",
            impl="cvdeploy.runtimes.openvino:OpenVinoRuntime",
            precisions=("fp32", "bf16", "fp16", "int8"),
            triton_platform="openvino",
            triton_backend="openvino",
            suffix=".xml",
            sidecars=(".bin",),
            writable_inputs=True,
            profiler="OpenVINO performance counters",
            loads_from_memory=True,
            edge=True,
        ),
        Engine(
            name="torch",
            dists=("torch",),
            prefix="torch",
            aliases=("pytorch",),
            module="torch",
            extra="torch",
            impl="cvdeploy.runtimes.torch:TorchRuntime",
            precisions=("fp32",),
            triton_platform="pytorch_libtorch",
            triton_backend="pytorch",
            suffix=".pt",
            deployable=False,
        ),
        Engine(
            name="litert",
            dists=("ai-edge-litert",),
            prefix="tflite",
            aliases=("tflite", "tensorflow-lite", "ai-edge-litert"),
            module="ai_edge_litert",
            extra="tflite",
            impl="cvdeploy.runtimes.litert:LiteRtRuntime",
            precisions=("fp32", "fp16", "int8"),
            triton_platform="tensorflow_lite",
            triton_backend="armnn_tflite",  # Triton has no first-party TFLite backend; Arm's is this one
            suffix=".tflite",
            edge=True,
        ),
        Engine(
            name="tensorrt",
            dists=("tensorrt",),
            prefix="tensorrt",
            aliases=("trt",),
            module="tensorrt",
            extra="tensorrt",
            impl="cvdeploy.runtimes.tensorrt:TensorRtRuntime",
            precisions=("fp32", "fp16"),
            triton_platform="tensorrt_plan",
            triton_backend="tensorrt",
            suffix=".engine",
        ),
    )
}

#: Canonical engine names, in preference order.
RUNTIMES = tuple(ENGINES)
#: Prefixes reserved for engines that are planned (artifact names with them are valid in manifests).
RESERVED_PREFIXES = ("tflite", "tensorrt")


def engine(name: str) -> Engine:
    """The engine called ``name`` (canonical name, alias or artifact prefix, any case)."""
    key = str(name).strip().lower()
    for e in ENGINES.values():
        if key == e.name or key == e.prefix or key in e.aliases:
            return e
    known = ", ".join(
        f"{e.name} ({'/'.join(dict.fromkeys(a for a in (e.prefix, *e.aliases) if a != e.name))})"
        if {e.prefix, *e.aliases} - {e.name}
        else e.name
        for e in ENGINES.values()
    )
    raise ConfigError(f"unknown runtime {name!r}: use one of {known}")


def normalize(name: str) -> str:
    """The canonical name for ``name`` (``ort`` → ``onnxruntime``, ``ov`` → ``openvino``)."""
    return engine(name).name


def artifact_prefixes() -> tuple[str, ...]:
    """Every prefix an artifact name may start with."""
    return tuple(dict.fromkeys([e.prefix for e in ENGINES.values()] + [*ENGINES] + list(RESERVED_PREFIXES)))
