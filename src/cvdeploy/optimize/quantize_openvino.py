"""INT8 for OpenVINO with NNCF: ``nncf.quantize`` and, with labels, ``quantize_with_accuracy_control``.

The same float head as for ONNX Runtime is kept out of quantization (an NNCF ignored scope built
from the ONNX head-decode nodes, matched to OpenVINO operations by name or output tensor name).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.contract import Contract
from cvdeploy.errors import ConfigError, ModelError

log = logging.getLogger("cvdeploy")

PRESETS = ("mixed", "performance")


@dataclass
class NncfConfig:
    """Settings of one NNCF post-training quantization."""

    preset: str = "mixed"  # mixed: symmetric weights, asymmetric activations (best accuracy)
    subset_size: int = 300
    fast_bias_correction: bool = True
    ignored_names: Sequence[str] = ()
    max_drop: float | None = None  # with labels: accuracy control, absolute drop in mAP50-95 (0-1)

    def describe(self) -> dict[str, Any]:
        return {
            "tool": "nncf",
            "preset": self.preset,
            "subset_size": self.subset_size,
            "bias_correction": "fast" if self.fast_bias_correction else "full",
            "float_ops": len(self.ignored_names),
            **({"accuracy_control_max_drop": self.max_drop} if self.max_drop is not None else {}),
        }


def ov_names_for(ov_model: Any, onnx_nodes: Iterable[str], onnx_tensors: Iterable[str]) -> list[str]:
    """OpenVINO operation names that correspond to ONNX nodes (by name or by an output tensor's name)."""
    nodes, tensors = set(onnx_nodes), set(onnx_tensors)
    out = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        name = op.get_friendly_name()
        outs = {n for o in op.outputs() for n in o.get_names()}
        if name in nodes or outs & tensors:
            out.append(name)
    return out


def load_ov_model(onnx_path: Path, xml_path: Path | None) -> Any:
    """The FP32 OpenVINO model: the bundle's IR when present, else converted from the ONNX."""
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
    ov = require("openvino", "OpenVINO INT8")
    try:
        if xml_path is not None and xml_path.is_file():
            return ov.Core().read_model(str(xml_path))
        return ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ModelError(f"cannot load the FP32 model for OpenVINO: {exc}") from None


def quantize_nncf(
    ov_model: Any,
    tensors: Sequence[np.ndarray],
    config: NncfConfig,
    out_xml: Path,
    validation: tuple[Sequence[Any], Any] | None = None,
) -> None:
    """Quantize with NNCF and save the INT8 IR at ``out_xml`` (+ ``.bin``).

    ``validation``: ``(items, validation_fn)`` for ``quantize_with_accuracy_control`` (needs
    ``config.max_drop``); ``validation_fn(compiled_model, items) -> float`` (0–1, higher is better).
    """
    if config.preset not in PRESETS:
        raise ConfigError(f"unknown NNCF preset {config.preset!r}; use one of {', '.join(PRESETS)}")
    nncf = require("nncf", "OpenVINO INT8 quantization")
    ov = require("openvino", "OpenVINO INT8")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    preset = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    calib = nncf.Dataset(list(tensors))
    scope = nncf.IgnoredScope(names=list(config.ignored_names), validate=False)
    common: dict[str, Any] = {
        "preset": preset[config.preset],
        "subset_size": min(config.subset_size, len(tensors)),
        "fast_bias_correction": config.fast_bias_correction,
        "ignored_scope": scope,
    }
    try:
        if validation is not None and config.max_drop is not None:
            items, fn = validation
            q = nncf.quantize_with_accuracy_control(
                ov_model, calib, nncf.Dataset(list(items), lambda it: it[0]), validation_fn=fn, max_drop=config.max_drop,
                **common,
            )  # fmt: skip
        else:
            q = nncf.quantize(ov_model, calib, **common)
        out_xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(q, str(out_xml), compress_to_fp16=False)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"NNCF quantization failed: {type(exc).__name__}: {exc}") from None


def map_validation(contract: Contract, data: str | Path, split: str = "val", limit: int | None = None) -> Any:
    """``(items, validation_fn)`` scoring an OpenVINO compiled model by mAP50-95 on a labelled split.

    Items are ``(tensor, geometry, boxes, class_ids)``; the function returns mAP50-95 (0–1).
    """
    from cvdeploy.decode import Decoder
    from cvdeploy.evaluate.datasets import open_detection_dataset
    from cvdeploy.evaluate.metrics import coco_map
    from cvdeploy.images import read_image
    from cvdeploy.preprocess import Preprocessor
    from cvdeploy.results import Detections

    dset = open_detection_dataset(data, None, split).head(limit)
    pre = Preprocessor(contract.input)
    eval_contract = contract.model_copy(deep=True)
    eval_contract.output.conf = 0.001
    eval_contract.output.max_det = 300
    decoder = Decoder(eval_contract)
    items = []
    for it in dset.items:
        t, g = pre([read_image(it.image)])
        items.append((t, g[0], it.boxes, it.class_ids))

    def validation_fn(compiled: Any, data_items: Iterable[Any]) -> float:
        gts, preds = [], []
        for t, g, boxes, cls in data_items:
            out = compiled(t)[0]
            det = decoder([np.asarray(out)], [g])[0]
            assert isinstance(det, Detections)
            preds.append(det)
            gts.append((boxes, cls))
        return float(coco_map(gts, preds, num_classes=contract.num_classes)["mAP50-95"])

    return items, validation_fn
