"""Static INT8 quantization with ONNX Runtime: QDQ format, per-channel weights, calibrated activations.

The activation/weight integer types are chosen from the CPU's features: on x86 ONNX Runtime's
fast INT8 kernels (AVX2, and VNNI's ``vpdpbusd``) take unsigned activations and signed weights
(U8S8); S8S8 convolutions stay unfused and run slower than FP32 there (measured 0.39x of FP32 on
a Xeon with AVX-512 VNNI, 0.6x on a Zen 3). On Arm with dot-product instructions S8S8 is fast. Calibration is done once and cached, so re-quantizing with a different set of
float layers (the accuracy-aware search) costs no second calibration pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy import env
from cvdeploy.errors import ConfigError, ModelError
from cvdeploy.optimize.calibration import TensorReader

log = logging.getLogger("cvdeploy")

METHODS = ("minmax", "entropy", "percentile")
TYPE_CHOICES = ("auto", "u8s8", "s8s8")


@dataclass
class TypeChoice:
    """Activation and weight types, and why they were chosen."""

    activation: str  # "u8" | "s8"
    weight: str  # "s8"
    reason: str

    @property
    def tag(self) -> str:
        return f"{self.activation}{self.weight}"


def choose_types(choice: str = "auto", flags: list[str] | None = None) -> TypeChoice:
    """U8S8 or S8S8 from the CPU's INT8 features (``choice="auto"``), or as forced by ``choice``."""
    if choice not in TYPE_CHOICES:
        raise ConfigError(f"unknown INT8 type choice {choice!r}; use one of {', '.join(TYPE_CHOICES)}")
    if choice == "u8s8":
        return TypeChoice("u8", "s8", "forced by the caller")
    if choice == "s8s8":
        return TypeChoice("s8", "s8", "forced by the caller")
    cpu_flags = set(flags if flags is not None else env.cpu_info()["flags"])
    fast = "asimddp" in cpu_flags if flags is not None else env.has_fast_int8_s8s8()
    if fast:
        return TypeChoice("s8", "s8", "Arm CPU with dot-product INT8 (asimddp): symmetric S8S8 is fast")
    vnni = sorted(cpu_flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    why = (
        f"x86 INT8 kernels ({', '.join(vnni)}) multiply unsigned activations by signed weights"
        if vnni
        else ("no VNNI on this CPU")
    )
    return TypeChoice("u8", "s8", f"{why}: S8S8 convolutions run unfused and slower than FP32, U8S8 is fast")


@dataclass
class OrtQuantConfig:
    """Settings of one ONNX Runtime static quantization."""

    method: str = "minmax"
    per_channel: bool = True
    types: TypeChoice = field(default_factory=choose_types)
    percentile: float = 99.999
    exclude_nodes: list[str] = field(default_factory=list)
    reduce_range: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "format": "QDQ",
            "calibration": self.method,
            "per_channel": self.per_channel,
            "activations": self.types.activation,
            "weights": self.types.weight,
            "type_reason": self.types.reason,
            **({"percentile": self.percentile} if self.method == "percentile" else {}),
            "float_nodes": len(self.exclude_nodes),
        }


#: Per-channel QDQ needs DequantizeLinear's ``axis`` attribute, which ONNX added in opset 13.
PER_CHANNEL_OPSET = 13


