"""Assemble a contract from what a model states, what its graph shows, and what the user said.

Three sources, in this order of authority, and every disagreement is refused with one line:

1. the user — ``--contract FILE``, ``--task``, ``--output-format``, ``--names``, ``--imgsz``, ``--preset``;
2. the model's own statement — Ultralytics metadata (task, names, stride, imgsz, end2end/nms,
   kpt_shape) or a cvdeploy-written contract;
3. the graph — output shapes, input size.

A flag that contradicts the model's metadata or its graph is refused, never ignored. Anything that
is neither stated nor given is *assumed*, and the import says so in a note that contains the word
"assumed", the values, and how to give the real ones (``--preset``, ``--contract``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cvdeploy.contract import BOX_TASKS, TASK_FORMATS, Contract, InputSpec, OutputSpec
from cvdeploy.errors import ConfigError, ModelError
from cvdeploy.sources import layout as lay
from cvdeploy.sources.presets import PRESETS, describe_input

YOLO_INPUT: dict[str, Any] = {"resize": "letterbox", "pad_value": 114, "color": "RGB", "scale": 1 / 255,
                              "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # fmt: skip


@dataclass
class ContractHints:
    """What the user told us about the model (flags or a YAML file); ``None`` means unknown."""

    imgsz: tuple[int, int] | None = None
    classes: list[str] | None = None
    task: str | None = None
    format: str | None = None
    preset: str | None = None
    input: dict[str, Any] = field(default_factory=dict)  # any InputSpec field
    output: dict[str, Any] = field(default_factory=dict)  # any OutputSpec field


@dataclass
class ModelFacts:
    """What a model says about itself (Ultralytics metadata, a checkpoint, a cvdeploy contract)."""

    origin: str  # "Ultralytics metadata", "the Ultralytics checkpoint", "cvdeploy metadata", ...
    task: str | None = None
    names: list[str] | None = None
    stride: int | None = None
    imgsz: tuple[int, int] | None = None
    end2end: bool | None = None  # None: not stated
    kpt_shape: list[int] | None = None
    contract: dict[str, Any] | None = None  # a whole cvdeploy contract

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ModelFacts | None:
        """Facts from parsed ONNX metadata props (``ultralytics_metadata``), or None when it has none."""
        if "cvdeploy.contract" in meta:
            try:
                contract = json.loads(str(meta["cvdeploy.contract"]))
            except ValueError:
                contract = None
            if isinstance(contract, dict):
                return cls("cvdeploy metadata", contract=contract)
        if "names" not in meta:
            return None
        names = meta.get("names")
        if isinstance(names, dict):
            names = [str(names[k]) for k in sorted(names)]
        elif isinstance(names, list | tuple):
            names = [str(n) for n in names]
        else:
            names = None
        sz = meta.get("imgsz")
        imgsz = (
            (sz, sz)
            if isinstance(sz, int)
            else (int(sz[0]), int(sz[1]))
            if isinstance(sz, list | tuple)
            else None
        )
        raw_args = meta.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        end2end: bool | None = None
        if isinstance(meta.get("end2end"), bool) or isinstance(args.get("nms"), bool):
            end2end = bool(meta.get("end2end") is True or args.get("nms") is True)
        kpt = meta.get("kpt_shape")
        author = str(meta.get("author", ""))
        return cls(
            "cvdeploy metadata" if author == "cvdeploy" else "Ultralytics metadata",
            task=str(meta["task"]) if meta.get("task") else None,
            names=names,
            stride=int(meta["stride"]) if isinstance(meta.get("stride"), int) else None,
            imgsz=imgsz,
            end2end=end2end,
            kpt_shape=[int(v) for v in kpt] if isinstance(kpt, list | tuple) and len(kpt) == 2 else None,
        )


@dataclass
class GraphInput:
    """The model's image input as the graph declares it."""

    name: str = "images"
    layout: str = "NCHW"
    height: int | str | None = None
    width: int | str | None = None
    batch: int | str | None = None
    dtype: str = "float32"

    @property
    def dynamic_shape(self) -> bool:
        return not (isinstance(self.height, int) and isinstance(self.width, int))

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.batch, int)


