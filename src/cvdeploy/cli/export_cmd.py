"""``cvdeploy export``: any model into a bundle, every artifact parity-checked."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors, parse_imgsz, parse_list

HELP = """Export a model into a bundle (NAME.cvd/) with a measured parity check per artifact.

SOURCE is an ONNX file (an Ultralytics export needs no flags), an Ultralytics .pt checkpoint or
model .yaml, a TorchScript file, python:pkg.module:factory (a zero-argument function returning a
torch.nn.Module), or an existing bundle / zoo:n.

Examples:

  cvdeploy export model.onnx -o model.cvd

  cvdeploy export best.pt -o model.cvd --format onnx,openvino --imgsz 640 --dynamic-batch

  cvdeploy export python:mypkg.models:build -o model.cvd --imgsz 640 --names cat,dog
"""


@handle_errors
def export(
    source: str = typer.Argument(..., help="Model to export (see above)."),
    output: Path = typer.Option(..., "--output", "-o", help="Bundle directory to create, e.g. model.cvd."),
    name: str = typer.Option(None, "--name", help="Bundle name (default: the output directory's stem)."),
    formats: str = typer.Option("onnx", "--format", "-f", help="Comma-separated: onnx, openvino."),
    imgsz: str = typer.Option(None, "--imgsz", help="Input size: 640 or height,width."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Allow any batch size."),
    dynamic_shape: bool = typer.Option(False, "--dynamic-shape", help="Allow any input height/width."),
    opset: int = typer.Option(17, "--opset", min=11, max=23, help="ONNX opset for PyTorch sources."),
    simplify: bool = typer.Option(
        True, "--simplify/--no-simplify", help="Simplify the ONNX graph with onnxslim."
    ),
    names: str = typer.Option(None, "--names", help="Class names: comma-separated, or a text/YAML file."),
    task: str = typer.Option(None, "--task", help="detect, classify or raw (default: inferred)."),
    output_format: str = typer.Option(
        None,
        "--output-format",
        help="How to decode outputs: yolov8, yolov5, classify, raw (default: inferred).",
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

    hints = hints_from(names=names, task=task, output_format=output_format, contract_file=contract)
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
