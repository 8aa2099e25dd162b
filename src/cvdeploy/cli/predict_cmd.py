"""``cvdeploy predict``: run images through a bundle's pipeline; print, save or emit JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cvdeploy.cli.common import bundle_key_options, console, handle_errors

HELP = """Run images or folders of images through a bundle and show what it finds.

  cvdeploy predict model.cvd img1.jpg photos/ --save out/

  cvdeploy predict zoo:n street.jpg --json

--json prints one JSON document: a list with one object per image,
{"image": path, "detections": [{"box": [x1, y1, x2, y2], "confidence": c, "class_id": k, "class_name": name}]}
(classifiers give "classification" with the top classes instead).
"""


@bundle_key_options
@handle_errors
def predict(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    sources: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help="Artifact to run (default: the bundle's default)."
    ),
    save: Path = typer.Option(None, "--save", help="Folder to write annotated images into."),
    as_json: bool = typer.Option(False, "--json", help="Print results as one JSON document on stdout."),
    conf: float = typer.Option(
        None, "--conf", min=0.0, max=1.0, help="Confidence threshold (default: contract)."
    ),
    iou: float = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU threshold (default: contract)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per runtime call."),
    threads: int = typer.Option(None, "--threads", min=1, help="Intra-op threads for the runtime."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (falls back to CPU loudly)."),
) -> None:
    from rich.progress import track
    from rich.table import Table

    from cvdeploy.bundle import Bundle
    from cvdeploy.draw import annotate
    from cvdeploy.images import find_images, read_image
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.results import Classification, Detections
    from cvdeploy.runtimes import RuntimeOptions

    b = Bundle.load(bundle)
    files = find_images(sources)
    if not files:
        raise typer.Exit(_no_images(sources))
    pipe = Pipeline.from_bundle(b, artifact, RuntimeOptions(threads=threads, device=device))
    if conf is not None:
        pipe.contract.output.conf = conf
    if iou is not None:
        pipe.contract.output.iou = iou
    if save:
        save.mkdir(parents=True, exist_ok=True)
    docs = []
    table = Table(title=f"{b.name} · {pipe.artifact.name if pipe.artifact else ''}", title_justify="left")
    for col in ("image", "size", "found"):
        table.add_column(col)
    steps = range(0, len(files), batch)
    for start in track(steps, description="predicting", console=console, disable=as_json or len(files) < 4):
        chunk = files[start : start + batch]
        images = [read_image(f) for f in chunk]
        for f, img, res in zip(chunk, images, pipe.predict(images), strict=True):
            doc: dict[str, object] = {"image": str(f)}
            if isinstance(res, Detections):
                doc["detections"] = res.to_list()
                counts: dict[str, int] = {}
                for i in range(len(res)):
                    counts[res.name(i)] = counts.get(res.name(i), 0) + 1
                found = (
                    ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
                    or "nothing"
                )
            elif isinstance(res, Classification):
                doc["classification"] = res.to_list()
                found = ", ".join(f"{d['class_name']} {d['confidence']:.2f}" for d in res.to_list()[:3])
            else:
                outputs = [{"name": d["name"], "shape": d["shape"]} for d in res.to_list()]
                doc["outputs"] = outputs
                found = "; ".join(f"{d['name']} {d['shape']}" for d in outputs)
            docs.append(doc)
            if save:
                target = save / (f.stem + ".jpg")
                k = 1
                while target.exists() and k < 10000:
                    target = save / f"{f.stem}_{k}.jpg"
                    k += 1
                import cv2

                cv2.imwrite(str(target), annotate(img, res))
            table.add_row(str(f), f"{img.shape[1]}x{img.shape[0]}", found)
    if as_json:
        typer.echo(json.dumps(docs))
        return
    console.print(table)
    if save:
        console.print(f"[green]annotated images written to[/] {save}")


def _no_images(sources: list[Path]) -> int:
    from cvdeploy.cli.common import fail

    raise fail(
        f"no images found in {', '.join(str(s) for s in sources)} (looked for .jpg .png .bmp .webp .tif)"
    )
