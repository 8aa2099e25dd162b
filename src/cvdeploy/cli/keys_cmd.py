"""``cvdeploy keys``: create, list and revoke the server's API keys."""

from __future__ import annotations

import datetime as _dt
import json
import time

import typer

from cvdeploy.cli.common import console, err_console, handle_errors, parse_list
from cvdeploy.cli.security_common import actor, db_option, open_admin

keys_app = typer.Typer(
    help=(
        "API keys of 'cvdeploy serve': random, shown once, stored only as a SHA-256 hash; with a role "
        "(viewer, predictor, operator, admin), an optional model scope and expiry; revocation takes effect "
        "on the next request."
    ),
    no_args_is_help=True,
)

CREATE_HELP = """Create an API key and print it once (it cannot be shown again).

  cvdeploy keys create --db cvdeploy.db --name ci --role predictor --models shapes --expires-in 86400

  cvdeploy keys create --db cvdeploy.db --name ops --role operator --json   # {"id": ..., "key": ...}

Clients send it as 'Authorization: Bearer <key>'. Roles: viewer (health, read), predictor (+ infer),
operator (+ load/unload/rollback, with a TOTP code: see 'cvdeploy mfa enroll'), admin (everything).
"""


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("create", help=CREATE_HELP)
@handle_errors
def create(
    db: str = db_option(),
    name: str = typer.Option(
        ..., "--name", help="A name for the key's holder (also a client certificate's CN)."
    ),
    role: str = typer.Option(..., "--role", help="viewer, predictor, operator or admin."),
    models: str = typer.Option(
        None, "--models", help="Only these models, comma-separated (default: every model)."
    ),
    expires_in: int = typer.Option(None, "--expires-in", min=1, help="Expire this many seconds from now."),
    as_json: bool = typer.Option(False, "--json", help='Print {"id": ..., "key": ...} only.'),
) -> None:
    from cvdeploy.security.apikeys import ApiKeys

    database, audit = open_admin(db)
    try:
        new = ApiKeys(database, events=audit).create(
            name, role, parse_list(models) or None, expires_in, created_by=actor()
        )
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps({"id": new.key.id, "key": new.token}))
        return
    k = new.key
    scope = ", ".join(k.models) if k.models else "every model"
    console.print(
        f"created key [bold]{k.id}[/] for {k.name}: role {k.role}, {scope}, expires {_when(k.expires)}"
    )
    err_console.print("[yellow]the key is shown only this once; store it now:[/]")
    typer.echo(new.token)


@keys_app.command("list", help="List the API keys (never their secrets): id, name, role, scope, state.")
@handle_errors
def list_keys(
    db: str = db_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    from rich.table import Table

    from cvdeploy.security.apikeys import ApiKeys
    from cvdeploy.security.db import open_database

    database = open_database(db)
    try:
        keys = ApiKeys(database).list()
    finally:
        database.close()
    now = time.time()
    if as_json:
        typer.echo(json.dumps([k.to_dict(now) for k in keys]))
        return
    t = Table(title=f"API keys ({len(keys)})", title_justify="left")
    for col in ("id", "name", "role", "models", "state", "created", "expires"):
        t.add_column(col)
    for k in keys:
        t.add_row(k.id, k.name, k.role, ", ".join(k.models) if k.models else "all", k.state(now),
                  _when(k.created), _when(k.expires))  # fmt: skip
    console.print(t)


@keys_app.command("revoke", help="Revoke a key now: the next request with it is refused (by every server).")
@handle_errors
def revoke(
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (see 'cvdeploy keys list')."),
    db: str = db_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the key's record as JSON."),
) -> None:
    from cvdeploy.security.apikeys import ApiKeys

    database, audit = open_admin(db)
    try:
        key = ApiKeys(database, events=audit).revoke(key_id, by=actor())
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps(key.to_dict(time.time())))
        return
    console.print(f"revoked key [bold]{key.id}[/] ({key.name}) at {_when(key.revoked)}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
