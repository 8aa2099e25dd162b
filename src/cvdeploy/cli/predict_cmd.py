"""``cvdeploy predict``: run images and videos through a bundle's pipeline; print, save or emit JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from cvdeploy.cli.common import bundle_key_options, console, err_console, handle_errors
from cvdeploy.cli.vocabulary import help_for

HELP = """Run images, folders of images or videos through a model and show what it finds.

MODEL is a bundle folder, zoo:n / zoo:s, or a model file (.onnx, Ultralytics .pt, TorchScript):
a file is exported once into a cached bundle (with its parity check) and reused while it is
unchanged; the command says which.

  cvdeploy predict model.cvd img1.jpg photos/ --save out/

  cvdeploy predict yolov8n-seg.onnx street.jpg --json

  cvdeploy predict zoo:n traffic.mp4 --vid-stride 5

Files that cannot be read are skipped with a warning and counted (exit 2 only when nothing was
readable). URLs are refused: cvdeploy never downloads.

--json prints one JSON document: a list with one object per image (or video frame),
{"image": path, ["frame": k,] "detections": [{"box": [x1, y1, x2, y2], "confidence": c,
"class_id": k, "class_name": name}]}, all in original-image pixels. Segmentation adds "polygon"
[[x, y], ...]; pose "keypoints" [[x, y, visibility], ...]; oriented boxes "rbox" [cx, cy, w, h,
angle_radians] and "polygon" (4 corners). Classifiers give "classification" (top classes). Raw
models give "outputs" (name, shape, dtype, data) and "geometry" {"original": [h, w],
"scale": [sx, sy], "pad": [px, py]}: input pixel = original pixel · scale + pad.

