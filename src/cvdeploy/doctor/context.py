"""What every check reads: the deployment, the images, the contract pass, the user's evidence.

Expensive things several checks share (the PyTorch source, a model that runs other input sizes,
the reference) are built once, on first use, and kept by the :class:`Workspace` across runs on
the same deployment, so a test suite or a benchmark can diagnose many observations cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Bundle
from cvdeploy.doctor.deployment import (
    Deployment,
    Reference,
    ResizableModel,
    file_key,
    open_reference,
    resizable_model,
    source_module,
)
from cvdeploy.doctor.inputs import ImageSet, Labels
from cvdeploy.doctor.passes import ContractPass
from cvdeploy.doctor.progress import Progress, Silent
from cvdeploy.images import read_image
from cvdeploy.results import Detections

_UNSET: Any = object()
#: Simulated variant results and reference outputs, kept for the life of the process: a test suite or a
#: benchmark diagnoses many deployments of the same models on the same images. Keys name files by path,
#: size and modification time, so a changed file is never answered from the cache.
_VARIANTS: dict[tuple[str, str, str], Any] = {}
_REFERENCE: dict[tuple[str, str, tuple[int, ...]], list[np.ndarray]] = {}
_CACHE_LIMIT = 4096


def _bounded(cache: dict[Any, Any]) -> dict[Any, Any]:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    return cache


class Workspace:
    """Lazily built, shared per bundle: the PyTorch source module; per deployment: the rest."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._module: Any = _UNSET
        self._reference: Any = _UNSET
        self._onnx_reference: Any = _UNSET
        self._resizable: dict[str, ResizableModel | None] = {}
        self._passes: dict[str, ContractPass] = {}

    def module(self) -> Any | None:
        if self._module is _UNSET:
            self._module = source_module(self.bundle)
        return self._module

    def reference(self) -> Reference | None:
        if self._reference is _UNSET:
            self._reference = open_reference(self.bundle, self.module())
        ref: Reference | None = self._reference
        return ref

    def onnx_reference(self) -> Reference | None:
        """The bundle's FP32 ONNX artifact (parity-checked against the source at export): the fast reference."""
        if self._onnx_reference is _UNSET:
            self._onnx_reference = open_reference(self.bundle, None)
        ref: Reference | None = self._onnx_reference
        return ref

    def reference_outputs(
        self, image: Path, tensor: np.ndarray, reference: Reference | None = None
    ) -> list[np.ndarray]:
        """The outputs of ``reference`` (default: :meth:`reference`) on the contract tensor of ``image`` (kept)."""
        ref = reference or self.reference()
        assert ref is not None
        key = (ref.key, file_key(image), tuple(tensor.shape))
        if key not in _REFERENCE:
            _bounded(_REFERENCE)[key] = ref.run(tensor)
        return _REFERENCE[key]

    def simulated(self, model: Path, variant: str, image: Path) -> Any | None:
        """A variant's result on ``image`` through ``model``, if simulated before."""
        return _VARIANTS.get((file_key(model), variant, file_key(image)))

    def keep_simulated(self, model: Path, variant: str, image: Path, result: Any) -> None:
        _bounded(_VARIANTS)[(file_key(model), variant, file_key(image))] = result

    def resizable(self, deployment: Deployment) -> ResizableModel | None:
        key = str(deployment.model_path)
        if key not in self._resizable:
            self._resizable[key] = resizable_model(deployment, self.module())
        return self._resizable[key]

    def cached_pass(self, key: str) -> ContractPass | None:
        return self._passes.get(key)

    def keep_pass(self, key: str, value: ContractPass) -> None:
        self._passes = {key: value}  # one at a time: a pass holds captures of every stage


@dataclass
class Context:
    """Everything one diagnosis knows."""

    workspace: Workspace
    deployment: Deployment
    images: ImageSet
    passed: ContractPass
    observed: dict[str, Detections] | None = None
    tensors: dict[str, np.ndarray] | None = None
    labels: Labels | None = None
    profile: dict[str, Any] | None = None
    profile_note: str = ""
    progress: Progress = field(default_factory=Silent)
    variant_images: int = 24
    sample: int = 8

    @property
    def bundle(self) -> Bundle:
        return self.workspace.bundle

    def image(self, stem: str) -> np.ndarray:
        """The image called ``stem`` (from a capture when the pass kept it, else read again)."""
        for c in self.passed.captures:
            if c.stem == stem:
                return c.image
        return read_image(self.passed.records[stem].path)
