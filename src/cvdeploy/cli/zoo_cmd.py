"""``cvdeploy zoo``: the bundled default detectors and their synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors
from cvdeploy.cli.vocabulary import help_for

zoo_app = typer.Typer(
    help="The bundled default detectors (zoo:n, zoo:s) and the dataset generator they were trained with.",
    no_args_is_help=True,
)


@zoo_app.command("dataset")
@handle_errors
def dataset(
    output: Path = typer.Option(
        ..., "--output", "-o", help=help_for("--output", "the dataset: data.yaml, images/ and labels/")
    ),
    count: int = typer.Option(
        2000, "--count", min=1, help=help_for("--count", "images to generate (split 80/10/10 train/val/test)")
    ),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    imgsz: int = typer.Option(
        640, "--imgsz", min=32, max=4096, help=help_for("--imgsz", "here one square size")
    ),
    coco: bool = typer.Option(False, "--coco", help="Also write COCO JSON annotations per split."),
    workers: int = typer.Option(None, "--workers", min=1, help="Processes (default: all cores)."),
) -> None:
    """Generate the synthetic shapes detection dataset in YOLO format (deterministic).

    Example: cvdeploy zoo dataset -o shapes/ --count 2000 --seed 0
    """
    import time

    from cvdeploy.errors import InputError
    from cvdeploy.zoo.dataset import SPLITS, generate_dataset, write_coco

    if output.exists() and output.is_file():
        raise InputError(f"{output} is a file; give a folder for the dataset")
    t0 = time.perf_counter()
    data_yaml = generate_dataset(output, images=count, seed=seed, imgsz=imgsz, workers=workers)
    if coco:
        for split in SPLITS:
            write_coco(data_yaml, split)
    console.print(f"[green]{count} images in {time.perf_counter() - t0:.1f} s:[/] {data_yaml}")


@zoo_app.command("list")
@handle_errors
def list_models() -> None:
    """List the bundled default detectors with their recorded accuracy."""
    from rich.table import Table

    from cvdeploy.bundle import ZOO_DIR, Bundle

    table = Table(title="bundled detectors", title_justify="left")
    for col in ("name", "classes", "input", "size MB", "mAP50-95", "mAP50", "path"):
        table.add_column(col)
    for path in sorted(ZOO_DIR.glob("*.cvd")):
        b = Bundle.load(path, verify=False)
        art = b.artifact()
        m = art.metrics
        size = (b.path / art.file).stat().st_size / 1e6
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "–"  # noqa: E731
        table.add_row(
            f"zoo:{path.stem}",
            str(len(b.contract.classes)),
            f"{b.contract.input.height}",
            f"{size:.1f}",
            fmt(m.get("mAP50-95")),
            fmt(m.get("mAP50")),
            str(path),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
