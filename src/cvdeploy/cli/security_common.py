"""What the security commands share: the --db option, the database with its audit log, who is acting."""

from __future__ import annotations

import getpass
from typing import Any

import typer

DB_HELP = (
    "The server's database: a SQLite file path (created if missing) or a postgresql:// URL. "
    "The audit signing key and MFA wrap key live in $CVDEPLOY_SECRETS_DIR (default ~/.config/cvdeploy/secrets)."
)


def db_option() -> Any:
    return typer.Option(..., "--db", help=DB_HELP)


def actor() -> str:
    """Who runs a CLI command, as written to the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name (some containers)
        return "cli:unknown"


def open_admin(db: str) -> tuple[Any, Any]:
    """The database and its (synchronous) audit log."""
    from cvdeploy.security.audit import AuditLog
    from cvdeploy.security.db import open_database
    from cvdeploy.security.serverkeys import ServerKeys

    keys = ServerKeys()
    keys.signing_key()  # before any change: a change that cannot be audited is not made
    database = open_database(db)
    return database, AuditLog(database, keys)
