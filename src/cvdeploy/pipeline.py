"""The one pipeline, ``preprocess → runtime → decode``, built from a bundle's contract.

``predict``, ``val``, ``bench``, ``serve``, ``doctor`` and ``monitor`` all run images through this
class, so what is measured is what is deployed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.contract import Contract
from cvdeploy.decode import Decoder
from cvdeploy.errors import ConfigError, InputError
from cvdeploy.images import read_bytes
from cvdeploy.ops.letterbox import Geometry
from cvdeploy.preprocess import Preprocessor
from cvdeploy.results import Result
from cvdeploy.runtimes import Runtime, RuntimeOptions

STAGES = ("read", "preprocess", "inference", "decode")


class Pipeline:
    """Images in, results out, through exactly the contract's preprocessing and decoding."""

    def __init__(self, contract: Contract, runtime: Runtime, artifact: Artifact | None = None) -> None:
        self.contract = contract
        self.runtime = runtime
        self.artifact = artifact
        self.preprocessor = Preprocessor(contract.input)
        self.decoder = Decoder(contract, [o.name for o in runtime.outputs])
        self.input_name = runtime.inputs[0].name if runtime.inputs else contract.input.name
        self.static_batch = runtime.inputs[0].static_batch if runtime.inputs else None

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle | str | Path,
        artifact: str | None = None,
        options: RuntimeOptions | None = None,
        imgsz: tuple[int, int] | None = None,
    ) -> Pipeline:
        """Build the pipeline for one artifact of a bundle (default: the bundle's default artifact).

        ``imgsz`` (height, width) overrides the contract's input size; the artifact must accept it.
        """
        b = Bundle.open(bundle)  # the artifact's files are verified when it is loaded below
        art = b.artifact(artifact)
        # a private copy: callers may tune thresholds without touching the bundle's manifest
        contract = b.contract.model_copy(deep=True)
        if imgsz is not None and tuple(imgsz) != (contract.input.height, contract.input.width):
            h, w = imgsz
            stride = contract.input.stride
            if h % stride or w % stride:
                raise ConfigError(f"image size {h}x{w} must be a multiple of the model stride {stride}")
            contract.input.height, contract.input.width = int(h), int(w)
        runtime = b.load_runtime(art, options)
        pipe = cls(contract, runtime, art)
        pipe._check_input_size()
        return pipe

    def _check_input_size(self) -> None:
        if not self.runtime.inputs:
            return
        shape = self.runtime.inputs[0].shape
        spec = self.contract.input
        if len(shape) == 4:
            hw = shape[2:4] if spec.layout == "NCHW" else shape[1:3]
            for got, want, what in ((hw[0], spec.height, "height"), (hw[1], spec.width, "width")):
                if isinstance(got, int) and got > 0 and got != want:
                    raise ConfigError(
                        f"this artifact has a fixed input {what} of {got}, not {want}; "
                        "re-export with a dynamic shape or use its own size"
                    )

    # ---- the three stages ------------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Geometry]]:
        """BGR images → ``(b, 3, H, W)`` tensor (per the contract) and per-image geometry."""
        return self.preprocessor(images)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the runtime on a batch, splitting it when the artifact has a fixed batch size."""
        sb = self.static_batch
        if sb is None or tensor.shape[0] == sb:
            return self.runtime.run({self.input_name: tensor})
        if sb != 1 and tensor.shape[0] % sb:
            raise ConfigError(
                f"this artifact has a fixed batch of {sb}; batch {tensor.shape[0]} is impossible"
            )
        parts = [
            self.runtime.run({self.input_name: tensor[i : i + sb]}) for i in range(0, tensor.shape[0], sb)
        ]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def decode(self, outputs: Sequence[np.ndarray], geometries: Sequence[Geometry]) -> list[Result]:
        """Raw outputs → one result per image, boxes in original-image pixels."""
        return self.decoder(outputs, geometries)

    # ---- end to end --------------------------------------------------------------------------
    def load(
        self, items: Sequence[np.ndarray | str | Path | bytes], clock: Any = time.perf_counter
    ) -> tuple[np.ndarray, list[Geometry], Any]:
        """Read, decode and preprocess a batch as ``predict`` does: → (tensor, geometries, time spent
        reading and decoding, in ``clock``'s units; the rest of the call is preprocessing). Items are
        arrays, paths or encoded bytes.

        The tensor and the decoded pixels live in this thread's reused buffers
        (:class:`~cvdeploy.preprocess.Preprocessor`): valid until the thread's next ``load``. Each image is
        decoded and written into its row of the tensor before the next one is decoded."""
        pre = self.preprocessor
        if not pre.direct:
            t0 = clock()
            arrays, originals = zip(*(self._decode(im, reuse=False) for im in items), strict=True)
            read = clock() - t0
            tensor, rows = pre(arrays, originals)
            return tensor, rows, read
        tensor = pre.reused_tensor(len(items))
        geoms: list[Geometry] = []
        read = 0
        for i, im in enumerate(items):
            t0 = clock()
            img, orig = self._decode(im, reuse=True)
            read += clock() - t0
            geoms.append(pre.into(img, tensor[i], orig))
        return tensor, geoms, read

    def _decode(
        self, item: np.ndarray | str | Path | bytes, reuse: bool
    ) -> tuple[np.ndarray, tuple[int, int] | None]:
        if isinstance(item, str | Path):
            return self.preprocessor.decode(read_bytes(item), str(item), reuse=reuse)
        if isinstance(item, bytes | bytearray | memoryview):
            return self.preprocessor.decode(bytes(item), reuse=reuse)
        return item, None

    def predict(
        self,
        images: Sequence[np.ndarray | str | Path],
        batch_size: int | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Result]:
        """Run images (arrays or paths) through the whole pipeline.

        ``timings``, when given, accumulates seconds per stage (``read``, ``preprocess``,
        ``inference``, ``decode``).
        """
        if len(images) == 0:
            raise InputError("no images given")
        bs = batch_size or (self.static_batch or len(images))
        out: list[Result] = []
        clock = time.perf_counter
        for start in range(0, len(images), bs):
            t0 = clock()
            tensor, geoms, read = self.load(images[start : start + bs], clock)
            t2 = clock()
            raw = self.infer(tensor)
            t3 = clock()
            out.extend(self.decode(raw, geoms))
            t4 = clock()
            if timings is not None:
                for stage, dt in zip(STAGES, (read, t2 - t0 - read, t3 - t2, t4 - t3), strict=True):
                    timings[stage] = timings.get(stage, 0.0) + dt
        return out

    __call__ = predict

    def describe(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.name if self.artifact else None,
            **self.runtime.describe(),
            "input": {
                "name": self.input_name,
                "shape": list(self.runtime.inputs[0].shape) if self.runtime.inputs else None,
            },
        }
