"""The ``cvdeploy`` command: a thin shell over the library. Each command lives in its own module."""

from __future__ import annotations

import typer

from cvdeploy import __version__
from cvdeploy.cli import export_cmd, inspect_cmd, predict_cmd
from cvdeploy.cli.common import setup_logging

app = typer.Typer(
    name="cvdeploy",
    help=(
        "Carry a trained computer-vision model into production and keep it honest there.\n\n"
        "Typical flow: export a model into a bundle (with a parity check), inspect it, predict, "
        "validate, benchmark, optimize and serve it. BUNDLE arguments accept a bundle folder "
        "(NAME.cvd) or zoo:n / zoo:s for the bundled default detectors."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cvdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step (INFO level) to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    setup_logging(verbose)


app.command("export", help=export_cmd.HELP)(export_cmd.export)
app.command("inspect", help=inspect_cmd.HELP)(inspect_cmd.inspect)
app.command("predict", help=predict_cmd.HELP)(predict_cmd.predict)

# Commands added by later modules register themselves here; each import is light (no torch, no ORT).
for _mod_name in ("val_cmd", "zoo_cmd", "demo_cmd", "bench_cmd", "serve_cmd", "optimize_cmd", "package_cmd",
                  "advise_cmd", "keys_cmd", "mfa_cmd", "audit_cmd", "certs_cmd", "protect_cmd", "doctor_cmd",
                  "monitor_cmd"):  # fmt: skip
    try:
        _mod = __import__(f"cvdeploy.cli.{_mod_name}", fromlist=["register"])
    except ModuleNotFoundError as _exc:
        if _exc.name != f"cvdeploy.cli.{_mod_name}":
            raise
        continue
    _mod.register(app)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; usage mistakes become one line (exit 2), like user errors."""
    from cvdeploy.cli.common import fail

    # typer >= 0.20 vendors click as typer._click; older releases use click itself
    try:
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as cx  # type: ignore[no-redef]

    try:
        result = app(args=argv, prog_name="cvdeploy", standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except cx.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "cvdeploy"
        fail(f"{exc.format_message()} (see '{cmd} --help')")
        return 2
    except (typer.Exit, typer.Abort) as exc:
        return int(getattr(exc, "exit_code", 130))
    return int(result) if isinstance(result, int) else 0


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
