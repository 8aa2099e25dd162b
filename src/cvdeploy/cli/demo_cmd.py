"""``cvdeploy demo``: the whole flow on the bundled default detector, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors
from cvdeploy.cli.vocabulary import help_for


@handle_errors
def demo(
    output: Path = typer.Option(
        Path("demo-output"), "--output", "-o", help=help_for("--output", "everything the demo writes")
    ),
    count: int = typer.Option(
        40, "--count", min=10, help=help_for("--count", "labelled images to generate and validate on")
    ),
    bundle: str = typer.Option("zoo:n", "--bundle", help="Bundle to demonstrate (needs a PyTorch source)."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Include the benchmark step."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Include the serving step."),
) -> None:
    """Generate data, export zoo:n to ONNX + OpenVINO with parity, validate, predict, bench, serve.

    Nothing is downloaded; everything lands in --output. Takes a few minutes on a laptop CPU.
    """
    from rich.table import Table

    from cvdeploy.demo import run_demo
    from cvdeploy.reports.terminal import print_document

    summary = run_demo(
        output,
        images=count,
        bundle=bundle,
        say=lambda m: console.print(m, highlight=False),
        bench=bench,
        serve=serve,
        show=lambda doc: print_document(doc, console, sections=["Variants"]),
    )
    table = Table(title=f"cvdeploy demo — done in {summary.seconds:.0f} s", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("result")
    for what, value in summary.rows:
        table.add_row(what, value)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("demo", help=demo.__doc__)(demo)
