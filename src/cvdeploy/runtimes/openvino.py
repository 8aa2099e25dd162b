"""OpenVINO: runs IR (``.xml`` + ``.bin``) or ONNX files through ``openvino.Core``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.errors import ModelError
from cvdeploy.runtimes.base import Runtime, RuntimeOptions, TensorInfo

os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")  # no phoning home, ever


def _ov_shape(pshape: Any) -> tuple[int | str | None, ...]:
    dims: list[int | str | None] = []
    for d in pshape:
        dims.append(d.get_length() if d.is_static else None)
    return tuple(dims)


class OpenVinoRuntime(Runtime):
    """A compiled OpenVINO model behind the runtime interface."""

    name = "openvino"

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        super().__init__(path, options)
        ov = require("openvino", "the OpenVINO runtime")
        opts = self.options
        self.core = ov.Core()
        device = {"cpu": "CPU", "gpu": "GPU", "cuda": "GPU", "auto": "AUTO"}.get(
            opts.device, opts.device.upper()
        )
        config: dict[str, Any] = {"PERFORMANCE_HINT": opts.extra.get("hint", "LATENCY")}
        if opts.threads:
            config["INFERENCE_NUM_THREADS"] = int(opts.threads)
        if opts.extra.get("profile"):
            config["PERF_COUNT"] = True
        try:
            model = self.core.read_model(str(self.path))
            self.compiled = self.core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelError(f"{self.path}: OpenVINO cannot load this model: {exc}") from None
        self.device = device
        self._request = self.compiled.create_infer_request()
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

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer(feeds)
        return [np.asarray(result[out]) for out in self.compiled.outputs]

    def new_request(self) -> Any:
        """A fresh infer request for concurrent use from another thread."""
        return self.compiled.create_infer_request()

    def profile(self) -> list[dict[str, Any]]:
        """Per-layer performance counters of the last inference (needs ``extra={'profile': True}``)."""
        rows = []
        for info in self._request.profiling_info:
            rows.append(
                {
                    "name": info.node_name,
                    "type": info.node_type,
                    "exec_type": info.exec_type,
                    "time_us": info.real_time.total_seconds() * 1e6,
                }
            )
        return rows

    @property
    def device_used(self) -> str:
        try:
            devices = self.compiled.get_property("EXECUTION_DEVICES")
            return ",".join(devices) if isinstance(devices, list) else str(devices)
        except Exception:
            return self.device
