"""Import any ONNX file: read Ultralytics (or cvdeploy) metadata when present, otherwise recognise the layout.

The contract itself is assembled by :mod:`cvdeploy.sources.assemble`, which verifies the metadata
against the graph and says what it assumed.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from cvdeploy.contract import Contract
from cvdeploy.errors import ModelError
from cvdeploy.sources import layout as lay
from cvdeploy.sources.assemble import ContractHints, GraphInput, ModelFacts, assemble

__all__ = [
    "ContractHints",
    "contract_from_onnx",
    "graph_io",
    "load_onnx",
    "recognise_output",
    "ultralytics_metadata",
]


def load_onnx(path: str | Path) -> Any:
    """Load and check an ONNX file, with a clear error when it is not one."""
    import onnx

    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=True)
    except Exception as exc:
        raise ModelError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ModelError(f"{p}: the ONNX graph is empty")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{p}: corrupt ONNX model: {str(exc).splitlines()[0]}") from None
    return model


def ultralytics_metadata(model: Any) -> dict[str, Any] | None:
    """The metadata an Ultralytics (or cvdeploy) export writes, parsed: ``names``, ``stride``, ``imgsz``,
    ``task``, ``end2end``, ``kpt_shape``, ``args`` (with ``nms``), or a whole ``cvdeploy.contract``."""
    props = {p.key: p.value for p in model.metadata_props}
    if "cvdeploy.contract" in props:
        return {"cvdeploy.contract": props["cvdeploy.contract"], "author": "cvdeploy"}
    if "names" not in props or "stride" not in props:
        return None
    meta: dict[str, Any] = {}
    for key in (
        "names",
        "stride",
        "imgsz",
        "task",
        "batch",
        "author",
        "version",
        "args",
        "end2end",
        "kpt_shape",
    ):
        if key in props:
            try:
                meta[key] = ast.literal_eval(props[key])  # literal_eval: data only, never code
            except (ValueError, SyntaxError):
                meta[key] = props[key]
    return meta


def _dims(value_info: Any) -> list[int | str]:
    out: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def graph_io(model: Any) -> tuple[list[tuple[str, list[int | str]]], list[tuple[str, list[int | str]]]]:
    """Real inputs (initialisers excluded) and outputs with their dims."""
    inits = {i.name for i in model.graph.initializer}
    ins = [(i.name, _dims(i)) for i in model.graph.input if i.name not in inits]
    outs = [(o.name, _dims(o)) for o in model.graph.output]
    return ins, outs


def recognise_output(out_dims: list[list[int | str]], num_classes: int | None) -> tuple[str, int | None, str]:
    """Guess the output format from output shapes. Returns (format, num_classes, reason)."""
    found = lay.recognise(out_dims, num_classes)
    if found is None:
        return "raw", None, f"output shape {lay.describe(out_dims)} is not a layout cvdeploy can decode"
    return found.format, found.num_classes, found.reason


def contract_from_onnx(
    model: Any, hints: ContractHints, what: str = "the model"
) -> tuple[Contract, list[str]]:
    """Fill a contract from the model's metadata, the graph's shapes and the user's hints.

    Returns the contract and human-readable notes on what was read, recognised and assumed. Raises
    :class:`~cvdeploy.errors.ModelError`/:class:`~cvdeploy.errors.ConfigError` when the metadata or a
    flag disagrees with the graph.
    """
    ins, outs = graph_io(model)
    meta = ultralytics_metadata(model)
    facts = ModelFacts.from_metadata(meta) if meta else None
    if len(ins) != 1 or len(ins[0][1]) != 4:
        why = (f"model has {len(ins)} inputs" if len(ins) != 1 else f"input {ins[0][0]} has shape {ins[0][1]}, not an "
               "image batch")  # fmt: skip
        if hints.task not in (None, "raw") or hints.format not in (None, "raw"):
            raise ModelError(
                f"{what}: {why}; cvdeploy decodes single-image-input models only — import it as raw"
            )
        hints = ContractHints(**{**hints.__dict__, "task": "raw", "format": "raw"})
        contract, notes = assemble(_graph_input(ins[0] if ins else ("input", [])), [d for _, d in outs], None, hints,
                                   what)  # fmt: skip
        return contract, [f"{why}; imported as raw (tensors in, tensors out)", *notes]
    return assemble(_graph_input(ins[0], _input_dtype(model)), [d for _, d in outs], facts, hints, what)


def _graph_input(inp: tuple[str, list[int | str]], dtype: str = "float32") -> GraphInput:
    name, dims = inp
    if len(dims) != 4:
        return GraphInput(name=name, batch="?", dtype=dtype)
    layout = "NHWC" if dims[3] == 3 and dims[1] != 3 else "NCHW"
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    return GraphInput(name, layout, h, w, dims[0], dtype)


def _input_dtype(model: Any) -> str:
    from onnx import TensorProto

    inits = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    return {TensorProto.FLOAT16: "float16", TensorProto.UINT8: "uint8"}.get(
        first.type.tensor_type.elem_type, "float32"
    )
