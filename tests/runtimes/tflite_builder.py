"""A small detector-shaped ``.tflite`` built with LiteRT's own flatbuffer schema, for tests without a converter.

The converter (litert-torch) cannot share an environment with cvdeploy's server stack (it pins
``typing-extensions<4.13``), so the runtime, the edge package and the contract test use this model:

    images (B, 3, H, W) float32 ─ TRANSPOSE → NHWC ─ CONV_2D k=s=8 (4+nc channels) ─ RESHAPE (B, N, 4+nc)
                                ─ TRANSPOSE → (B, 4+nc, N)   with N = (H/8)·(W/8): the yolov8 layout

``weights`` picks how the convolution's filter is stored: ``fp32``; ``fp16`` (FLOAT16 constant and a
DEQUANTIZE to FLOAT32, as float16 quantization writes it); ``int8`` (INT8 filter with per-channel
scales: a hybrid convolution on float activations, as dynamic-range quantization writes it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build(
    path: Path, height: int = 320, width: int = 320, classes: int = 6, weights: str = "fp32", seed: int = 0
) -> Path:
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools.flatbuffer_utils import write_model

    rng = np.random.default_rng(seed)
    k, ch = 8, 4 + classes
    n = (height // k) * (width // k)
    filt = (rng.standard_normal((ch, k, k, 3)) * 0.02).astype(np.float32)
    filt[:4] *= 40.0  # box channels in pixels-ish, class channels around 0..1
    bias = np.concatenate([np.array([160, 160, 60, 60], np.float32), np.full(classes, 0.2, np.float32)])

    buffers: list[fb.BufferT] = [fb.BufferT()]
    tensors: list[fb.TensorT] = []

    def buffer(arr: np.ndarray | None) -> int:
        b = fb.BufferT()
        if arr is not None:
            b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8).tolist()
        buffers.append(b)
        return len(buffers) - 1

    def tensor(name: str, shape: list[int], ttype: int, data: np.ndarray | None = None,
               signature: list[int] | None = None, quant: fb.QuantizationParametersT | None = None) -> int:  # fmt: skip
        t = fb.TensorT()
        t.name, t.shape, t.type = name, shape, ttype
        t.shapeSignature = signature
        t.buffer = buffer(data) if data is not None else 0
        t.quantization = quant
        tensors.append(t)
        return len(tensors) - 1

    F32, I32 = fb.TensorType.FLOAT32, fb.TensorType.INT32
    x = tensor("images", [1, 3, height, width], F32, signature=[-1, 3, height, width])
    perm1 = tensor("perm_nhwc", [4], I32, np.array([0, 2, 3, 1], np.int32))
    nhwc = tensor("nhwc", [1, height, width, 3], F32, signature=[-1, height, width, 3])
    ops: list[tuple[int, list[int], list[int], int | None, object | None]] = []
    codes = [fb.BuiltinOperator.TRANSPOSE, fb.BuiltinOperator.CONV_2D, fb.BuiltinOperator.RESHAPE,
             fb.BuiltinOperator.DEQUANTIZE]  # fmt: skip
    ops.append((0, [x, perm1], [nhwc], None, None))
    if weights == "fp16":
        half = tensor("filter_fp16", [ch, k, k, 3], fb.TensorType.FLOAT16, filt.astype(np.float16))
        w = tensor("filter", [ch, k, k, 3], F32)
        ops.append((3, [half], [w], None, None))
    elif weights == "int8":
        scale = np.abs(filt).reshape(ch, -1).max(1) / 127.0
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = scale.astype(np.float32).tolist(), [0] * ch, 0
        qf = np.clip(np.round(filt / scale[:, None, None, None]), -127, 127).astype(np.int8)
        w = tensor("filter_int8", [ch, k, k, 3], fb.TensorType.INT8, qf, quant=q)
    else:
        w = tensor("filter", [ch, k, k, 3], F32, filt)
    b = tensor("bias", [ch], F32, bias)
    conv = tensor("conv", [1, height // k, width // k, ch], F32, signature=[-1, height // k, width // k, ch])
    opts = fb.Conv2DOptionsT()
    opts.padding, opts.strideH, opts.strideW = fb.Padding.VALID, k, k
    opts.dilationHFactor = opts.dilationWFactor = 1
    ops.append((1, [nhwc, w, b], [conv], fb.BuiltinOptions.Conv2DOptions, opts))
    shape = tensor("new_shape", [3], I32, np.array([-1, n, ch], np.int32))
    flat = tensor("flat", [1, n, ch], F32, signature=[-1, n, ch])
    ops.append((2, [conv, shape], [flat], None, None))
    perm2 = tensor("perm_out", [3], I32, np.array([0, 2, 1], np.int32))
    out = tensor("output0", [1, ch, n], F32, signature=[-1, ch, n])
    ops.append((0, [flat, perm2], [out], None, None))

    sub = fb.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.name = tensors, [x], [out], "main"
    sub.operators = []
    for code, ins, outs, otype, o in ops:
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = code, ins, outs
        if otype is not None:
            op.builtinOptionsType, op.builtinOptions = otype, o
        sub.operators.append(op)
    model = fb.ModelT()
    model.version, model.description = 3, "cvdeploy test detector"
    model.operatorCodes = []
    for c in codes:
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, min(c, 127), 1
        model.operatorCodes.append(oc)
    model.subgraphs, model.buffers = [sub], buffers
    path.parent.mkdir(parents=True, exist_ok=True)
    write_model(model, str(path))
    return path
