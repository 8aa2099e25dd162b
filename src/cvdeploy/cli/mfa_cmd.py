"""``cvdeploy mfa``: TOTP second factor for an API key."""

from __future__ import annotations

import json

import typer

from cvdeploy.cli.common import console, err_console, handle_errors
from cvdeploy.cli.security_common import actor, db_option, open_admin

mfa_app = typer.Typer(
    help="Second factor (TOTP) for API keys: operators and admins send a code in X-CVD-OTP to change model state.",
    no_args_is_help=True,
)

ENROLL_HELP = """Enroll (or re-enroll) an API key in TOTP and print its secret and otpauth:// URI once.

  cvdeploy mfa enroll --db cvdeploy.db --key-id 3f2a9c01d4e7

  cvdeploy mfa enroll --db cvdeploy.db --key-id 3f2a9c01d4e7 --json   # {"secret": ..., "uri": ...}

Add the URI to an authenticator app (or 'pyotp.TOTP(secret).now()' in scripts). Each code is accepted
once. The database keeps the secret only encrypted with the server's wrap key.
"""


@mfa_app.command("enroll", help=ENROLL_HELP)
@handle_errors
def enroll(
    db: str = db_option(),
    key_id: str = typer.Option(..., "--key-id", help="The API key's id (see 'cvdeploy keys list')."),
    as_json: bool = typer.Option(False, "--json", help='Print {"secret": ..., "uri": ...} only.'),
) -> None:
    from cvdeploy.security.mfa import Mfa
    from cvdeploy.security.serverkeys import ServerKeys

    database, audit = open_admin(db)
    try:
        e = Mfa(database, ServerKeys(), events=audit).enroll(key_id, by=actor())
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps({"secret": e.secret, "uri": e.uri}))
        return
    console.print(f"enrolled key [bold]{e.key_id}[/] in TOTP (30-second codes, 6 digits)")
    err_console.print("[yellow]shown only this once; add it to an authenticator app now:[/]")
    typer.echo(f"secret: {e.secret}")
    typer.echo(f"uri:    {e.uri}")


def register(app: typer.Typer) -> None:
    app.add_typer(mfa_app, name="mfa")