def assemble(
    graph_in: GraphInput,
    outputs: Sequence[lay.Shape],
    facts: ModelFacts | None,
    hints: ContractHints,
    what: str = "the model",
) -> tuple[Contract, list[str]]:
    """The contract for a model, and notes on what was read, recognised and assumed."""
    notes: list[str] = []
    preset = PRESETS[hints.preset] if hints.preset else None
    if facts is not None and facts.contract is not None:
        return _from_saved_contract(graph_in, outputs, facts, hints, what, notes)
    task, fmt, nc, kpt_shape = _task_and_format(outputs, facts, hints, preset, what, notes)
    classes = hints.classes or (facts.names if facts else None)
    if classes is None and nc is None and task in BOX_TASKS:
        raise ConfigError(f"{what}'s output {lay.describe(outputs)} does not say how many classes it has (end-to-end "
                          "rows carry class ids); give the class names with --names")  # fmt: skip
    if classes is None and nc:
        classes = [f"class{i}" for i in range(nc)]
        notes.append(f"no class names given; using class0..class{nc - 1} (pass --names)")
    elif classes is not None and nc is not None and task != "raw" and len(classes) != nc:
        given = "--names gives" if hints.classes else f"{facts.origin if facts else 'the model'} lists"
        raise ConfigError(f"{given} {len(classes)} class names but {what}'s output has {nc} classes "
                          f"({lay.describe(outputs)}); give exactly {nc} names")  # fmt: skip
    inp = _input(graph_in, facts, hints, preset, task, notes)
    out: dict[str, Any] = {"format": fmt, **(preset.output if preset else {}), **hints.output}
    if kpt_shape:
        out["kpt_shape"] = kpt_shape
    return _make(task, classes or [], inp, out), notes


