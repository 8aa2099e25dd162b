"""``cvdeploy bench``: latency, throughput and hot spots of a bundle's artifacts; ``bench compare``.

``bench`` is one command whose first argument is a bundle; ``bench compare A B`` is routed to its
own command by :class:`BenchCommand` (a click group would let the positional BUNDLE swallow the
word "compare"), so ``cvdeploy bench --help`` and ``cvdeploy bench compare --help`` both work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from cvdeploy.cli.common import (
    bundle_key_options,
    console,
    err_console,
    handle_errors,
    parse_imgsz,
    parse_ints,
    parse_list,
)
from cvdeploy.cli.vocabulary import help_for

HELP = (
    "Measure latency and throughput the right way: real images through the bundle's one pipeline, "
    "warm-up and cold start reported apart, percentiles, per-stage times, memory, and the hardware used."
    """

  cvdeploy bench model.cvd

  cvdeploy bench zoo:n --artifact onnx-fp32 --runs 200 --report reports/

  cvdeploy bench model.cvd --runtime onnxruntime,openvino --imgsz 320 --imgsz 640 --batch 1,4,8 --threads 1,2

  cvdeploy bench model.cvd --concurrency 1,4,16

  cvdeploy bench model.cvd --budget-ms 50 --min-map 60

  cvdeploy bench model.cvd --profile --html report.html --markdown report.md

"""
    "With no options every artifact of the bundle is measured at the contract's image size, batch 1, "
    "100 runs after 10 warm-up runs. --concurrency keeps N requests in flight (throughput under load); "
    "--budget-ms/--min-map recommend the fastest configuration that meets both (--min-map in mAP points, "
    "0-100); --profile lists the operators that take the time. --imgsz is one size; repeat it to sweep sizes."
    """

"""
    "Is a difference real? Compare two JSON reports (exits 1 on a real regression beyond --threshold, "
    "to gate CI):"
    """

  cvdeploy bench compare before.json after.json
"""
)

COMPARE_HELP = (
    "Is the difference between two benchmark reports real, and how large is it?"
    """

"""
    "Matches configurations by key and tests their raw latency samples with the Mann-Whitney U test; "
    "a change is real when p < --alpha. Exits 1 when a configuration is really slower by more than "
    "--threshold (0.05 = 5 %), so it can gate CI; 0 otherwise; 2 on bad input."
    """

  cvdeploy bench compare before.json after.json

  cvdeploy bench compare main.json pr.json --threshold 0.10 --stage inference --json
"""
)


class BenchCommand(TyperCommand):
    """``bench BUNDLE …``, except that ``bench compare …`` is handed to the compare command."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        if args and args[0] == "compare":
            # a parameterless stand-in for "bench", so the usage line reads "cvdeploy bench compare"
            stand_in = TyperCommand(info_name or "bench", add_help_option=False)
            bench_ctx = typer.Context(stand_in, info_name=info_name, parent=parent)
            return compare_command().make_context("compare", list(args[1:]), parent=bench_ctx, **extra)
        return super().make_context(info_name, args, parent, **extra)


def compare_command() -> Any:
    """The ``compare`` command as a (typer-vendored) click command, built on demand."""
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sub.command("compare", help=COMPARE_HELP)(compare)
    return typer.main.get_command(sub)


