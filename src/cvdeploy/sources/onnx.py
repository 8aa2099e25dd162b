"""Import any ONNX file: read Ultralytics metadata when present, otherwise recognise the layout."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvdeploy.contract import Contract, InputSpec, OutputSpec
from cvdeploy.errors import ConfigError, ModelError


@dataclass
class ContractHints:
    """What the user told us about the model (flags or a YAML file); ``None`` means unknown."""

    imgsz: tuple[int, int] | None = None
    classes: list[str] | None = None
    task: str | None = None
    format: str | None = None
    input: dict[str, Any] = field(default_factory=dict)  # any InputSpec field
    output: dict[str, Any] = field(default_factory=dict)  # any OutputSpec field


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
    """The ``names``/``stride``/``imgsz``/``task`` metadata an Ultralytics export writes, parsed."""
    props = {p.key: p.value for p in model.metadata_props}
    if "names" not in props or "stride" not in props:
        return None
    meta: dict[str, Any] = {}
    for key in ("names", "stride", "imgsz", "task", "batch", "author", "version", "args"):
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
    if len(out_dims) != 1:
        return "raw", None, f"the model has {len(out_dims)} outputs (YOLO detectors have one)"
    d = out_dims[0]
    if len(d) == 2 and isinstance(d[1], int):
        return "classify", d[1], f"output (batch, {d[1]}) looks like class scores"
    if len(d) == 3:
        a = d[1] if isinstance(d[1], int) else None
        b = d[2] if isinstance(d[2], int) else None
        if num_classes is not None:
            if a == 4 + num_classes:
                return "yolov8", num_classes, f"output (batch, 4+{num_classes}, N)"
            if b == 5 + num_classes:
                return "yolov5", num_classes, f"output (batch, N, 5+{num_classes})"
        if a is not None and (b is None or a < b) and a >= 5:
            return "yolov8", a - 4, f"output (batch, {a}, {b}) read as yolov8 (4 box + {a - 4} class rows)"
        if b is not None and (a is None or b < a) and b >= 6:
            return (
                "yolov5",
                b - 5,
                f"output (batch, {a}, {b}) read as yolov5 (4 box + objectness + {b - 5} classes)",
            )
    return "raw", None, f"output shape {d} is not a layout cvdeploy can decode"


def contract_from_onnx(model: Any, hints: ContractHints) -> tuple[Contract, list[str]]:
    """Fill a contract from Ultralytics metadata, the graph's shapes and the user's hints.

    Returns the contract and human-readable notes on what was inferred.
    """
    notes: list[str] = []
    ins, outs = graph_io(model)
    if len(ins) != 1:
        notes.append(f"model has {len(ins)} inputs; imported as raw (tensors in, tensors out)")
        return _raw_contract(ins, hints), notes
    in_name, in_dims = ins[0]
    meta = ultralytics_metadata(model)
    layout = "NCHW"
    if len(in_dims) == 4 and in_dims[3] == 3 and in_dims[1] != 3:
        layout = "NHWC"
    if len(in_dims) != 4:
        notes.append(f"input {in_name} has shape {in_dims}, not an image batch; imported as raw")
        return _raw_contract(ins, hints), notes
    hdim, wdim = (in_dims[2], in_dims[3]) if layout == "NCHW" else (in_dims[1], in_dims[2])
    dynamic_shape = not (isinstance(hdim, int) and isinstance(wdim, int))
    dynamic_batch = not isinstance(in_dims[0], int)
    if hints.imgsz:
        h, w = hints.imgsz
        if not dynamic_shape and (h, w) != (hdim, wdim):
            raise ConfigError(f"--imgsz {h}x{w} does not match the model's fixed input {hdim}x{wdim}")
    elif not dynamic_shape:
        h, w = int(hdim), int(wdim)
    elif meta and meta.get("imgsz"):
        sz = meta["imgsz"]
        h, w = (sz, sz) if isinstance(sz, int) else (int(sz[0]), int(sz[1]))
    else:
        h, w = 640, 640
        notes.append("the input size is dynamic and no --imgsz was given; using 640x640")

    classes = hints.classes
    task = hints.task
    stride = 32
    if meta:
        names = meta.get("names")
        if classes is None and isinstance(names, dict):
            classes = [str(names[k]) for k in sorted(names)]
        elif classes is None and isinstance(names, list):
            classes = [str(n) for n in names]
        stride = int(meta.get("stride", 32)) if isinstance(meta.get("stride"), int) else 32
        utask = meta.get("task")
        if task is None and utask in ("detect", "classify"):
            task = str(utask)
        notes.append(
            f"Ultralytics metadata found: task={utask}, {len(classes or [])} classes, stride={stride}"
        )
    fmt = hints.format
    nc = len(classes) if classes else None
    if fmt is None:
        fmt, nc_guess, reason = recognise_output([d for _, d in outs], nc)
        notes.append(f"output format: {fmt} ({reason})")
        if fmt == "raw":
            notes.append("imported as raw: tensors in, tensors out; pass --format/--task to decode it")
        if classes is None and nc_guess:
            classes = [f"class{i}" for i in range(nc_guess)]
            notes.append(f"no class names given; using class0..class{nc_guess - 1} (pass --names)")
    if task is None or (task == "detect" and fmt not in ("yolov8", "yolov5")):
        task = {"yolov8": "detect", "yolov5": "detect", "classify": "classify"}.get(fmt, "raw")
    if task == "classify" and fmt != "classify":
        fmt = "classify"
    inp: dict[str, Any] = {
        "name": in_name,
        "layout": layout,
        "height": h,
        "width": w,
        "dynamic_batch": dynamic_batch,
        "dynamic_shape": dynamic_shape,
        "stride": stride,
    }
    if task == "classify" and meta:
        inp["resize"] = "center_crop"
    inp.update(hints.input)
    out: dict[str, Any] = {"format": fmt}
    out.update(hints.output)
    try:
        contract = Contract(
            task=task, classes=classes or [], input=InputSpec(**inp), output=OutputSpec(**out)
        )
    except Exception as exc:
        raise ConfigError(f"invalid contract: {exc}") from None
    return contract, notes


def _raw_contract(ins: list[tuple[str, list[int | str]]], hints: ContractHints) -> Contract:
    name = ins[0][0] if ins else "input"
    inp: dict[str, Any] = {"name": name, "dynamic_batch": True}
    if hints.imgsz:
        inp["height"], inp["width"] = hints.imgsz
    inp.update(hints.input)
    return Contract(
        task="raw", classes=hints.classes or [], input=InputSpec(**inp), output=OutputSpec(format="raw")
    )
