"""``cvdeploy advise``: a measured recommendation of where and how to deploy a bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, handle_errors

HELP = "\n\n".join(
    (
        "Recommend where to run a bundle (cloud, edge, local), which artifact (format and precision), model "
        "and input size, batch and replicas for a request rate — each choice with the measured number behind "
        "it and what was ruled out and why. Missing measurements are named with the command that supplies them.",
        "  cvdeploy advise zoo:n",
        "  cvdeploy advise model.cvd --latency-ms 50 --rps 100 --bench bench.json",
        "  cvdeploy advise model.cvd --where edge --offline --json",
        "Data: the bundle's artifacts (parity, accuracy from 'cvdeploy val --write', the variants table that "
        "'cvdeploy optimize' records), bench reports from 'cvdeploy bench --report DIR' (DIR/bench.json; --bench, repeatable) and "
        "the bundle's reference profile.",
    )
)


@handle_errors
def advise(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    latency_ms: float = typer.Option(
        None, "--latency-ms", help="Latency budget per request (p95 when measured)."
    ),
    rps: float = typer.Option(None, "--rps", help="Requests per second to sustain."),
    where: str = typer.Option(None, "--where", help="cloud, edge or local (default: decided from the rest)."),
    offline: bool = typer.Option(False, "--offline", help="Must run with no network."),
    private_data: bool = typer.Option(False, "--private-data", help="Images must not leave your premises."),
    max_drop: float = typer.Option(
        1.0, "--max-drop", min=0.0, help="mAP50-95 points an artifact may lose vs FP32."
    ),
    bench: list[Path] = typer.Option(
        None, "--bench", help="Bench report(s): the bench.json that 'cvdeploy bench --report DIR' writes."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendation as JSON."),
) -> None:
    from cvdeploy.advise import Constraints
    from cvdeploy.advise import advise as run_advise
    from cvdeploy.bundle import Bundle

    cons = Constraints(latency_ms, rps, where, offline, private_data, max_drop)
    result = run_advise(Bundle.load(bundle), cons, list(bench or []), ref=bundle)
    if as_json:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=1))
        return
    from rich.markup import escape

    console.print(f"[bold]advice for {result.bundle}[/]")
    for d in result.decisions:
        console.print(
            f"[bold cyan]{d.topic}:[/] [bold]{escape(d.choice or '— (not decided)')}[/]  {escape(d.evidence)}"
        )
        for r in d.ruled_out:
            console.print(f"    [dim]not {escape(r['option'])}: {escape(r['why'])}[/]")
        for m in d.missing:
            console.print(f"    [yellow]to decide better, run:[/] {escape(m)}", soft_wrap=True)
    if result.measured_on:
        console.print(f"[dim]measured: {'; '.join(result.measured_on)}[/]")


def register(app: typer.Typer) -> None:
    app.command("advise", help=HELP)(advise)