@bundle_key_options
@handle_errors
def bench(
    bundle: str = typer.Argument(..., help="Bundle folder or zoo:n / zoo:s."),
    artifact: str = typer.Option(
        None, "--artifact", "-a", help="Artifact(s) to measure, comma-separated (default: every artifact)."
    ),
    runtime: str = typer.Option(
        None, "--runtime", help="Only artifacts of these runtimes: onnxruntime,openvino."
    ),
    imgsz: list[str] = typer.Option(
        None, "--imgsz", help=help_for("--imgsz", "repeat it to sweep several (default: the contract's)")
    ),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch size(s), e.g. 1,4,8."),
    threads: str = typer.Option(
        None, "--threads", help="Intra-op threads, e.g. 1,2 (default: the CPUs this process may use)."
    ),
    spinning: str = typer.Option(
        "auto",
        "--spinning",
        help="ONNX Runtime threads spin-wait between ops: auto (off when -c > 1), on or off.",
    ),
    concurrency: str = typer.Option("1", "--concurrency", help="Requests in flight, e.g. 1,4,16."),
    sessions: int = typer.Option(1, "--sessions", min=1, help="Model copies that concurrent requests share."),
    runs: int = typer.Option(
        None, "--runs", min=1, help=help_for("--runs", "per configuration (default 100)")
    ),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Warm-up runs per configuration, reported apart."),
    duration: float = typer.Option(
        None,
        "--duration",
        min=0.01,
        help="Time budget in seconds per configuration (with --runs: first to end).",
    ),
    images: Path = typer.Option(
        None, "--images", help=help_for("--images", "your own, to time (default: bundled photos)")
    ),
    device: str = typer.Option(
        "cpu", "--device", help=help_for("--device", "a fallback to CPU is flagged loudly")
    ),
    profile: bool = typer.Option(
        False, "--profile", help="Per-operator hot spots (ORT profiler, OpenVINO counters)."
    ),
    top: int = typer.Option(15, "--top", min=1, help="Operators/nodes to list with --profile."),
    budget_ms: float = typer.Option(
        None, "--budget-ms", help="Latency budget per request, for a recommendation."
    ),
    min_map: float = typer.Option(
        None,
        "--min-map",
        help="Accuracy floor in mAP50-95 points, 0-100 (as recorded by 'cvdeploy val --write').",
    ),
    budget_stat: str = typer.Option(
        "p95", "--budget-stat", help="Latency figure held to the budget: p50…p99."
    ),
    report: Path = typer.Option(
        None, "--report", help=help_for("--report", "bench.json, raw samples included (for 'bench compare')")
    ),
    markdown: Path = typer.Option(None, "--markdown", help="Write a Markdown report (for issues)."),
    html: Path = typer.Option(None, "--html", help="Write a self-contained HTML report with plots."),
    as_json: bool = typer.Option(
        False, "--json", help=help_for("--json", "the JSON report on stdout instead of tables")
    ),
) -> None:
    from cvdeploy.bench import BenchSettings, run_bench
    from cvdeploy.bench.config import DEFAULT_RUNS
    from cvdeploy.errors import ConfigError

    if min_map is not None and not 0.0 <= min_map <= 100.0:
        raise ConfigError(f"--min-map is in mAP points, 0-100 (e.g. 60), not {min_map}")
    sizes = [s for s in (parse_imgsz(v) for v in imgsz or []) if s is not None]
    thread_list: list[int | None] = list(parse_ints(threads, "--threads")) or [None]
    settings = BenchSettings(
        artifacts=parse_list(artifact),
        runtimes=parse_list(runtime),
        imgsz=sizes,
        batch=parse_ints(batch, "--batch") or [1],
        threads=thread_list,
        concurrency=parse_ints(concurrency, "--concurrency") or [1],
        sessions=sessions,
        runs=runs if runs is not None or duration is not None else DEFAULT_RUNS,
        warmup=warmup,
        duration_s=duration,
        images=images,
        device=device,
        profile=profile,
        profile_top=top,
        budget_ms=budget_ms,
        min_map=None if min_map is None else min_map / 100.0,  # the manifest records fractions
        budget_stat=budget_stat,
        spinning=spinning,
    )
    with _RichProgress(enabled=not as_json and err_console.is_terminal) as progress:
        result = run_bench(bundle, settings, progress=progress)
    written = _write(result, report / "bench.json" if report else None, markdown, html)
    if as_json:  # stdout is the JSON; the warnings still reach the terminal, in yellow, on stderr
        for w in result.warnings:
            err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        typer.echo(result.to_json())
        return
    from cvdeploy.reports.terminal import print_document

    print_document(result.to_document(plots=False), console)
    for kind, path in written:
        console.print(f"[green]{kind} report written to[/] {path}")


def _write(
    report: Any, output: Path | None, markdown: Path | None, html: Path | None
) -> list[tuple[str, Path]]:
    from cvdeploy import reports

    written = []
    if output:
        written.append(("JSON", report.save_json(output)))
    if markdown:
        written.append(("Markdown", reports.write_markdown(report.to_document(plots=False), markdown)))
    if html:
        written.append(("HTML", reports.write_html(report, html)))
    return written


@handle_errors
def compare(
    a: Path = typer.Argument(..., help="Baseline report (bench.json from 'cvdeploy bench --report DIR')."),
    b: Path = typer.Argument(..., help="New report to test against the baseline."),
    threshold: float = typer.Option(
        0.05, "--threshold", help="Slow-down that counts as a regression (0.05 = 5 %)."
    ),
    alpha: float = typer.Option(0.01, "--alpha", help="Significance level of the Mann-Whitney U test."),
    stage: str = typer.Option("total", "--stage", help="Samples to test: total, inference, preprocess, …"),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    from cvdeploy.bench.compare import compare_reports, load_report
    from cvdeploy.bench.render import comparison_table
    from cvdeploy.reports.jsonio import dumps
    from cvdeploy.reports.terminal import rich_table

    cmp = compare_reports(load_report(a), load_report(b), threshold=threshold, alpha=alpha, stage=stage)
    if as_json:
        typer.echo(dumps(cmp))
    else:
        console.print(rich_table(comparison_table(cmp)))
        for change in cmp.environment_changes:
            err_console.print(f"[yellow]environment changed:[/] {change}", highlight=False)
        if cmp.only_a:
            console.print(f"[dim]only in A: {', '.join(cmp.only_a)}[/]")
        if cmp.only_b:
            console.print(f"[dim]only in B: {', '.join(cmp.only_b)}[/]")
        for p in cmp.regressions:
            err_console.print(
                f"[bold red]regression:[/] {p.label} is {100 * p.change:.1f} % slower "
                f"(p = {p.p_value:.2g}), beyond the {100 * threshold:g} % threshold",
                highlight=False,
            )
        if not cmp.regressions:
            console.print(f"[green]no real regression beyond {100 * threshold:g} %[/]")
    if cmp.regressions:
        raise typer.Exit(1)


class _RichProgress:
    """A rich progress bar on stderr fed by ``run_bench``'s progress events."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._configs = 0

    def __enter__(self) -> _RichProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                refresh_per_second=4,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def start(self, configs: int) -> None:
        self._configs = configs

    def config(self, index: int, key: str, passes: int | None) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        desc = f"[{index + 1}/{self._configs}] {key}"
        self._task = self._progress.add_task(desc, total=passes)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def note(self, text: str) -> None:
        err_console.print(f"[dim]{text}[/]", highlight=False)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def register(app: typer.Typer) -> None:
    """Add ``bench`` (and, through it, ``bench compare``) to the cvdeploy app."""
    app.command("bench", cls=BenchCommand, help=HELP)(bench)
