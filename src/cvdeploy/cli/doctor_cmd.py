"""``cvdeploy doctor``: why is a deployed model less accurate or slower than expected? Flags → library → report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cvdeploy.cli.common import console, err_console, handle_errors
from cvdeploy.cli.vocabulary import help_for

HELP = (
    "Find why a deployed model is less accurate or slower than expected, rank the causes with "
    "evidence, and say the fix."
    """

  cvdeploy doctor model.cvd --images samples/ --observed predictions.json

  cvdeploy doctor model.cvd --images samples/ --observed runs/detect/predict/labels --labels data.yaml

  cvdeploy doctor model.cvd --images samples/ --inputs tensors/ --model deployed.onnx

  cvdeploy doctor model.cvd --images samples/ --speed --threads 8 --concurrency 4 --html report.html

"""
    "IMAGES are what the deployment sees (a sample of production traffic). --observed is what it returned "
    "for them: 'cvdeploy predict --json' output, or a folder of Ultralytics save_txt files "
    "(class cx cy w h and optionally conf, normalised); --inputs the tensors it fed its model (one .npy per image, "
    "NCHW or CHW float32); --model the model file it runs when that is not one of the bundle's "
    "artifacts; --labels ground truth (YOLO data.yaml or COCO json). Everything is matched to the "
    "images by file name."
    """

"""
    "Checks: preprocessing mismatch (which preprocessing reproduces what the deployment returned or "
    "fed), data drift against the bundle's reference profile, permuted class ids, the export/"
    "conversion layer by layer against the source, the environment, NaN/inf at every stage, mAP of "
    "deployment and source on labelled images, and with --speed the slowness checks (warm-up, "
    "threads, spinning under concurrency, precision vs the CPU, provider fallback, preprocessing "
    "share, input and model size), each fix measured in the same run. --threads, --concurrency, "
    "--device and --spinning describe how the deployment runs."
    """

"""
    "Exit code: 0 when nothing critical is found, 1 when something is, 2 on a user error. "
    '--json prints {"findings": [{"id", "severity", "title", "evidence", "fix", "score"}], '
    '"checks": [...]}, most likely cause first. Finding ids are listed in cvdeploy.doctor.findings.'
)


@handle_errors
def doctor(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    images: Path = typer.Option(..., "--images", help=help_for("--images", "what the deployment sees")),
    observed: Path = typer.Option(
        None, "--observed", help="What it returned: predict --json file or a folder of Ultralytics .txt."
    ),
    inputs: Path = typer.Option(
        None, "--inputs", help="Folder of the tensors it fed its model, one .npy per image."
    ),
    model: Path = typer.Option(
        None, "--model", help="The model file it runs, when not an artifact of the bundle."
    ),
    labels: Path = typer.Option(None, "--labels", help="Ground truth: YOLO data.yaml or COCO json."),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help="Artifact it runs (default: the bundle's default)."
    ),
    speed: bool = typer.Option(
        False, "--speed", help="Run the slowness checks (they need no observed data)."
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, help=help_for("--threads", "of the deployment (--speed)")
    ),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="--speed: requests it keeps in flight."),
    device: str = typer.Option(
        "cpu", "--device", help=help_for("--device", "the deployment asks for (--speed)")
    ),
    spinning: bool = typer.Option(
        None,
        "--spinning/--no-spinning",
        help="--speed: whether its threads spin-wait (default: cvdeploy's choice).",
    ),
    keep_io: Path = typer.Option(
        None, "--keep-io", help="Write every stage's input/output of a sample here."
    ),
    save_profile: Path = typer.Option(
        None,
        "--save-profile",
        help="Bundles without a reference profile: write one built from the images here.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document on stdout."),
    html: Path = typer.Option(None, "--html", help="Write a self-contained HTML report with plots."),
) -> None:
    from cvdeploy.doctor import Doctor, DoctorOptions, SpeedSettings

    speed_settings = (
        SpeedSettings(threads=threads, concurrency=concurrency, device=device, spinning=spinning)
        if speed
        else None
    )
    options = DoctorOptions(artifact=artifact, observed=observed, inputs=inputs, labels=labels, model=model,
                            speed=speed_settings, keep_io=keep_io, save_profile=save_profile)  # fmt: skip
    with _RichProgress(enabled=not as_json and err_console.is_terminal) as progress:
        report = Doctor(bundle, images, progress).diagnose(options)
    if html:
        from cvdeploy.reports import write_html

        written = write_html(report, html)
    if as_json:
        from cvdeploy.reports.jsonio import dumps

        typer.echo(dumps(report.to_dict()))
    else:
        from cvdeploy.reports.terminal import print_document

        print_document(report.to_document(figures=False), console)
        if html:
            console.print(f"[green]HTML report written to[/] {written}")
    raise typer.Exit(report.exit_code)


class _RichProgress:
    """A rich progress bar on stderr fed by the doctor's progress events (one task per check)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _RichProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console, transient=True)  # fmt: skip
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def begin(self, title: str, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(title, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def end(self) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.remove_task(self._task)
            self._task = None


def register(app: typer.Typer) -> None:
    """Add ``cvdeploy doctor`` to the app."""
    app.command("doctor", help=HELP)(doctor)
