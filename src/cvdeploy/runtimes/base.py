"""The one small interface every inference engine sits behind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


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
    """Settings shared by runtimes; each runtime uses what applies to it."""

    threads: int | None = None  # intra-op threads; None = the engine's default
    device: str = "cpu"  # cpu | cuda | gpu | auto
    providers: list[str] | None = None  # onnxruntime execution providers, in preference order
    extra: dict[str, Any] = field(default_factory=dict)


class Runtime(ABC):
    """Loads one artifact and runs batches through it.

    ``run`` takes ``{input name: array}`` and returns the outputs in the model's order.
    """

    name: str = "base"

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or RuntimeOptions()

    @property
    @abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    @property
    def device_used(self) -> str:
        """What actually executes the model (e.g. ``CPUExecutionProvider``, ``CPU``)."""
        return "cpu"

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.name, "path": str(self.path), "device": self.device_used}
