"""PyTorch as the reference runtime: an ``nn.Module`` (or TorchScript file) run in eval mode.

The reference must be exact: TF32 (CUDA matmuls and cuDNN convolutions), reduced-precision oneDNN
math and autocast are all pinned off, so an FP32 reference is IEEE FP32 on every device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.runtimes.base import Dims, Execution, Runtime, RuntimeOptions, TensorInfo


def pin_fp32(torch: Any) -> dict[str, Any]:
    """Set every global torch switch that could lower FP32 arithmetic to exact FP32; returns them.

    Only the legacy switches are set (``allow_tf32`` off, matmul precision "highest"): torch 2.9+ refuses
    any later read of them once its newer per-operator API was used (``torch.export`` reads them: "a mix
    of the legacy and new APIs"). The per-operator settings that result are read back and recorded; the
    oneDNN (CPU) ones default to IEEE FP32 and are checked, not set.
    """
    torch.set_float32_matmul_precision("highest")
    backends = torch.backends
    backends.cuda.matmul.allow_tf32 = False
    backends.cudnn.allow_tf32 = False
    settings: dict[str, Any] = {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda.matmul.allow_tf32": bool(backends.cuda.matmul.allow_tf32),
        "cudnn.allow_tf32": bool(backends.cudnn.allow_tf32),
    }
    for path in ("mkldnn.matmul", "mkldnn.conv"):
        obj: Any = backends
        for part in path.split("."):
            obj = getattr(obj, part, None)
        value = getattr(obj, "fp32_precision", None)
        if value is not None:
            settings[f"{path}.fp32_precision"] = value
            if value not in ("ieee", "none"):
                from cvdeploy.errors import PrecisionError

                raise PrecisionError(
                    f"torch.backends.{path}.fp32_precision is {value!r}: the PyTorch reference would not run exact "
                    "FP32; set it to 'ieee' (or unset it) in your program"
                )
    return settings


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
        self._threads = int(self.options.threads) if self.options.threads else None
        if self._threads:
            torch.set_num_threads(self._threads)
        self._settings = pin_fp32(torch)
        self.input_name = input_name
        dev = self.options.device
        self.device = "cuda" if dev in ("cuda", "gpu") and torch.cuda.is_available() else "cpu"
        self.module.to(self.device)
        self._check_precision()

    @classmethod
    def from_torchscript(cls, path: str | Path, options: RuntimeOptions | None = None) -> TorchRuntime:
        torch = require("torch", "TorchScript models")
        return cls(torch.jit.load(str(path), map_location="cpu"), options=options, path=path)

    @classmethod
    def open(cls, path: str | Path, options: RuntimeOptions | None = None) -> TorchRuntime:
        return cls.from_torchscript(path, options)

    @staticmethod
    def read_input_dims(path: Path) -> Dims | None:
        return None  # a TorchScript file does not state its input shape

    @staticmethod
    def precision_unsupported(precision: str, device: str = "cpu") -> str | None:
        return None

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(self.input_name, ("batch", 3, "height", "width"), "float32")]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo("output0", ("batch", None, None), "float32")]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(next(iter(feeds.values())))).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device, enabled=False):
            out = self.module(x)
        return [t.detach().float().cpu().numpy() for t in _flatten(out)]

    def execution(self) -> Execution:
        torch = self.torch
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in self.module.parameters()}) or [
            "float32"
        ]
        low = [d for d in dtypes if d in ("float16", "bfloat16")]
        precision = {"float16": "fp16", "bfloat16": "bf16"}[low[0]] if low else "fp32"
        evidence = f"parameters {', '.join(dtypes)}; autocast off; matmul precision {torch.get_float32_matmul_precision()}"
        return Execution(
            precision, evidence, dict(self._settings), self._threads or torch.get_num_threads(), None
        )

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
