"""``cvdeploy monitor``: reports of what a server's monitoring recorded, and dashboards for Grafana."""

from __future__ import annotations

from pathlib import Path

import typer

from cvdeploy.cli.common import console, err_console, handle_errors
from cvdeploy.cli.vocabulary import help_for

monitor_app = typer.Typer(
    help="What the server's monitoring recorded (cvdeploy serve --db URL): reports, dashboards, alert rules.",
    no_args_is_help=True,
)

REPORT_HELP = """A period of monitored traffic as a self-contained HTML page (plots inside) and/or JSON: drift per
feature against each bundle's reference profile and its timeline, output statistics, latency, errors
and incidents (runs of drift, error-rate or latency trouble).

  cvdeploy monitor report --db cvdeploy.db -o report.html

  cvdeploy monitor report --db postgresql://cvd@db/cvd --model shapes-n --since 7d -o week.html

  cvdeploy monitor report --db cvdeploy.db --since 1h --json > last-hour.json

The database is the one the server was started with (--db); it holds each served version's profile.
"""

GRAFANA_HELP = """Write a Grafana dashboard (import it and pick the Prometheus data source) and a Prometheus
alert rule file (add it under rule_files:) for cvdeploy servers: drift, latency and error rate.

  cvdeploy monitor grafana -o monitoring/
"""


@monitor_app.command(
    "report",
    help=REPORT_HELP,
    short_help="A period of traffic as HTML (plots) and JSON: drift, latency, incidents.",
)
@handle_errors
def report(
    db: str = typer.Option(
        ..., "--db", help="The server's database: a SQLite file path or a postgresql:// URL."
    ),
    model: str = typer.Option(
        None, "--model", help="Only this model (default: every model in the database)."
    ),
    since: str = typer.Option("24h", "--since", help="The period ending now: e.g. 90m, 24h, 7d."),
    output: Path = typer.Option(
        None, "--output", "-o", help=help_for("--output", "the HTML report, e.g. report.html")
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    from cvdeploy.errors import ConfigError, InputError
    from cvdeploy.monitor.report import build_report
    from cvdeploy.monitor.settings import parse_duration
    from cvdeploy.reports.html import write_html
    from cvdeploy.reports.jsonio import dumps

    if output is None and not as_json:
        raise ConfigError("say where the report goes: -o report.html, --json (stdout), or both")
    seconds = parse_duration(since, "--since")
    if "://" not in db and not db.startswith("sqlite:") and not Path(db).is_file():
        raise InputError(f"--db {db}: no such database file; give the file the server was started with")
    from cvdeploy.monitor.store import MonitorStore

    store = MonitorStore.open(db)
    try:
        rep = build_report(store, model, seconds)
    finally:
        store.close()
    if output is not None:
        path = write_html(rep, output)
        err_console.print(f"[green]report written:[/] {path}")
    if as_json:
        typer.echo(dumps(rep.to_dict()))
    elif output is not None:
        for m in rep.models:
            s = m.summary
            flagged = ", ".join(s.flagged) if s and s.flagged else "none"
            console.print(f"{m.model}: {s.requests if s else 0} requests, {s.error_count if s else 0} errors, "
                          f"drift: {flagged}, {len(m.incidents)} incident(s)")  # fmt: skip


@monitor_app.command(
    "grafana", help=GRAFANA_HELP, short_help="A Grafana dashboard and Prometheus alert rules."
)
@handle_errors
def grafana(
    output: Path = typer.Option(
        ..., "--output", "-o", help=help_for("--output", "the folder of the dashboard and alert rules")
    ),
) -> None:
    from cvdeploy.errors import InputError
    from cvdeploy.monitor.grafana import write_grafana

    if output.exists() and not output.is_dir():
        raise InputError(f"-o {output} is a file; name a folder")
    for path in write_grafana(output):
        console.print(f"[green]written:[/] {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
