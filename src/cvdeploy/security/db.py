"""The server's database: SQLite (default, embedded) or PostgreSQL, one schema, created if missing.

    --db value                        backend
    path/to/cvdeploy.db               SQLite through the standard library (file created with mode 0600)
    sqlite:///abs/path/cvdeploy.db    the same, written as a URL
    postgresql://user@host:5432/db    PostgreSQL through psycopg 3 (``pip install "cvdeploy[postgres]"``)

API keys, MFA enrolments and the audit log live here, and other parts of cvdeploy add their own
tables (monitoring keeps its data here too): a :class:`Schema` is a name and portable ``CREATE ...
IF NOT EXISTS`` statements, registered once with :func:`register_schema` and created, if missing, by
every :func:`open_database`. There are no migrations: a schema only ever adds tables/indexes.

Portable SQL, written once for both backends: ``?`` placeholders (rewritten to ``%s`` for psycopg),
types ``TEXT``, ``BIGINT``, ``DOUBLE PRECISION``; no autoincrement (keys are chosen by the caller).
Write transactions are serialized where it matters with :meth:`Tx.serialize` (SQLite's
``BEGIN IMMEDIATE``, PostgreSQL's transaction-scoped advisory lock). Connections are kept one per
thread, so a ``Database`` may be shared by threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvdeploy.errors import ConfigError

__all__ = ["Database", "Schema", "Tx", "open_database", "register_schema", "registered_schemas"]

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Schema:
    """A named set of portable ``CREATE TABLE/INDEX IF NOT EXISTS`` statements."""

    name: str
    statements: tuple[str, ...]


_SCHEMAS: dict[str, Schema] = {}


def register_schema(schema: Schema) -> Schema:
    """Add ``schema`` to what every :func:`open_database` creates (idempotent; same name replaces)."""
    _SCHEMAS[schema.name] = schema
    return schema


def registered_schemas() -> list[Schema]:
    return list(_SCHEMAS.values())


class Tx:
    """One transaction: ``execute`` runs a statement with ``?`` placeholders."""

    def __init__(self, db: Database, cursor: Any) -> None:
        self._db = db
        self._cur = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        self._cur.execute(self._db._sql(sql), tuple(params))
        return self

    def fetchone(self) -> Row | None:
        row = self._cur.fetchone()
        return tuple(row) if row is not None else None

    def fetchall(self) -> list[Row]:
        return [tuple(r) for r in self._cur.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def serialize(self, name: str) -> None:
        """Make concurrent write transactions that call this with the same ``name`` run one at a time."""
        if self._db.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            self._cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        # SQLite: write transactions start with BEGIN IMMEDIATE, which already takes the one write lock


class Database:
    """A SQLite file or a PostgreSQL database behind one small interface."""

    def __init__(self, url: str, dialect: str, target: str) -> None:
        self.url = url
        self.dialect = dialect  # "sqlite" | "postgresql"
        self._target = target  # the file path (SQLite) or the connection URL (PostgreSQL)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for PostgreSQL)."""
        return Path(self._target) if self.dialect == "sqlite" else None

    def __repr__(self) -> str:
        return f"Database({redact(self.url)!r})"

    # ---- connections --------------------------------------------------------------------------
    def _connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not getattr(conn, "closed", False):
            return conn
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self._target, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
        else:
            from cvdeploy._deps import require

            psycopg = require("psycopg", "a PostgreSQL --db")
            try:
                conn = psycopg.connect(self._target, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise ConfigError(
                    f"cannot connect to the database {redact(self.url)}: {str(exc).strip().splitlines()[0]}; "
                    "check the --db URL and that the server runs"
                ) from None
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[Tx]:
        """A transaction committed on success and rolled back on any exception."""
        conn = self._connect()
        if self.dialect == "sqlite":
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Tx(self, cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        else:
            with conn.transaction(), conn.cursor() as cur:
                yield Tx(self, cur)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one read statement in its own transaction and return every row."""
        with self.transaction() as tx:
            return tx.execute(sql, params).fetchall()

    def is_conflict(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a unique/primary-key violation."""
        if isinstance(exc, sqlite3.IntegrityError):
            return True
        return type(exc).__module__.startswith("psycopg") and type(exc).__name__ in (
            "UniqueViolation",
            "IntegrityError",
        )

    def create(self, schemas: Sequence[Schema]) -> None:
        """Create every missing table and index of ``schemas``."""
        with self.transaction(write=True) as tx:
            tx.serialize("cvdeploy-schema")
            for schema in schemas:
                for stmt in schema.statements:
                    tx.execute(stmt)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def open_database(url: str | Path, schemas: Sequence[Schema] | None = None) -> Database:
    """Open (and create, if missing) the database at ``url`` with every registered schema."""
    text = str(url).strip()
    if not text:
        raise ConfigError("--db is empty: give a SQLite file path or a postgresql:// URL")
    if text.startswith(("postgresql://", "postgres://")):
        db = Database(text, "postgresql", text)
    elif "://" in text and not text.startswith("sqlite:"):
        raise ConfigError(
            f"--db {redact(text)!r}: unsupported database URL; use a SQLite file path or postgresql://..."
        )
    else:
        raw = text.removeprefix("sqlite:///").removeprefix("sqlite://").removeprefix("sqlite:")
        path = Path(raw).expanduser()
        if path.is_dir():
            raise ConfigError(f"--db {path} is a folder; name a database file, e.g. {path / 'cvdeploy.db'}")
        if not path.parent.is_dir():
            raise ConfigError(f"--db {path}: the folder {path.parent} does not exist")
        if not path.exists():
            # created private: the file holds key hashes and the audit log
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = Database(text, "sqlite", str(path))
        try:
            db._connect().execute("SELECT 1")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"--db {path} is not a SQLite database ({exc})") from None
    db.create(list(schemas) if schemas is not None else registered_schemas())
    return db
