"""Model obfuscation against casual reverse engineering: names, doc strings and metadata removed.

ONNX (through the ``onnx`` library, in memory): every node, initializer and intermediate tensor gets
an opaque name (``n…``/``t…``, in shuffled order so even the numbering says nothing), doc strings,
``metadata_props``, producer and graph names and ``value_info`` are dropped, and harmless dummy
nodes (``Identity`` on randomly chosen internal edges — exact, and removed again by ONNX Runtime's
graph optimizer, so they cost nothing at run time) are inserted. The graph's inputs and outputs keep
their names: they are the model's interface (the contract names the input, clients see outputs).

OpenVINO IR: layer and tensor names are replaced the same way and the model-level ``rt_info``
(framework metadata such as class names, conversion parameters with source paths) and per-layer
``fused_names`` are dropped. OpenVINO can only serialize a model to files, so the IR's XML is
rewritten here with ``xml.etree`` — in memory, nothing written. No dummy layers are added to IR.

What this does not do: the weights and the graph's structure are unchanged — anyone with the file
can still run, study and copy it. Obfuscation raises the cost of understanding a model, not of
stealing it; encryption (``--encrypt``) is what keeps the file itself unreadable at rest.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cvdeploy.errors import ModelError

__all__ = ["Obfuscated", "obfuscate_ir", "obfuscate_model", "obfuscate_onnx"]


@dataclass(frozen=True)
class Obfuscated:
    """The obfuscated files and what was changed."""

    blobs: list[bytes]
    renamed: int  # names replaced
    dummies: int  # dummy nodes inserted
    stripped: list[str]  # what kind of metadata was removed

    def summary(self) -> dict[str, Any]:
        return {"renamed": self.renamed, "dummy_nodes": self.dummies, "stripped": self.stripped}


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph inside it (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def obfuscate_onnx(data: bytes, seed: int | None = None, dummies: int | None = None) -> Obfuscated:
    """Obfuscate an ONNX model given as bytes (see the module docstring)."""
    import onnx

    rng = random.Random(seed)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise ModelError(f"cannot obfuscate: not a readable ONNX model ({exc})") from None
    main = model.graph
    init_names = {i.name for i in main.initializer}
    keep = {i.name for i in main.input if i.name not in init_names} | {o.name for o in main.output} | {""}

    names: list[str] = []
    seen: set[str] = set()

    def note(name: str) -> None:
        if name not in seen and name not in keep:
            seen.add(name)
            names.append(name)

    graphs = list(_graphs(main))
    for g in graphs:
        for i in g.initializer:
            note(i.name)
        for i in g.sparse_initializer:
            note(i.values.name)
        for v in (*g.input, *g.output):
            note(v.name)
        for n in g.node:
            for t in (*n.input, *n.output):
                note(t)
    order = list(range(len(names) + 4 * len(main.node) + 64))
    rng.shuffle(order)
    fresh = iter(order)
    mapping = {name: f"t{next(fresh)}" for name in names}

    def rename(name: str) -> str:
        return mapping.get(name, name)

    node_ids = list(range(sum(len(g.node) for g in graphs) + 64))
    rng.shuffle(node_ids)
    nid = iter(node_ids)
    for g in graphs:
        for i in g.initializer:
            i.name = rename(i.name)
            i.doc_string = ""
        for i in g.sparse_initializer:
            i.values.name = rename(i.values.name)
        for v in (*g.input, *g.output):
            v.name = rename(v.name)
            v.doc_string = ""
        for n in g.node:
            n.name = f"n{next(nid)}"
            n.doc_string = ""
            n.input[:] = [rename(t) for t in n.input]
            n.output[:] = [rename(t) for t in n.output]
        del g.value_info[:]
        g.doc_string = ""
        g.name = "g"
    main.name = "main"
    stripped = ["doc strings", "value_info"]
    if model.metadata_props:
        stripped.append(f"metadata ({', '.join(sorted(p.key for p in model.metadata_props))})")
    del model.metadata_props[:]
    model.doc_string = ""
    model.producer_name = ""
    model.producer_version = ""
    model.domain = ""
    for f in model.functions:
        f.doc_string = ""
        for n in f.node:
            n.doc_string = ""

    # dummy Identity nodes on internal edges, each placed right after its producer (order stays topological)
    outputs = {o.name for o in main.output}
    edges = [(k, t) for k, n in enumerate(main.node) for t in n.output if t and t not in outputs]
    want = min(len(edges), dummies if dummies is not None else max(3, min(32, len(main.node) // 50)))
    chosen = sorted(rng.sample(edges, want), key=lambda e: -e[0])
    for k, t in chosen:  # from the back, so earlier positions stay valid
        alias = f"t{next(fresh)}"
        for n in main.node:
            n.input[:] = [alias if x == t else x for x in n.input]
        dummy = onnx.helper.make_node("Identity", [t], [alias], name=f"n{next(nid)}")
        main.node.insert(k + 1, dummy)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"obfuscation produced an invalid ONNX model ({str(exc).splitlines()[0]})") from None
    return Obfuscated([model.SerializeToString()], len(mapping) + len(main.node), want, stripped)


def obfuscate_ir(xml: bytes, weights: bytes, seed: int | None = None) -> Obfuscated:
    """Obfuscate an OpenVINO IR (``.xml`` text and ``.bin`` weights; the weights are unchanged)."""
    rng = random.Random(seed)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ModelError(f"cannot obfuscate: not an OpenVINO IR ({exc})") from None
    layers = root.find("layers")
    edges = root.find("edges")
    if layers is None or edges is None:
        raise ModelError("cannot obfuscate: the IR has no <layers> or <edges>")
    by_id = {layer.get("id"): layer for layer in layers.findall("layer")}
    keep_ports: set[tuple[str | None, str | None]] = set()
    for layer in by_id.values():
        if layer.get("type") == "Parameter":
            for port in layer.iter("port"):
                keep_ports.add((layer.get("id"), port.get("id")))
    results = {lid for lid, layer in by_id.items() if layer.get("type") == "Result"}
    for e in edges.findall("edge"):
        if e.get("to-layer") in results:
            keep_ports.add((e.get("from-layer"), e.get("from-port")))
    ids = list(range(2 * len(by_id) + 64))
    rng.shuffle(ids)
    fresh = iter(ids)
    renamed = 0
    for lid, layer in by_id.items():
        if layer.get("type") not in ("Parameter", "Result"):
            layer.set("name", f"n{next(fresh)}")
            renamed += 1
        for port in layer.iter("port"):
            if (lid, port.get("id")) not in keep_ports and port.get("names") is not None:
                del port.attrib["names"]
                renamed += 1
        for info in layer.findall("rt_info"):
            for attr in list(info):
                if str(attr.get("name", "")).startswith(("fused_names", "original")):
                    info.remove(attr)
    root.set("name", "model")
    stripped = ["fused_names"]
    for info in root.findall("rt_info"):
        for child in list(info):
            if child.tag != "runtime_options":
                stripped.append(child.tag if child.tag != "info" else str(child.get("name")))
                info.remove(child)
    return Obfuscated(
        [ET.tostring(root, encoding="utf-8", xml_declaration=True), weights], renamed, 0, stripped
    )


def obfuscate_model(suffix: str, blobs: Sequence[bytes], seed: int | None = None) -> Obfuscated:
    """Obfuscate an artifact's files (model file first, then its sidecars) by the model file's format."""
    if suffix == ".onnx":
        return obfuscate_onnx(blobs[0], seed)
    if suffix == ".xml" and len(blobs) == 2:
        return obfuscate_ir(blobs[0], blobs[1], seed)
    raise ModelError(f"cannot obfuscate {suffix} models: only ONNX files and OpenVINO IRs (.xml + .bin)")
