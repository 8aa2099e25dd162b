"""Layer by layer: where does a converted ONNX model start to compute something else than its reference?

Every intermediate tensor of both graphs is exposed as an output (graph optimisations off, so none
is fused away), both run on the same input tensors, and the tensors are aligned — by name when the
graphs share most names (a quantised, FP16 or edited copy of the same export), else by position
(the k-th convolution of one with the k-th of the other). For each aligned pair the SQNR
(10·log10 of signal over error power, accumulated over the inputs) says how close it stays; the
first tensor whose SQNR falls well below what came before is where the divergence starts. The same
streaming idea as :mod:`cvdeploy.optimize.sensitivity`, which compares a QDQ model with its float
source; here any two graphs are compared and non-finite values are located too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy.runtimes.onnxruntime import session_with_outputs

CAP_DB = 120.0
JUMP_DB = 15.0
FP32_FLOOR_DB = 40.0
ANCHOR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger")


@dataclass
class LayerError:
    position: int  # index of the tensor's producer in the reference graph
    tensor: str  # reference tensor name
    other: str  # candidate tensor name
    op_type: str
    node: str
    sqnr_db: float
    max_abs: float
    nonfinite: int  # non-finite values in the candidate's tensor

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "tensor": self.tensor, "op_type": self.op_type, "node": self.node,
                "sqnr_db": round(self.sqnr_db, 2), "max_abs_diff": _r(self.max_abs), "nonfinite": self.nonfinite}  # fmt: skip


def _r(v: float) -> float | None:
    return round(v, 6) if math.isfinite(v) else None


@dataclass
class LayerReport:
    aligned_by: str  # "name" | "position"
    layers: list[LayerError] = field(default_factory=list)
    first_jump: int | None = None  # index into layers
    first_nonfinite: int | None = None

    def worst(self, k: int = 5) -> list[LayerError]:
        return sorted(self.layers, key=lambda e: e.sqnr_db)[:k]

    def to_dict(self) -> dict[str, Any]:
        jump = self.layers[self.first_jump].to_dict() if self.first_jump is not None else None
        nonfin = self.layers[self.first_nonfinite].to_dict() if self.first_nonfinite is not None else None
        return {"aligned_by": self.aligned_by, "tensors_compared": len(self.layers), "first_jump": jump,
                "first_nonfinite": nonfin, "worst": [e.to_dict() for e in self.worst()]}  # fmt: skip


def producers(model: Any) -> list[tuple[str, str, str]]:
    """``(tensor, op type, node name)`` of every node output, in graph (topological) order."""
    out = []
    for i, n in enumerate(model.graph.node):
        for t in n.output:
            if t:
                out.append((t, n.op_type, n.name or f"{n.op_type}_{i}"))
    return out


def align(ref: Any, cand: Any) -> tuple[str, list[tuple[int, str, str, str, str]]]:
    """``(how, [(position, ref tensor, cand tensor, op type, node)])`` of tensors to compare."""
    rp, cp = producers(ref), producers(cand)
    cand_names = {t for t, _, _ in cp}
    by_name = [(k, t, t, op, node) for k, (t, op, node) in enumerate(rp) if t in cand_names]
    if len(by_name) >= 0.5 * len(rp):
        return "name", by_name
    ra = [(k, t, op, node) for k, (t, op, node) in enumerate(rp) if op in ANCHOR_OPS]
    ca = [t for t, op, _ in cp if op in ANCHOR_OPS]
    if ra and len(ra) == len(ca):
        return "position", [(k, t, c, op, node) for (k, t, op, node), c in zip(ra, ca, strict=True)]
    return "none", []


def _sqnr(signal: float, noise: float) -> float:
    if not math.isfinite(noise):
        return -CAP_DB
    if noise <= 0:
        return CAP_DB
    if signal <= 0:
        return -CAP_DB
    return max(-CAP_DB, min(CAP_DB, 10 * math.log10(signal / noise)))


def compare_layers(ref_path: Path, cand_path: Path, tensors: Sequence[np.ndarray], reduced: bool = False) -> LayerReport:  # fmt: skip
    """Align and compare every intermediate tensor of ``cand_path`` with ``ref_path`` on ``tensors``.

    ``tensors``: model inputs ``(1, 3, H, W)``; ``reduced``: the candidate computes in a lower precision
    (FP16/INT8), so only a relative jump counts as the start of a divergence, not the FP32 floor.
    """
    import onnx

    ref, cand = onnx.load(str(ref_path)), onnx.load(str(cand_path))
    how, pairs = align(ref, cand)
    report = LayerReport(how)
    if not pairs:
        return report
    rs = session_with_outputs(ref, [p[1] for p in pairs])
    cs = session_with_outputs(cand, [p[2] for p in pairs])
    r_idx = {o.name: i for i, o in enumerate(rs.get_outputs())}
    c_idx = {o.name: i for i, o in enumerate(cs.get_outputs())}
    r_in, c_in = rs.get_inputs()[0].name, cs.get_inputs()[0].name
    sig = np.zeros(len(pairs))
    noise = np.zeros(len(pairs))
    worst = np.zeros(len(pairs))
    nonfinite = np.zeros(len(pairs), np.int64)
    usable = np.ones(len(pairs), bool)
    for t in tensors:
        ro = rs.run(None, {r_in: t})
        co = cs.run(None, {c_in: t})
        for k, (_, rt, ct, _, _) in enumerate(pairs):
            a, b = ro[r_idx[rt]], co[c_idx[ct]]
            if (
                not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray))
                or a.shape != b.shape
                or not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating))
            ):
                usable[k] = False
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            bad = ~np.isfinite(b64)
            nonfinite[k] += int(bad.sum())
            diff = np.where(bad | ~np.isfinite(a64), 0.0, a64 - b64)
            sig[k] += float(np.square(np.nan_to_num(a64)).sum())
            noise[k] += float(np.square(diff).sum()) if not bad.any() else float("inf")
            worst[k] = max(worst[k], float(np.abs(diff).max(initial=0.0)))
    for k, (pos, rt, _ct, op, node) in enumerate(pairs):
        if usable[k]:
            report.layers.append(
                LayerError(pos, rt, _ct, op, node, _sqnr(sig[k], noise[k]), worst[k], int(nonfinite[k]))
            )
    report.first_nonfinite = next((i for i, e in enumerate(report.layers) if e.nonfinite), None)
    report.first_jump = _first_jump([e.sqnr_db for e in report.layers], reduced)
    return report


def _first_jump(sqnr: list[float], reduced: bool) -> int | None:
    """First tensor whose SQNR falls ``JUMP_DB`` below the median so far (and, for FP32, under 40 dB)."""
    for i, v in enumerate(sqnr):
        before = sqnr[:i]
        median = float(np.median(before)) if before else CAP_DB
        if v <= median - JUMP_DB and (reduced or v < FP32_FLOOR_DB):
            return i
    return None


def weight_changes(ref_path: Path, cand_path: Path, limit: int = 5) -> tuple[list[str], int]:
    """Initializers of the same name and shape whose values differ (up to ``limit`` names), and how many.

    Only meaningful for two forms of the same export (the names match); FP16/INT8 copies store
    other initializers and are not compared.
    """
    import onnx
    from onnx import numpy_helper

    ref, cand = onnx.load(str(ref_path)), onnx.load(str(cand_path))
    theirs = {i.name: i for i in cand.graph.initializer}
    changed: list[str] = []
    for init in ref.graph.initializer:
        other = theirs.get(init.name)
        if other is None or other.data_type != init.data_type or list(other.dims) != list(init.dims):
            continue
        a, b = numpy_helper.to_array(init), numpy_helper.to_array(other)
        if a.size and not np.array_equal(a, b, equal_nan=True):
            changed.append(init.name)
    return changed[:limit], len(changed)


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def first_nonfinite_node(path: Path, tensor: np.ndarray) -> tuple[str, str] | None:
    """``(node, op type)`` of the first node (graph order) whose output holds NaN or infinity on ``tensor``."""
    import onnx

    model = onnx.load(str(path))
    prods = producers(model)
    sess = session_with_outputs(model, [t for t, _, _ in prods])
    idx = {o.name: i for i, o in enumerate(sess.get_outputs())}
    outs = sess.run(None, {sess.get_inputs()[0].name: tensor})
    for t, op, node in prods:
        v = outs[idx[t]]
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            return node, op
    return None
