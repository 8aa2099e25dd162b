"""Find the float-only box-decode part of a detector's ONNX graph from its structure.

Quantizing a whole YOLO graph zeroes every class score: the final Concat mixes pixel boxes
(0–640) and 0–1 scores under one INT8 scale. Everything after the last feature convolutions
(reshapes, DFL softmax, anchor arithmetic, sigmoid, the final Concat) is therefore kept in float.

The finder walks back from the graph outputs through any operator until it reaches a Conv (or
Gemm/MatMul/ConvTranspose) — those outputs are the boundary. One exception is the DFL
projection of Ultralytics exports: a 1x1 Conv with constant weights fed (through
Reshape/Transpose) by a Softmax is arithmetic, not a feature layer, so the walk continues
through it. No node names are hard-coded, so the same code works on Ultralytics exports and on
our own models.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FEATURE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "QLinearConv"})
PASS_THROUGH = frozenset({"Reshape", "Transpose", "Identity", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass
class HeadSplit:
    """The decode subgraph of a model: its node names, op types and boundary tensors."""

    nodes: list[str] = field(default_factory=list)  # node names, in graph order
    boundary: list[str] = field(default_factory=list)  # tensors produced by the last feature layers
    op_types: dict[str, int] = field(default_factory=dict)  # op type → count inside the head
    dfl_convs: list[str] = field(default_factory=list)  # constant projection convs kept in float

    def summary(self) -> str:
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(self.op_types.items(), key=lambda kv: -kv[1])[:8])
        return (
            f"{len(self.nodes)} head-decode nodes after {len(self.boundary)} last feature-layer outputs"
            f" ({ops})"
        )


def ensure_node_names(model: Any) -> None:
    """Give every unnamed node a unique name (quantizers address nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _is_projection_conv(node: Any, producers: dict[str, Any], inits: set[str]) -> bool:
    """A Conv with constant weights whose input comes (via reshapes) from a Softmax: DFL decoding."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    src = producers.get(node.input[0])
    for _ in range(6):
        if src is None:
            return False
        if src.op_type == "Softmax":
            return True
        if src.op_type not in PASS_THROUGH:
            return False
        src = producers.get(src.input[0]) if src.input else None
    return False


def find_head_decode(model: Any) -> HeadSplit:
    """Nodes between the last feature layers and the graph outputs of an ``onnx.ModelProto``.

    Nodes must be named (call :func:`ensure_node_names` first). Returns an empty split when the
    outputs come straight from a feature layer (nothing to keep in float).
    """
    graph = model.graph
    producers: dict[str, Any] = {}
    for node in graph.node:
        for out in node.output:
            if out:
                producers[out] = node
    inits = {t.name for t in graph.initializer}
    inits |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    head: set[str] = set()
    boundary: set[str] = set()
    dfl: set[str] = set()
    stack = [o.name for o in graph.output]
    seen: set[str] = set()
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        node = producers.get(tensor)
        if node is None:  # graph input or initializer
            continue
        if node.op_type in FEATURE_OPS:
            if _is_projection_conv(node, producers, inits):
                dfl.add(node.name)
            else:
                boundary.add(tensor)
                continue
        head.add(node.name)
        stack.extend(i for i in node.input if i)
    if not boundary:  # no feature layer behind the outputs: not a network we can split
        return HeadSplit()
    order = [n for n in graph.node if n.name in head]
    return HeadSplit(
        nodes=[n.name for n in order],
        boundary=sorted(boundary),
        op_types=dict(Counter(n.op_type for n in order)),
        dfl_convs=sorted(dfl),
    )
