"""PyTorch as the reference runtime: an ``nn.Module`` (or TorchScript file) run in eval mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.runtimes.base import Runtime, RuntimeOptions, TensorInfo


class TorchRuntime(Runtime):
    """Runs a module under ``torch.inference_mode``; outputs are flattened to a list of arrays."""

    name = "torch"

    def __init__(
        self,
        module: Any,
        input_name: str = "images",
        options: RuntimeOptions | None = None,
        path: str | Path = "<module>",
    ) -> None:
        super().__init__(path, options)
        torch = require("torch", "the PyTorch reference runtime")
        self.torch = torch
        self.module = module.eval()
        if self.options.threads:
            torch.set_num_threads(int(self.options.threads))
        self.input_name = input_name
        dev = self.options.device
        self.device = "cuda" if dev in ("cuda", "gpu") and torch.cuda.is_available() else "cpu"
        self.module.to(self.device)

    @classmethod
    def from_torchscript(cls, path: str | Path, options: RuntimeOptions | None = None) -> TorchRuntime:
        torch = require("torch", "TorchScript models")
        return cls(torch.jit.load(str(path), map_location="cpu"), options=options, path=path)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(self.input_name, ("batch", 3, "height", "width"), "float32")]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo("output0", ("batch", None, None), "float32")]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(next(iter(feeds.values())))).to(self.device)
        with torch.inference_mode():
            out = self.module(x)
        return [t.detach().float().cpu().numpy() for t in _flatten(out)]

    @property
    def device_used(self) -> str:
        return self.device


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, list | tuple):
        flat: list[Any] = []
        for o in out:
            flat.extend(_flatten(o))
        return flat
    if isinstance(out, dict):
        return _flatten(list(out.values()))
    return [out]
