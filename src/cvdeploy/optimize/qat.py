"""Quantization-aware training: the weights learn to live on the INT8 grid ONNX Runtime will use.

BatchNorm is folded into the convolutions (as ONNX Runtime's graph does before quantizing); every
convolution then sees fake-quantized inputs (per-tensor asymmetric U8 with MinMax ranges from the
calibration images — what the PTQ calibration computes) and fake-quantized weights (per-channel
symmetric S8, recomputed every step), and the model is trained by distillation from the FP32
model. For deployment the trained float model is exported and quantized by exactly the same ONNX
Runtime QDQ path as post-training quantization (same types, same float head, same calibration),
so QAT and PTQ differ only in the weights — which is what the variants table compares.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.bundle import Artifact, Bundle
from cvdeploy.errors import ConfigError

log = logging.getLogger("cvdeploy")
Step = Callable[[str], None]


def fold_batchnorm(model: Any) -> int:
    """Fold every ``Conv2d`` directly followed by ``BatchNorm2d`` inside a ``Sequential``; returns the count."""
    torch = require("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    count = 0
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                seq._modules[b] = torch.nn.Identity()
                count += 1
    return count


def _fake_quant_conv_class() -> Any:
    torch = require("torch")
    nn, F = torch.nn, torch.nn.functional

    class FakeQuantConv(nn.Module):  # type: ignore[name-defined]
        """A Conv2d with U8 per-tensor input and S8 per-channel weight fake quantization."""

        lo: Any  # running input range (buffers)
        hi: Any

        def __init__(self, conv: Any) -> None:
            super().__init__()
            self.conv = conv
            self.register_buffer("lo", torch.zeros(()))
            self.register_buffer("hi", torch.zeros(()))
            self.observing = False
            self.enabled = False

        def forward(self, x: Any) -> Any:
            if self.observing:
                self.lo = torch.minimum(self.lo, x.detach().min())
                self.hi = torch.maximum(self.hi, x.detach().max())
            w = self.conv.weight
            if self.enabled:
                scale = float(max(float(self.hi - self.lo), 1e-8) / 255.0)
                zp = int(round(float(-self.lo) / scale))
                x = torch.fake_quantize_per_tensor_affine(x, scale, min(max(zp, 0), 255), 0, 255)
                w_scale = (w.detach().abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8)
                w = torch.fake_quantize_per_channel_affine(
                    w, w_scale, torch.zeros_like(w_scale, dtype=torch.int32), 0, -127, 127
                )
            c = self.conv
            return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)

    return FakeQuantConv


def prepare_qat(model: Any, calibration: Sequence[Any]) -> int:
    """Fold BatchNorm, wrap every trainable Conv2d with fake quantization, calibrate its input range.

    ``calibration``: ``(1, 3, H, W)`` tensors. Returns the number of wrapped convolutions.
    """
    torch = require("torch")
    fold_batchnorm(model)
    cls = _fake_quant_conv_class()
    wrapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Conv2d) and child.weight.requires_grad:
                fq = cls(child)
                setattr(parent, name, fq)
                wrapped.append(fq)
    model.eval()
    for fq in wrapped:
        fq.observing = True
    with torch.no_grad():
        for t in calibration:
            model(torch.as_tensor(t))
    for fq in wrapped:
        fq.observing, fq.enabled = False, True
    return len(wrapped)


def strip_qat(model: Any) -> Any:
    """The trained float model: every fake-quantized conv replaced by its plain (trained) Conv2d."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if hasattr(child, "conv") and hasattr(child, "observing"):
                setattr(parent, name, child.conv)
    return model


def qat_bundle(
    bundle: Bundle,
    calib_images: str | Path | Sequence[str | Path],
    train_images: str | Path | Sequence[str | Path],
    config: Any,
    options: Any | None = None,
    step: Step | None = None,
) -> Artifact:
    """Add ``onnx-int8-qat``: QAT by distillation from FP32, then the INT8 path itself on the trained weights.

    The trained float model is exported and handed to :func:`~cvdeploy.optimize.int8.quantize_int8`
    as its FP32 source: same calibration, types, float head, scoring and finishing step as PTQ (no
    accuracy-aware search, so QAT and PTQ at the same settings differ only in the weights).
    """
    torch = require("torch", "quantization-aware training")
    from cvdeploy.export import torch_to_onnx
    from cvdeploy.optimize.calibration import load_calibration
    from cvdeploy.optimize.distill import train_student
    from cvdeploy.optimize.int8 import Int8Options, quantize_int8
    from cvdeploy.optimize.source import load_source_model

    say = step or (lambda msg: log.info(msg))
    opts = options or Int8Options()
    opts.check()
    if bundle.contract.task != "detect":
        raise ConfigError(f"QAT distils the YOLO output layout; bundle {bundle.name!r} is not a detector")
    calib = load_calibration(calib_images, bundle.contract, limit=min(opts.max_images, 64))
    teacher = load_source_model(bundle)
    student = copy.deepcopy(teacher)
    n = prepare_qat(student, [torch.from_numpy(t) for t in calib.tensors[:64]])
    say(f"QAT: {n} convolutions fake-quantized (U8 inputs, S8 per-channel weights), BatchNorm folded")
    tlog = train_student(student, teacher, train_images, config,
                         on_epoch=lambda e, v: say(f"QAT epoch {e + 1}/{config.epochs}: loss {v:.4f}"))  # fmt: skip
    strip_qat(student).eval()
    details = {"qat": {**tlog.to_dict(), "epochs": config.epochs, "wrapped_convs": n,
                       "teacher": "onnx-fp32 (the model itself, in float)"}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cvdeploy-qat-") as tmp:
        fp = Path(tmp) / "qat_fp32.onnx"
        torch_to_onnx(student, fp, bundle.contract, dynamic_batch=bundle.artifact("onnx-fp32").dynamic_batch)
        qopts = dataclasses.replace(opts, tag="qat", search=False)
        return quantize_int8(bundle, calib_images, "onnxruntime", qopts, say, source=fp, details=details)