def _task_and_format(
    outputs: Sequence[lay.Shape], facts: ModelFacts | None, hints: ContractHints, preset: Any, what: str,
    notes: list[str],
) -> tuple[str, str, int | None, list[int] | None]:  # fmt: skip
    """Decide task and output format; every claim is verified against the output shapes."""
    names = hints.classes or (facts.names if facts else None)
    nc = len(names) if names else None
    kpt_shape = hints.output.get("kpt_shape") or (facts.kpt_shape if facts else None)
    want_task = hints.task or (preset.task if preset else None)
    want_fmt = hints.format or (preset.format if preset else None)
    for flag, value in (("--task", want_task), ("--output-format", want_fmt)):
        if value is not None and value not in (
            TASK_FORMATS if flag == "--task" else sum(TASK_FORMATS.values(), ())
        ):
            raise ConfigError(f"{flag} {value!r} is not known")
    if want_task and want_fmt and want_fmt not in TASK_FORMATS[want_task]:
        raise ConfigError(f"--task {want_task} and --output-format {want_fmt} contradict each other: a {want_task} "
                          f"model's output is {' or '.join(TASK_FORMATS[want_task])}")  # fmt: skip
    if facts is not None and facts.task:
        task = facts.task
        if task not in TASK_FORMATS or task == "raw":
            raise ModelError(f"{what}: its {facts.origin} says task={task!r}, which cvdeploy cannot decode; export it "
                             "with --task raw to serve its tensors")  # fmt: skip
        if want_task and want_task != task:
            raise ConfigError(
                f"--task {want_task} contradicts {what}'s {facts.origin} (task={task}); drop the flag"
            )
        if task == "classify":
            fmt = "classify"
        elif facts.end2end is None:  # older exports do not say: the shapes decide between the two
            fmt = "yolov8" if lay.verify(outputs, task, "yolov8", nc, kpt_shape) is None else "end2end"
            if fmt == "end2end":
                notes.append(f"the {facts.origin} does not say end2end/nms; the output {lay.describe(outputs)} "
                             "is the end-to-end layout (NMS inside the model)")  # fmt: skip
        else:
            fmt = "end2end" if facts.end2end else "yolov8"
        if want_fmt and want_fmt != fmt:
            raise ConfigError(f"--output-format {want_fmt} contradicts {what}'s {facts.origin} (task={task}, "
                              f"{'end-to-end' if fmt == 'end2end' else fmt} output); drop the flag")  # fmt: skip
        problem = lay.verify(outputs, task, fmt, nc, kpt_shape)
        if problem:
            stated = f"task={task}, {nc} classes" + (", end2end" if fmt == "end2end" else "")
            stated += f", kpt_shape={kpt_shape}" if kpt_shape else ""
            raise ModelError(f"{what}: its {facts.origin} ({stated}) disagrees with the graph: {problem}; "
                             "re-export the model or give its contract with --contract")  # fmt: skip
        notes.append(f"{facts.origin}: task={task}, {nc} classes, output {fmt}"
                     + (f", keypoints {kpt_shape}" if kpt_shape else ""))  # fmt: skip
        return task, fmt, nc if nc is not None else _count(outputs, task, fmt, kpt_shape), kpt_shape
    if want_task == "raw" or want_fmt == "raw":
        notes.append("imported as raw (tensors in, tensors out), as asked")
        return "raw", "raw", None, None
    found = lay.recognise(outputs, nc)
    if want_fmt is None and (want_task is None or (found is not None and found.task == want_task)):
        if found is None:
            if want_task:
                raise ConfigError(f"--task {want_task}: {what}'s outputs {lay.describe(outputs)} are not a layout "
                                  "cvdeploy decodes; give --output-format or --contract, or import it as raw")  # fmt: skip
            notes.append(f"output {lay.describe(outputs)} is not a layout cvdeploy decodes; imported as raw "
                         "(tensors in, tensors out) — pass --task/--output-format or --contract to decode it")  # fmt: skip
            return "raw", "raw", None, None
        notes.append(f"output format: {found.format} ({found.reason})")
        return found.task, found.format, found.num_classes, None
    task = want_task or (found.task if found and want_fmt in TASK_FORMATS.get(found.task, ()) else "")
    task = task or next(t for t, fmts in TASK_FORMATS.items() if want_fmt in fmts)
    fmt = want_fmt or (
        found.format if found and found.format in TASK_FORMATS[task] else TASK_FORMATS[task][0]
    )
    if task == "pose" and not kpt_shape:
        raise ConfigError(
            "--task pose needs the keypoint shape: give output: {kpt_shape: [17, 3]} in --contract"
        )
    problem = lay.verify(outputs, task, fmt, nc, kpt_shape)
    if problem:
        asked = " ".join(f"{f} {v}" for f, v in (("--task", hints.task), ("--output-format", hints.format),
                                                   ("--preset", hints.preset)) if v)  # fmt: skip
        raise ConfigError(f"{asked}: {what}'s outputs do not fit: {problem}")
    return task, fmt, nc if nc is not None else _count(outputs, task, fmt, kpt_shape), kpt_shape


def _count(outputs: Sequence[lay.Shape], task: str, fmt: str, kpt_shape: Sequence[int] | None) -> int | None:
    """Number of classes read from the output shape (``None`` where the shape does not say: end2end)."""
    extra = lay.extra_values(task, kpt_shape, outputs) or 0
    first = outputs[0]
    if fmt == "yolov8" and isinstance(first[1], int):
        return first[1] - 4 - extra
    if fmt == "yolov5" and isinstance(first[2], int):
        return first[2] - 5 - extra
    if fmt == "classify" and isinstance(first[1], int):
        return first[1]
    if fmt == "boxes_scores":
        found = lay.recognise(outputs, None)
        return found.num_classes if found else None
    return None


