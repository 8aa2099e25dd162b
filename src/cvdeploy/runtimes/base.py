"""The one small interface every inference engine sits behind.

A runtime loads one artifact, **pins the precision the artifact's name states** (never trusting an
engine default: OpenVINO's CPU plugin runs BF16 by default wherever the CPU has it), reads back what
it will really execute (:meth:`Runtime.execution`) and refuses a mismatch with
:class:`~cvdeploy.errors.PrecisionError`. Everything else an engine knows — its name, artifact
prefix, files, Triton platform, profiler — is declared once in :mod:`cvdeploy.runtimes.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cvdeploy.errors import PrecisionError

if TYPE_CHECKING:
    from cvdeploy.runtimes.compiled_cache import CompiledCache

#: Every precision an artifact name may state.
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "mixed")

Dims = tuple[int | None, ...]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``None`` or a string for dynamic dimensions) and numpy dtype name of a tensor."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str

    @property
    def static_batch(self) -> int | None:
        b = self.shape[0] if self.shape else None
        return b if isinstance(b, int) and b > 0 else None


@dataclass
class RuntimeOptions:
    """Settings shared by runtimes; each runtime uses what applies to it.

    ``threads=None`` means the CPUs this process may use (affinity and cgroup quota), not the host's
    core count. ``spinning=None`` means: spin-wait between ops when one request runs at a time, not
    when ``concurrency > 1`` (spinning threads steal the cores the other requests need).
    ``precision`` is the precision the artifact states; the runtime pins it and checks it.
    ``batch=1`` says every call will run one image at a time (``predict --batch 1``, a server that does not
    batch): a runtime whose engine compiles shapes (:attr:`Runtime.compiles_for_batch`) then compiles a
    dynamic-batch model for batch 1 (its ``inputs`` then show batch 1), and the pipeline runs a larger batch
    one image after another (:meth:`~cvdeploy.pipeline.Pipeline.infer`).
    Other values change nothing yet (a fixed batch of N would refuse a last, smaller chunk).
    """

    threads: int | None = None
    device: str = "cpu"  # cpu | cuda | gpu | auto
    providers: list[str] | None = None  # onnxruntime execution providers, in preference order
    precision: str | None = None  # None: the runtime's FP32 default, still pinned
    concurrency: int = 1  # requests in flight at once (serve, concurrent bench)
    spinning: bool | None = None
    profile: bool = False  # collect per-operator timings (see Runtime.profile_runs)
    batch: int | None = None  # 1: every call is one image (see above); None: any batch
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_threads(self) -> int:
        from cvdeploy.env import available_cpus

        return int(self.threads) if self.threads else available_cpus()

    def resolved_spinning(self) -> bool:
        return self.spinning if self.spinning is not None else self.concurrency <= 1

    def replace(self, **changes: Any) -> RuntimeOptions:
        """A copy with some fields changed."""
        import dataclasses

        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Execution:
    """What an engine really executes for one loaded artifact, read back after compiling.

    ``precision``: the arithmetic the model's compute runs in (``fp32``, ``bf16``, ``fp16``, ``int8``);
    ``evidence``: how that was established (the engine's property, node counts per precision);
    ``settings``: every numerics-relevant setting that was pinned; ``threads``/``spinning`` as used.
    """

    precision: str
    evidence: str
    settings: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    spinning: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runtime(ABC):
    """Loads one artifact and runs batches through it.

    ``run`` takes ``{input name: array}`` and returns the outputs in the model's order. Subclasses
    call :meth:`_check_precision` at the end of their constructor, so a loaded runtime always runs
    at the precision it was asked for.
    """

    name: str = "base"
    #: True where the runtime calls ``options.extra["verified"]()`` (when given) before it reads the model
    #: file, so a bundle may hash that file while the runtime does other work first (ONNX Runtime checks
    #: its cached optimized graph meanwhile); every other runtime gets a file already verified
    awaits_verification: bool = False
    _cache: CompiledCache | None = None  # the engine-cache entry of a runtime that uses one
    #: True where ``options.batch=1`` compiles a dynamic-batch model for batch 1 (OpenVINO: its CPU plugin
    #: runs static shapes ~10 % faster; ONNX Runtime measured no gain from fixing the dimension, so it
    #: ignores the option)
    compiles_for_batch: bool = False

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or RuntimeOptions()

    def _await_verification(self) -> None:
        """Wait for the bundle's hash check of the model's files (see :attr:`awaits_verification`)."""
        verified = self.options.extra.get("verified")
        if verified is not None:
            verified()

    @property
    def cached_graph(self) -> Path | None:
        """The verified engine-cache entry this runtime was loaded from (None: built from the model file)."""
        return self._cache.used if self._cache is not None else None

    @classmethod
    def open(cls, path: str | Path, options: RuntimeOptions | None = None) -> Runtime:
        """Load the artifact file at ``path`` (what the registry calls)."""
        return cls(path, options)

    @classmethod
    def open_memory(
        cls, path: Path, blobs: Sequence[bytes], options: RuntimeOptions | None = None
    ) -> Runtime:
        """Load an artifact held in memory (decrypted or verified bytes: model file first, then its
        sidecars); ``path`` only names it. Same precision pinning and read-back as :meth:`open`."""
        from cvdeploy.errors import ModelError

        raise ModelError(f"{path.name}: the {cls.name} runtime cannot load a model from memory")

    @staticmethod
    def read_input_dims(path: Path) -> Dims | None:
        """The first input's dimensions read cheaply from the file, without compiling (None: unknown)."""
        return None

    @staticmethod
    def read_precision(path: Path) -> str | None:
        """The precision a model file computes in, read from the file itself (None: the file does not say)."""
        return None

    @staticmethod
    def pinned_settings(precision: str) -> dict[str, Any]:
        """The engine's own settings that pin ``precision``, for a runtime built without cvdeploy (the edge
        package's ``predict.py`` passes them to the engine); empty where the file alone decides."""
        return {}

    @staticmethod
    def precision_unsupported(precision: str, device: str = "cpu") -> str | None:
        """Why this engine cannot execute ``precision`` on ``device`` of this machine, or None."""
        return None

    _inputs: list[TensorInfo]
    _outputs: list[TensorInfo]

    @property
    def inputs(self) -> list[TensorInfo]:
        """The model's inputs (engines fill ``_inputs`` when they load, or override this)."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        """The model's outputs (engines fill ``_outputs`` when they load, or override this)."""
        return self._outputs

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    @abstractmethod
    def execution(self) -> Execution:
        """Read back the precision, threads and numerics settings the engine really uses."""

    @property
    def device_used(self) -> str:
        """What actually executes the model (e.g. ``CPUExecutionProvider``, ``CPU``)."""
        return "cpu"

    @property
    def fell_back(self) -> bool:
        """Whether a requested accelerator silently became the CPU."""
        return False

    def thread_copy(self) -> Runtime:
        """A runtime for another thread over the same loaded weights (default: this one, thread-safe)."""
        return self

    def profile_runs(self) -> list[list[tuple[str, str, float, str]]]:
        """Per-operator timings since loading with ``profile=True``: one list per run of
        ``(node name, op type, microseconds, kernel/provider)``. Engines without a profiler raise."""
        from cvdeploy.errors import ModelError

        raise ModelError(f"no operator profiler for runtime {self.name!r}")

    def describe(self) -> dict[str, Any]:
        ex = self.execution()
        return {
            "runtime": self.name,
            "path": str(self.path),
            "device": self.device_used,
            "precision": ex.precision,
            "threads": ex.threads,
            "spinning": ex.spinning,
        }

    def _check_precision(self) -> Execution:
        """Refuse to run when the engine executes another precision than the artifact states."""
        ex = self.execution()
        wanted = self.options.precision or "fp32"
        if wanted != "mixed" and ex.precision != wanted:
            raise PrecisionError(
                f"{self.path.name}: {self.name} would execute {ex.precision}, not the {wanted} the artifact "
                f"states ({ex.evidence}); to run {ex.precision} on purpose, add it as its own artifact "
                f"(e.g. 'cvdeploy optimize BUNDLE --{ex.precision}')"
            )
        return ex
