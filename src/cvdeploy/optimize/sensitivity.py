"""Per-layer quantization sensitivity: SQNR between float and quantized activations.

In the spirit of ONNX Runtime's ``qdq_loss_debug``, but streaming (no activation is kept in
memory): for every activation tensor ``T`` that the QDQ model quantizes, the QDQ model is run with
``T`` and its dequantized copy exposed as outputs, and the float model with ``T`` exposed.

- ``qdq_sqnr``: 10·log10(|T_c|² / |T_c − DQ(Q(T))_c|²) per channel ``c`` in the same run, averaged
  over channels — the error the INT8 grid of ``T`` itself introduces. Per channel, because one
  channel with a huge range takes the whole per-tensor scale and rounds the others to zero while
  still dominating a whole-tensor SQNR;
- ``xmodel_sqnr``: the same between the float model's ``T`` and the QDQ model's ``T`` — the error
  accumulated up to ``T``.

Layers are ranked by ``qdq_sqnr`` (lowest first): those are the ones to give back to float first.
Keeping ``T`` in float means excluding its producer and every consumer from quantization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.runtimes.onnxruntime import session_with_outputs


@dataclass
class LayerSensitivity:
    """How much quantizing one activation tensor hurts; ``nodes`` keep it in float when excluded."""

    tensor: str
    qdq_sqnr: float  # dB, higher is better
    xmodel_sqnr: float  # dB, higher is better
    nodes: list[str] = field(default_factory=list)
    op_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "op_type": self.op_type,
            "qdq_sqnr_db": _round(self.qdq_sqnr),
            "xmodel_sqnr_db": _round(self.xmodel_sqnr),
            "nodes": list(self.nodes),
        }


def _round(v: float) -> float | None:
    return round(v, 2) if math.isfinite(v) else None


def _sqnr(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return float("inf")
    if signal <= 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal / noise)


def _per_channel(sq: np.ndarray) -> np.ndarray:
    """Sum of squares per channel (axis 1; the whole tensor as one channel when it has no axis 1)."""
    if sq.ndim < 2:
        return np.asarray([sq.sum()])
    return sq.sum(axis=tuple(i for i in range(sq.ndim) if i != 1))


def _channel_sqnr(signal: np.ndarray, noise: np.ndarray, cap: float = 60.0) -> float:
    """Mean over channels of the SQNR in dB, each capped at ``cap`` (silent channels count as perfect)."""
    signal, noise = np.atleast_1d(signal), np.atleast_1d(noise)
    vals = [min(cap, _sqnr(float(s), float(n))) if s > 0 else cap for s, n in zip(signal, noise, strict=True)]
    return float(np.mean(vals))


def quantized_tensors(qdq_model: Any) -> dict[str, str]:
    """Activation tensor → the name of its dequantized copy, for every QuantizeLinear on an activation."""
    inits = {t.name for t in qdq_model.graph.initializer}
    q_out: dict[str, str] = {}
    for node in qdq_model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            q_out[node.output[0]] = node.input[0]
    out: dict[str, str] = {}
    for node in qdq_model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in q_out:
            out.setdefault(q_out[node.input[0]], node.output[0])
    return out


def layer_sensitivity(
    float_path: str | Path, qdq_path: str | Path, tensors: Sequence[np.ndarray], input_name: str
) -> list[LayerSensitivity]:
    """Rank the quantized activations of ``qdq_path`` by SQNR on ``tensors`` (``(1, 3, H, W)`` each).

    Returns most sensitive (lowest ``qdq_sqnr``) first.
    """
    import onnx

    fmodel = onnx.load(str(float_path))
    qmodel = onnx.load(str(qdq_path))
    float_names = {o for n in fmodel.graph.node for o in n.output} | {i.name for i in fmodel.graph.input}
    pairs = {t: dq for t, dq in quantized_tensors(qmodel).items() if t in float_names}
    names = sorted(pairs)
    fsess = session_with_outputs(fmodel, names)
    qsess = session_with_outputs(qmodel, names + [pairs[t] for t in names])
    # a Relu fused into the quantization range (u8, zero point 0) is gone from the QDQ graph: its
    # tensor there holds the values before the Relu, so apply it before comparing
    f_prod = {o: n.op_type for n in fmodel.graph.node for o in n.output}
    q_prod = {o: n.op_type for n in qmodel.graph.node for o in n.output}
    fused_relu = {t for t in names if f_prod.get(t) == "Relu" and q_prod.get(t) != "Relu"}
    f_idx = {o.name: i for i, o in enumerate(fsess.get_outputs())}
    q_idx = {o.name: i for i, o in enumerate(qsess.get_outputs())}
    sig: dict[str, Any] = dict.fromkeys(names, 0.0)
    qdq_noise: dict[str, Any] = dict.fromkeys(names, 0.0)
    x_sig = dict.fromkeys(names, 0.0)
    x_noise = dict.fromkeys(names, 0.0)
    for t in tensors:
        fo = fsess.run(None, {input_name: t})
        qo = qsess.run(None, {input_name: t})
        for name in names:
            pre = np.asarray(qo[q_idx[name]], np.float64)
            if name in fused_relu:
                pre = np.maximum(pre, 0.0)
            post = np.asarray(qo[q_idx[pairs[name]]], np.float64)
            ref = np.asarray(fo[f_idx[name]], np.float64)
            sig[name] = sig[name] + _per_channel(np.square(pre))
            qdq_noise[name] = qdq_noise[name] + _per_channel(np.square(pre - post))
            x_sig[name] += float(np.square(ref).sum())
            x_noise[name] += float(np.square(ref - pre).sum())
    producers = {o: n for n in fmodel.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in fmodel.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for name in names:
        prod = producers.get(name)
        nodes = ([prod.name] if prod is not None else []) + [c.name for c in consumers.get(name, [])]
        out.append(
            LayerSensitivity(
                tensor=name,
                qdq_sqnr=_channel_sqnr(sig[name], qdq_noise[name]),
                xmodel_sqnr=_sqnr(x_sig[name], x_noise[name]),
                nodes=list(dict.fromkeys(nodes)),
                op_type=prod.op_type if prod is not None else "input",
            )
        )
    out.sort(key=lambda s: (s.qdq_sqnr, s.xmodel_sqnr))
    return out
