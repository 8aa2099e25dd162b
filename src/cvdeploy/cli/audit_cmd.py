"""``cvdeploy audit``: verify the tamper-evident audit log and read its latest rows."""

from __future__ import annotations

import json

import typer

from cvdeploy.cli.common import console, err_console, handle_errors
from cvdeploy.cli.security_common import db_option

audit_app = typer.Typer(
    help=(
        "The server's audit log: every failed authentication, denial, inference summary, state change and "
        "key/MFA change, hash-chained and signed."
    ),
    no_args_is_help=True,
)

VERIFY_HELP = """Check the whole audit log: every row's hash, its link to the row before, its signature, and the
signed chain head. Exit 0 when intact; exit 1 when tampered with, naming the first bad row.

  cvdeploy audit verify --db cvdeploy.db

Needs the audit public key of the server that wrote the log ($CVDEPLOY_SECRETS_DIR/audit-signing.pub.pem).
"""


@audit_app.command("verify", help=VERIFY_HELP)
@handle_errors
def verify(
    db: str = db_option(),
    as_json: bool = typer.Option(False, "--json", help='Print {"ok", "rows", "first_bad", "problem"}.'),
) -> None:
    from cvdeploy.security.audit import AuditLog
    from cvdeploy.security.db import open_database
    from cvdeploy.security.serverkeys import ServerKeys

    database = open_database(db)
    try:
        result = AuditLog(database, ServerKeys()).verify()
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    elif result.ok:
        console.print(f"[green]audit log intact[/]: {result.rows} rows, chain and signatures verified")
    else:
        err_console.print(f"[bold red]audit log tampered with[/]: first bad row {result.first_bad}: {result.problem}",
                          soft_wrap=True)  # fmt: skip
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("tail", help="Show the latest audit rows (oldest first).")
@handle_errors
def tail(
    db: str = db_option(),
    n: int = typer.Option(20, "-n", "--lines", min=1, help="How many rows."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of rows."),
) -> None:
    from rich.table import Table

    from cvdeploy.security.audit import AuditLog
    from cvdeploy.security.db import open_database
    from cvdeploy.security.serverkeys import ServerKeys

    database = open_database(db)
    try:
        rows = AuditLog(database, ServerKeys()).tail(n)
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    t = Table(title=f"last {len(rows)} audit rows", title_justify="left")
    for col in ("#", "time", "principal", "action", "resource", "outcome", "details"):
        t.add_column(col)
    for r in rows:
        style = "" if r["outcome"] == "success" else "red"
        t.add_row(str(r["seq"]), r["time"], r["principal"], r["action"], r["resource"], r["outcome"],
                  json.dumps(r["details"], sort_keys=True), style=style)  # fmt: skip
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