--save writes annotated images (boxes, masks, keypoints, rotated boxes, top classes); for a raw
model it writes each image's output tensors and geometry as .npz instead (there is nothing to draw).
"""


@bundle_key_options
@handle_errors
def predict(
    model: str = typer.Argument(..., help="Bundle folder, zoo:n / zoo:s, or a model file (.onnx, .pt, ...)."),
    sources: list[str] = typer.Argument(
        ..., help="Image or video files and/or folders (searched recursively)."
    ),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help=help_for("--artifact", "to run (default: the bundle's default)")
    ),
    save: Path = typer.Option(
        None, "--save", help="Folder to write annotated images (raw models: .npz) into."
    ),
    as_json: bool = typer.Option(
        False, "--json", help=help_for("--json", "results as one JSON document on stdout")
    ),
    conf: float = typer.Option(
        None, "--conf", min=0.0, max=1.0, help="Confidence threshold (default: contract)."
    ),
    iou: float = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU threshold (default: contract)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per runtime call."),
    vid_stride: int = typer.Option(1, "--vid-stride", min=1, help="Videos: run every N-th frame."),
    threads: int = typer.Option(None, "--threads", min=1, help=help_for("--threads", "for the runtime")),
    device: str = typer.Option("cpu", "--device", help=help_for("--device", "falls back to CPU loudly")),
) -> None:
    from rich.table import Table

    from cvdeploy.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, find_images
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions
    from cvdeploy.sources.cache import open_model

    files = find_images(sources, suffixes=IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not files:
        raise typer.Exit(_no_images(sources))
    with console.status("preparing the model…", spinner="dots") if not as_json else _null():
        b, note = open_model(model, say=lambda m: None)
    if note:
        err_console.print(note, highlight=False, soft_wrap=True)
    # --batch 1: one image per call, so an engine that compiles shapes compiles for that (OpenVINO)
    pipe = Pipeline.from_bundle(
        b, artifact, RuntimeOptions(threads=threads, device=device, batch=1 if batch == 1 else None)
    )
    if conf is not None:
        pipe.contract.output.conf = conf
    if iou is not None:
        pipe.contract.output.iou = iou
    if save:
        save.mkdir(parents=True, exist_ok=True)
    docs: list[dict[str, Any]] = []
    table = Table(title=f"{b.name} · {pipe.artifact.name if pipe.artifact else ''}", title_justify="left")
    for col in ("image", "size", "found"):
        table.add_column(col)
    skipped: list[str] = []
    items = _frames(files, vid_stride, skipped)
    done = 0
    with _progress(len(files), as_json) as advance:
        while True:
            chunk = [it for _, it in zip(range(batch), items, strict=False)]
            if not chunk:
                break
            for (label, frame, img), res in zip(chunk, pipe.predict([c[2] for c in chunk]), strict=True):
                doc, found = _document(label, frame, res)
                docs.append(doc)
                if save:
                    _save(save, label, frame, img, res)
                table.add_row(label + (f" #{frame}" if frame is not None else ""), f"{img.shape[1]}x{img.shape[0]}",
                              found)  # fmt: skip
                done += 1
            advance(len(chunk))
    if not done:
        from cvdeploy.cli.common import fail

        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        raise fail(f"nothing could be read: {skipped[0]}{more}")
    for why in skipped:
        err_console.print(f"[yellow]warning:[/] skipped {why}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(docs))
    else:
        console.print(table)
    if skipped:
        err_console.print(
            f"[yellow]{len(skipped)} of {len(files)} file(s) could not be read and were skipped[/]"
        )
    if save and not as_json:
        what = "output tensors (.npz)" if b.contract.task == "raw" else "annotated images"
        console.print(f"[green]{what} written to[/] {save}")


def _frames(files: list[Path], stride: int, skipped: list[str]) -> Iterator[tuple[str, int | None, Any]]:
    """``(label, frame index or None, BGR image)`` for every readable image and video frame; the
    unreadable ones are appended to ``skipped`` (with why) instead of stopping the run."""
    from cvdeploy.errors import InputError
    from cvdeploy.images import VIDEO_SUFFIXES, iter_frames, read_image

    for f in files:
        try:
            if f.suffix.lower() in VIDEO_SUFFIXES:
                for k, frame in iter_frames(f, stride):
                    yield str(f), k, frame
            else:
                yield str(f), None, read_image(f)
        except InputError as exc:
            skipped.append(str(exc))


def _document(label: str, frame: int | None, res: Any) -> tuple[dict[str, Any], str]:
    from cvdeploy.results import Classification, Detections

    doc: dict[str, Any] = {"image": label}
    if frame is not None:
        doc["frame"] = frame
    if isinstance(res, Detections):
        doc["detections"] = res.to_list()
        counts: dict[str, int] = {}
        for i in range(len(res)):
            counts[res.name(i)] = counts.get(res.name(i), 0) + 1
        found = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "nothing"
    elif isinstance(res, Classification):
        doc["classification"] = res.to_list()
        found = ", ".join(f"{d['class_name']} {d['confidence']:.2f}" for d in res.to_list()[:3])
    else:
        doc["outputs"] = res.to_list()
        doc["geometry"] = res.geometry_dict()
        found = "; ".join(f"{d['name']} {d['shape']}" for d in doc["outputs"])
    return doc, found


def _save(folder: Path, label: str, frame: int | None, img: Any, res: Any) -> None:
    import cv2
    import numpy as np

    from cvdeploy.draw import annotate
    from cvdeploy.results import RawOutput

    stem = Path(label).stem + (f"_{frame:06d}" if frame is not None else "")
    suffix = ".npz" if isinstance(res, RawOutput) else ".jpg"
    target = folder / (stem + suffix)
    k = 1
    while target.exists() and k < 10000:
        target = folder / f"{stem}_{k}{suffix}"
        k += 1
    if isinstance(res, RawOutput):
        names = res.names or [f"output{i}" for i in range(len(res.tensors))]
        geometry = json.dumps(res.geometry_dict())
        arrays: dict[str, Any] = dict(zip(names, res.tensors, strict=False))
        arrays["geometry"] = np.asarray(geometry)
        np.savez(target, **arrays)
    else:
        cv2.imwrite(str(target), annotate(img, res))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _progress:
    """A progress bar over the files (not for JSON output or fewer than 4 files)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet or total < 4
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.quiet:
            return lambda n: None
        from rich.progress import Progress

        self.bar = Progress(console=err_console, transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("predicting", total=None)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _no_images(sources: list[str]) -> int:
    from cvdeploy.cli.common import fail
    from cvdeploy.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    raise fail(
        f"no images or videos found in {', '.join(str(s) for s in sources)} "
        f"(looked for {' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"
    )