def model_opset(path: Path) -> int:
    """The default-domain opset of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def ensure_opset(
    src: Path, dst: Path, per_channel: bool, name: str = "the model"
) -> tuple[Path, bool, list[str]]:
    """Make per-channel INT8 possible on a model of any opset.

    Below opset 13 (Ultralytics exports opset 12 by default in some releases) the model is upgraded to
    13 with ONNX's version converter; when that fails, per-tensor weights are used instead (they need no
    ``axis``). Returns the model to quantize, whether per-channel stays on, and notes saying what was done.
    """
    opset = model_opset(src)
    if not per_channel or opset >= PER_CHANNEL_OPSET:
        return src, per_channel, []
    import onnx
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(onnx.load(str(src)), PER_CHANNEL_OPSET)
        onnx.checker.check_model(converted)
        onnx.save(converted, str(dst))
    except Exception as exc:  # the converter lacks adapters for some ops: per-tensor works at any opset
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        note = (f"{name} is opset {opset} and ONNX's version converter could not lift it to {PER_CHANNEL_OPSET} "
                f"({_scrub(why, src.parent)}); quantized with per-tensor weights instead of per-channel")  # fmt: skip
        log.warning(note)
        return src, False, [note]
    note = f"{name} is opset {opset}: upgraded to opset {PER_CHANNEL_OPSET} for per-channel INT8 weights"
    log.info(note)
    return dst, True, [note]


def _scrub(message: str, *folders: Path) -> str:
    """A message with cvdeploy's temporary folders taken out: users see file names, never temp paths."""
    import re
    import tempfile

    for folder in folders:
        message = message.replace(str(folder) + "/", "").replace(str(folder), "")
    return re.sub(re.escape(tempfile.gettempdir()) + r"/cvdeploy-[^/\s]+/?", "", message)


def pre_process(src: Path, dst: Path, symbolic: bool = False) -> list[str]:
    """ONNX Runtime's ``quant_pre_process`` (shape inference + graph optimisation); returns notes.

    ONNX shape inference suffices for convolutional detectors; ``symbolic`` adds ONNX Runtime's
    symbolic shape inference (slow, and it gives up on our graphs' dynamic batch), falling back
    without it when it fails.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cvdeploy.optimize.head import ensure_node_names

    notes: list[str] = []
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=not symbolic)
    except Exception as exc:  # symbolic inference fails on some graphs; keep going without it
        if not symbolic:
            raise ModelError(
                f"cannot prepare the model for quantization: {_scrub(str(exc).splitlines()[0], src.parent, dst.parent)}"
            ) from None
        log.info("quant_pre_process failed (%s); retrying without symbolic shape inference", exc)
        notes.append(f"quant_pre_process without symbolic shape inference ({type(exc).__name__})")
        return pre_process(src, dst, symbolic=False) + notes
    model = onnx.load(str(dst))
    ensure_node_names(model)
    onnx.save(model, str(dst))
    return notes


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if name not in METHODS:
        raise ConfigError(f"unknown calibration method {name!r}; use one of {', '.join(METHODS)}")
    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def _qtype(t: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[t]


def quantize_qdq(
    model_path: Path,
    out_path: Path,
    config: OrtQuantConfig,
    reader: TensorReader | None,
    cache: Path | None = None,
) -> None:
    """Quantize a pre-processed FP32 ONNX to QDQ INT8 at ``out_path``.

    ``cache``: a calibration-range file; written on the first call, reused (no ``reader`` needed)
    afterwards, so repeated quantizations with other float layers skip calibration.
    """
    from onnxruntime.quantization import QuantFormat, quantize_static

    extra: dict[str, Any] = {"ActivationSymmetric": config.types.activation == "s8", "WeightSymmetric": True}
    if config.method == "percentile":
        extra["CalibPercentile"] = config.percentile
    if reader is not None:
        reader.rewind()
    quiet = logging.getLogger("root")  # ORT warns about pre-processing via the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(model_path),
            str(out_path),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=_qtype(config.types.activation),
            weight_type=_qtype(config.types.weight),
            nodes_to_exclude=list(config.exclude_nodes),
            calibrate_method=_method(config.method),
            extra_options=extra,
            calibration_cache_path=str(cache) if cache is not None else None,
        )
    except Exception as exc:  # ORT raises ValueError, onnx/ORT runtime errors (e.g. an unsupported attribute)
        msg = _scrub(
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, model_path.parent, out_path.parent
        )
        raise ModelError(
            f"ONNX Runtime quantization failed: {msg}; try --per-tensor, --calib-method entropy, or --runtime openvino"
        ) from None
    finally:
        quiet.setLevel(level)
