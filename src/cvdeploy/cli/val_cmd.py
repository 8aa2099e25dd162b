"""``cvdeploy val``: accuracy of an artifact on a labelled dataset, or its fidelity to another artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cvdeploy.cli.common import bundle_key_options, console, handle_errors

HELP = """Measure how accurate an artifact of a bundle is: COCO mAP (mAP50-95,
mAP50, per class) for detectors, top-1/top-5 for classifiers.

Images go through the bundle's own pipeline (the production preprocessing)
at the standard evaluation threshold, conf 0.001, max_det 300.

DATA is a YOLO data.yaml (Ultralytics layout), a COCO json (add --images DIR
when its image folder cannot be guessed) or a folder holding one.
Classifiers take a folder root/<class_name>/*.jpg.

--against ARTIFACT needs no labels: the other artifact's detections serve as
labels, and DATA may be a plain folder of images. Use it to see what
quantization or pruning cost.

Examples:

  cvdeploy val model.cvd --data shapes/data.yaml

  cvdeploy val model.cvd --data instances.json --images val2017/ --json

  cvdeploy val model.cvd --data photos/ -a onnx-int8 --against onnx-fp32

  cvdeploy val model.cvd --data shapes/data.yaml -a openvino-int8 --write

--json prints one JSON object: mAP50-95, mAP50, per_class, images, artifact,
dataset, seconds (classifiers: top1, top5; --against adds max_abs_diff and
box_agreement).
"""


@bundle_key_options
@handle_errors
def val(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    data: Path = typer.Option(
        ..., "--data", "-d", help="data.yaml, COCO json, image folder (--against) or a folder."
    ),
    images: Path = typer.Option(None, "--images", help="Image folder of a COCO json (default: guessed)."),
    split: str = typer.Option("val", "--split", help="Dataset split: val, test or train."),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help="Artifact to score (default: the bundle's default)."
    ),
    against: str = typer.Option(
        None, "--against", help="Score against this artifact's outputs instead of labels."
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per runtime call."),
    threads: int = typer.Option(None, "--threads", min=1, help="Intra-op threads for the runtime."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (falls back to CPU loudly)."),
    conf: float = typer.Option(
        0.001, "--conf", min=0.0, max=1.0, help="Confidence threshold of scored detections."
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Score only the first N images."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
    write: bool = typer.Option(
        False, "--write", help="Record the result in the artifact's metrics in the manifest."
    ),
) -> None:
    from cvdeploy.bundle import Bundle
    from cvdeploy.evaluate.runner import is_zoo_bundle

    b = Bundle.load(bundle)
    common: dict[str, Any] = {"split": split, "images": images, "batch": batch, "threads": threads,
                              "device": device, "conf": conf, "limit": limit, "progress": not as_json}  # fmt: skip
    if against:
        from cvdeploy.evaluate.fidelity import fidelity, write_fidelity

        b.artifact(against)  # an unknown name fails before any work
        result = fidelity(b, data, artifact, against, **common)
        if write:
            write_fidelity(b, result)
    else:
        from cvdeploy.evaluate.validate import validate, write_metrics

        result = validate(b, data, artifact, **common)
        if write:
            write_metrics(b, result)
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print(result)
    if write:
        where = "the bundled zoo model inside the cvdeploy package" if is_zoo_bundle(b) else str(b.path)
        console.print(f"[green]recorded in the manifest of[/] {where} (artifact {result['artifact']})")


def _fmt(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _print(r: dict[str, Any]) -> None:
    from rich.table import Table

    for w in r.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")
    title = f"{r['bundle']} · {r['artifact']}" + (f" vs {r['against']}" if "against" in r else "")
    table = Table(title=title, title_justify="left")
    if r["task"] == "classify":
        for col in ("class", "images", "top-1"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for name, v in r.get("per_class", {}).items():
            table.add_row(name, str(v["images"]), _fmt(v["top1"]))
        if r.get("per_class"):
            console.print(table)
        if "against" in r:
            line = f"top-1 agreement {_fmt(r['top1_agreement'])}  top-5 agreement {_fmt(r['top5_agreement'])}"
        else:
            line = f"top-1 {_fmt(r['top1'])}  top-5 {_fmt(r['top5'])}"
    else:
        for col in ("class", "instances", "mAP50", "mAP50-95"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for name, v in r["per_class"].items():
            table.add_row(name, str(v["instances"]), _fmt(v["mAP50"]), _fmt(v["mAP50-95"]))
        table.add_section()
        total = r.get("instances", r.get("reference_detections", 0))
        table.add_row(
            "[bold]all[/]", str(total), f"[bold]{_fmt(r['mAP50'])}[/]", f"[bold]{_fmt(r['mAP50-95'])}[/]"
        )
        if r["per_class"]:
            console.print(table)
        line = f"mAP50-95 {_fmt(r['mAP50-95'])}  mAP50 {_fmt(r['mAP50'])}"
        if "against" in r:
            line += f"  box agreement {_fmt(r['box_agreement'])}"
            if r.get("reference_detections") == 0:
                console.print(
                    f"[yellow]note:[/] {r['against']} finds nothing above conf {r['reference_conf']} on these "
                    "images, so there is nothing to agree on; only the raw outputs are compared"
                )
    if "against" in r:
        line += f"  max |diff| {r['max_abs_diff']:.3g}" if r.get("max_abs_diff") is not None else ""
    console.print(f"{line}  ·  {r['images']} images from {r['dataset']} in {r['seconds']:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``cvdeploy val`` to the app."""
    app.command("val", help=HELP)(val)
