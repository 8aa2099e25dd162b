"""``cvdeploy export``: any model into a bundle, every artifact parity-checked."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors, parse_imgsz, parse_list
from cvdeploy.cli.vocabulary import help_for

HELP = """Export a model into a bundle (NAME.cvd/) with a measured parity check per artifact.

SOURCE is an ONNX file (an Ultralytics export of any task — detect, segment, pose, obb,
classify, plain or nms=True — needs no flags), an Ultralytics .pt checkpoint or model .yaml, a
TorchScript file, python:pkg.module:factory (a zero-argument function returning a
torch.nn.Module; --weights loads a state dict into it), or an existing bundle / zoo:n (re-exported
from the PyTorch model the bundle keeps).

What the model states (Ultralytics metadata) is checked against its graph; a flag that
contradicts either is refused. What nothing states is assumed and printed as such ("assumed
preprocessing: ..."): give the real values with --preset (yolo, imagenet, picodet, raw) or
--contract FILE, a YAML file such as

  task: detect
  input: {resize: stretch, color: RGB, scale: 0.00392156862745098, mean: [0.485, 0.456, 0.406],
          std: [0.229, 0.224, 0.225]}
  output: {format: boxes_scores, conf: 0.3}

Bundles made from PyTorch (.pt, TorchScript, python:) keep the model in source/, so re-export,
pruning, distillation and QAT work on it later.

Examples:

  cvdeploy export model.onnx -o model.cvd

  cvdeploy export best.pt -o model.cvd --format onnx,openvino --imgsz 640 --dynamic-batch

  cvdeploy export resnet50.onnx -o resnet.cvd --preset imagenet

  cvdeploy export python:mypkg.models:build -o model.cvd --weights best_state.pt --imgsz 640 --names cat,dog
"""


@handle_errors
def export(
    source: str = typer.Argument(..., help="Model to export (see above)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help=help_for("--output", "the bundle, e.g. model.cvd")
    ),
    name: str = typer.Option(None, "--name", help="Bundle name (default: the output directory's stem)."),
    formats: str = typer.Option(
        "onnx",
        "--format",
        "-f",
        help="Comma-separated: onnx, openvino, tflite (PyTorch sources, litert-torch), tensorrt (NVIDIA GPU).",
    ),
    imgsz: str = typer.Option(None, "--imgsz", help=help_for("--imgsz")),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Allow any batch size."),
    dynamic_shape: bool = typer.Option(False, "--dynamic-shape", help="Allow any input height/width."),
    opset: int = typer.Option(17, "--opset", min=11, max=23, help="ONNX opset for PyTorch sources."),
    simplify: bool = typer.Option(
        True, "--simplify/--no-simplify", help="Simplify the ONNX graph with onnxslim."
    ),
    names: str = typer.Option(None, "--names", help="Class names: comma-separated, or a text/YAML file."),
    task: str = typer.Option(
        None, "--task", help="detect, segment, pose, obb, classify or raw (default: from the model)."
    ),
    output_format: str = typer.Option(
        None,
        "--output-format",
        help="How to decode outputs: yolov8, yolov5, end2end, boxes_scores, classify, raw (default: from the model).",
    ),
    preset: str = typer.Option(
        None, "--preset", help="Preprocessing/decoding of a model family: yolo, imagenet, picodet, raw."
    ),
    weights: Path = typer.Option(
        None, "--weights", help="python: factories: a state dict (torch.save(model.state_dict())) to load."
    ),
    contract: Path = typer.Option(
        None, "--contract", help="YAML file with contract fields (input:, output:, ...)."
    ),
    parity_images: list[Path] = typer.Option(
        None, "--parity-images", help="Images or folders for the parity check (default: bundled photographs)."
    ),
    profile_images: list[Path] = typer.Option(
        None,
        "--profile-images",
        help="Images or folders for the reference profile (profile.json) that "
        "monitor and doctor compare with (default: the parity images).",
    ),
    atol: float = typer.Option(1e-3, "--atol", help="Parity: absolute tolerance on outputs."),
    rtol: float = typer.Option(
        1e-4, "--rtol", help="Parity: tolerance relative to the largest output value."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --output."),
) -> None:
    from cvdeploy.export import ExportOptions
    from cvdeploy.export import export as run_export
    from cvdeploy.parity import Tolerance
    from cvdeploy.sources.hints import hints_from

    hints = hints_from(
        names=names, task=task, output_format=output_format, contract_file=contract, preset=preset
    )
    if profile_images:
        from cvdeploy.reference import profile_images as find_profile_images

        find_profile_images(profile_images, list)  # an empty or missing folder is refused before any work
    opts = ExportOptions(
        formats=parse_list(formats) or ["onnx"],
        imgsz=parse_imgsz(imgsz),
        dynamic_batch=dynamic_batch,
        dynamic_shape=dynamic_shape,
        opset=opset,
        simplify=simplify,
        name=name,
        overwrite=overwrite,
        hints=hints,
        parity_images=parity_images or None,
        tolerance=Tolerance(atol=atol, rtol=rtol),
        weights=weights,
        profile_images=profile_images or None,
    )
    with console.status("exporting…") as status:

        def step(msg: str) -> None:
            console.log(msg)
            status.update(msg)

        bundle = run_export(source, output, opts, step=step)
    from cvdeploy.cli.inspect_cmd import artifacts_table

    console.print(artifacts_table(bundle))
    console.print(
        f"[green]bundle written:[/] {bundle.path}  (inspect it with: cvdeploy inspect {bundle.path})"
    )
