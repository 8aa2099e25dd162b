"""``cvdeploy val``: accuracy of an artifact on a labelled dataset, or its fidelity to another artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cvdeploy.cli.common import bundle_key_options, console, handle_errors
from cvdeploy.cli.vocabulary import help_for

HELP = """Measure how accurate an artifact of a bundle is: COCO mAP (mAP50-95,
mAP50, per class) for detectors, top-1/top-5 for classifiers. Segmentation,
pose and oriented-box models get their mask, keypoint (OKS) or rotated-box mAP
besides the box mAP. Every mAP and top-k figure is in points (0-100), as
everywhere in cvdeploy.

Images go through the bundle's own pipeline (the production preprocessing)
at the standard evaluation threshold, conf 0.001, max_det 300.

DATA is a YOLO data.yaml (Ultralytics layout), a COCO json (add --images DIR
when its image folder cannot be guessed) or a folder holding one.
Segment/pose/obb models take a YOLO data.yaml (polygons, keypoints with
kpt_shape, or 4 corners in the label files). Classifiers take a folder
root/<class_name>/*.jpg (folders 0, 1, ... when the model has no names).

--against ARTIFACT needs no labels: the other artifact's detections serve as
labels, and DATA may be a plain folder of images. Use it to see what
quantization or pruning cost.

Examples:

  cvdeploy val model.cvd --data shapes/data.yaml

  cvdeploy val model.cvd --data instances.json --images val2017/ --json

  cvdeploy val model.cvd --data photos/ -a onnx-int8 --against onnx-fp32

  cvdeploy val model.cvd --data shapes/data.yaml -a openvino-int8 --write

--json prints one JSON object: mAP50-95, mAP50, per_class, images, artifact,
dataset, seconds, "unit": "points" (segment/pose/obb add mask_/pose_/rbox_
mAP50-95, mAP50 and per_class; classifiers: top1, top5; --against adds
max_abs_diff and box_agreement, a share 0-1).
"""


@bundle_key_options
@handle_errors
def val(
    bundle: str = typer.Argument(
        ..., help="Bundle folder, zoo:n / zoo:s, or a model file (a cached bundle)."
    ),
    data: Path = typer.Option(
        ..., "--data", "-d", help=help_for("--data", "with --against any folder of images will do")
    ),
    images: Path = typer.Option(
        None, "--images", help=help_for("--images", "the image folder of a COCO json (default: guessed)")
    ),
    split: str = typer.Option("val", "--split", help="Dataset split: val, test or train."),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help=help_for("--artifact", "to score (default: the bundle's default)")
    ),
    against: str = typer.Option(
        None, "--against", help="Score against this artifact's outputs instead of labels."
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per runtime call."),
    threads: int = typer.Option(None, "--threads", min=1, help=help_for("--threads", "for the runtime")),
    device: str = typer.Option("cpu", "--device", help=help_for("--device", "falls back to CPU loudly")),
    conf: float = typer.Option(
        0.001, "--conf", min=0.0, max=1.0, help="Confidence threshold of scored detections."
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Score only the first N images."),
    as_json: bool = typer.Option(
        False, "--json", help=help_for("--json", "the result as one JSON object on stdout")
    ),
    write: bool = typer.Option(
        False, "--write", help="Record the result in the artifact's metrics in the manifest."
    ),
) -> None:
    from cvdeploy.evaluate.runner import is_zoo_bundle
    from cvdeploy.sources.cache import open_model

    b, note = open_model(bundle)
    if note:
        from cvdeploy.cli.common import err_console

        err_console.print(note, highlight=False, soft_wrap=True)
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
    shown = in_points(result)
    if as_json:
        typer.echo(json.dumps(shown))
        return
    _print(shown)
    if write:
        where = "the bundled zoo model inside the cvdeploy package" if is_zoo_bundle(b) else str(b.path)
        console.print(f"[green]recorded in the manifest of[/] {where} (artifact {result['artifact']})")


#: Keys of a result that are accuracies: shown (tables, --json) in points 0-100, stored as fractions.
ACCURACY_KEYS = ("mAP", "top1", "top5")


def in_points(result: Any) -> Any:
    """A copy of a validation result with every mAP/top-k value in points (0-100) and ``"unit": "points"``."""

    def conv(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: conv(x, str(k)) for k, x in v.items()}
        if isinstance(v, float) and any(a in key for a in ACCURACY_KEYS) and "agreement" not in key:
            return round(100.0 * v, 3)
        return v

    out = conv(result)
    if isinstance(out, dict):
        out["unit"] = "points"
    return out


def _fmt(v: Any, digits: int = 1) -> str:
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
            line = (f"top-1 agreement {_fmt(r['top1_agreement'], 3)}  top-5 agreement "
                    f"{_fmt(r['top5_agreement'], 3)}")  # fmt: skip
        else:
            line = f"top-1 {_fmt(r['top1'])}  top-5 {_fmt(r['top5'])} (points)"
    else:
        extra = next((k.removesuffix("_mAP50-95") for k in r if k.endswith("_mAP50-95")), None)
        cols = ["class", "instances", "mAP50", "mAP50-95"]
        if extra:
            cols += [f"{extra} mAP50", f"{extra} mAP50-95"]
        for col in cols:
            table.add_column(col, justify="left" if col == "class" else "right")
        for name, v in r["per_class"].items():
            row = [name, str(v["instances"]), _fmt(v["mAP50"]), _fmt(v["mAP50-95"])]
            if extra:
                t = r.get(f"{extra}_per_class", {}).get(name, {})
                row += [_fmt(t.get("mAP50")), _fmt(t.get("mAP50-95"))]
            table.add_row(*row)
        table.add_section()
        total = r.get("instances", r.get("reference_detections", 0))
        last = [f"[bold]{_fmt(r['mAP50'])}[/]", f"[bold]{_fmt(r['mAP50-95'])}[/]"]
        if extra:
            last += [f"[bold]{_fmt(r[f'{extra}_mAP50'])}[/]", f"[bold]{_fmt(r[f'{extra}_mAP50-95'])}[/]"]
        table.add_row("[bold]all[/]", str(total), *last)
        table.caption = "mAP in points (0-100)"
        if r["per_class"]:
            console.print(table)
        line = f"mAP50-95 {_fmt(r['mAP50-95'])}  mAP50 {_fmt(r['mAP50'])}"
        if extra:
            line += f"  {extra} mAP50-95 {_fmt(r[f'{extra}_mAP50-95'])}  {extra} mAP50 {_fmt(r[f'{extra}_mAP50'])}"
        line += " (points)"
        if "against" in r:
            line += f"  box agreement {_fmt(r['box_agreement'], 3)}"
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
