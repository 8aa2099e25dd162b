"""The float head is found from the graph's structure on our detector and on an Ultralytics graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from .builders import planted_model

onnx = pytest.importorskip("onnx")

from cvdeploy.optimize.head import FEATURE_OPS, ensure_node_names, find_head_decode  # noqa: E402


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def _check_split(model) -> None:
    split = find_head_decode(model)
    prod = _producers(model)
    head = set(split.nodes)
    # every boundary tensor comes from a feature layer outside the head
    assert split.boundary and all(
        prod[t].op_type in FEATURE_OPS and prod[t].name not in head for t in split.boundary
    )
    # the graph output and its score activation are in the head
    assert prod[model.graph.output[0].name].name in head
    assert split.op_types.get("Sigmoid", 0) >= 1
    # only projection (DFL) convs inside the head, no feature conv
    assert all(
        n.op_type not in FEATURE_OPS or n.name in split.dfl_convs for n in model.graph.node if n.name in head
    )


def test_head_of_our_detector(tiny_bundle_path: Path) -> None:
    model = onnx.load(str(tiny_bundle_path / "onnx-fp32.onnx"))
    ensure_node_names(model)
    _check_split(model)
    split = find_head_decode(model)
    assert len(split.boundary) == 6  # box and class branch of three levels
    assert not split.dfl_convs  # our DFL is Softmax·Mul·ReduceSum, no conv


def test_head_of_ultralytics_graph(ultralytics_onnx: Path) -> None:
    model = onnx.load(str(ultralytics_onnx))
    ensure_node_names(model)
    _check_split(model)
    split = find_head_decode(model)
    assert len(split.boundary) == 6
    assert len(split.dfl_convs) == 1  # the constant DFL projection conv is arithmetic, kept in float
    assert split.op_types.get("Softmax") == 1


def test_no_head_when_outputs_come_from_a_conv(tmp_path: Path) -> None:
    model = onnx.load(str(planted_model(tmp_path / "p.onnx")))
    assert find_head_decode(model).nodes == []


def test_unnamed_nodes_get_unique_names(tmp_path: Path) -> None:
    model = onnx.load(str(planted_model(tmp_path / "p.onnx")))
    for n in model.graph.node:
        n.name = ""
    ensure_node_names(model)
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)