def _input(
    g: GraphInput, facts: ModelFacts | None, hints: ContractHints, preset: Any, task: str, notes: list[str]
) -> dict[str, Any]:
    """Input spec fields: graph size > --imgsz > metadata > preset > 640; preprocessing stated or assumed."""
    if hints.imgsz:
        h, w = hints.imgsz
        if not g.dynamic_shape and (h, w) != (g.height, g.width):
            raise ConfigError(f"--imgsz {h}x{w} does not match the model's fixed input {g.height}x{g.width}")
    elif not g.dynamic_shape:
        h, w = int(g.height), int(g.width)  # type: ignore[arg-type]
    elif facts is not None and facts.imgsz:
        h, w = facts.imgsz
    elif preset is not None and "height" in preset.input:
        h, w = preset.input["height"], preset.input["width"]
    else:
        h, w = 640, 640
        notes.append("the input size is dynamic and no --imgsz was given; assumed 640x640")
    inp: dict[str, Any] = {"name": g.name, "layout": g.layout, "height": h, "width": w,
                           "dynamic_batch": g.dynamic_batch, "dynamic_shape": g.dynamic_shape}  # fmt: skip
    if g.dtype in ("float16", "uint8"):
        inp["dtype"] = g.dtype
    if facts is not None and facts.stride:
        inp["stride"] = facts.stride
    if facts is not None:  # an Ultralytics model: its preprocessing is known, not guessed
        inp.update(YOLO_INPUT)
        if task == "classify":
            inp["resize"] = "center_crop"
    elif preset is not None:
        inp.update({k: v for k, v in preset.input.items() if k not in ("height", "width")})
        notes.append(f"preprocessing from --preset {preset.name}: {preset.summary}")
    elif not set(hints.input) >= {"resize", "color", "scale", "mean", "std"}:
        family = "imagenet" if task == "classify" else ("yolo" if task in BOX_TASKS else "raw")
        base = PRESETS[family].input if family != "raw" else YOLO_INPUT
        inp.update({k: v for k, v in base.items() if k not in ("height", "width")})
        why = {"imagenet": "a classifier without metadata: ImageNet normalisation, as torchvision/timm use",
               "yolo": "a YOLO-style output without metadata: Ultralytics preprocessing",
               "raw": "no metadata and an output cvdeploy does not decode"}[family]  # fmt: skip
        shown = InputSpec(**{**inp, **hints.input})
        notes.append(f"assumed preprocessing ({why}): {describe_input(shown)}; if the model was trained otherwise, "
                     "re-export with --preset imagenet|picodet|yolo or --contract FILE (input: resize, color, scale, "
                     "mean, std)")  # fmt: skip
    inp.update(hints.input)
    if hints.imgsz:
        inp["height"], inp["width"] = hints.imgsz
    return inp


def _from_saved_contract(
    g: GraphInput, outputs: Sequence[lay.Shape], facts: ModelFacts, hints: ContractHints, what: str,
    notes: list[str],
) -> tuple[Contract, list[str]]:  # fmt: skip
    """A cvdeploy-exported ONNX carries its whole contract: re-import it exactly (flags may override)."""
    saved = dict(facts.contract or {})
    inp = {**saved.get("input", {}), **hints.input}
    inp.update({"name": g.name, "dynamic_batch": g.dynamic_batch, "dynamic_shape": g.dynamic_shape})
    if hints.imgsz:
        inp["height"], inp["width"] = hints.imgsz
    out = {**saved.get("output", {}), **hints.output}
    task = saved.get("task", "detect")
    classes = hints.classes or list(saved.get("classes", []))
    for flag, given, stated in (
        ("--task", hints.task, task),
        ("--output-format", hints.format, out.get("format")),
    ):
        if given and given != stated:
            raise ConfigError(
                f"{flag} {given} contradicts {what}'s cvdeploy metadata ({stated}); drop the flag"
            )
    problem = lay.verify(
        outputs, task, out.get("format", "yolov8"), len(classes) or None, out.get("kpt_shape")
    )
    if problem:
        raise ModelError(f"{what}: its cvdeploy metadata (task={task}, {len(classes)} classes) disagrees with the "
                         f"graph: {problem}")  # fmt: skip
    notes.append(
        f"cvdeploy metadata: the contract it was exported with (task={task}, {len(classes)} classes)"
    )
    return _make(task, classes, inp, out), notes


def _make(task: str, classes: list[str], inp: dict[str, Any], out: dict[str, Any]) -> Contract:
    try:
        return Contract(task=task, classes=classes, input=InputSpec(**inp), output=OutputSpec(**out))
    except Exception as exc:
        raise ConfigError(
            f"invalid contract: {str(exc).splitlines()[-1 if len(str(exc).splitlines()) < 3 else 2]}"
        ) from None
