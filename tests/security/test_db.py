"""The database store: one schema created if missing, tables others can add, the same SQL on both backends."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cvdeploy.security.db import Database, Schema, open_database, redact, register_schema, registered_schemas

MONITORING = Schema(
    "test-monitoring",
    ("CREATE TABLE IF NOT EXISTS test_drift (model TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, psi DOUBLE PRECISION)",
     "CREATE INDEX IF NOT EXISTS test_drift_model ON test_drift (model, time)"),
)  # fmt: skip


def test_others_add_tables_and_reopening_changes_nothing(db_url: str) -> None:
    import cvdeploy.security.schema  # noqa: F401

    register_schema(MONITORING)
    try:
        db = open_database(db_url)
        with db.transaction(write=True) as tx:
            tx.execute("INSERT INTO test_drift (model, time, psi) VALUES (?, ?, ?)", ("shapes", 1.5, 0.02))
        db.close()
        again = open_database(db_url)  # create-if-missing: the rows survive, nothing is migrated
        assert again.query("SELECT model, time, psi FROM test_drift") == [("shapes", 1.5, 0.02)]
        assert again.query("SELECT COUNT(*) FROM api_keys") == [(0,)]
        again.close()
    finally:
        from cvdeploy.security import db as dbmod

        dbmod._SCHEMAS.pop(MONITORING.name, None)
    assert "security" in {s.name for s in registered_schemas()}


def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    db.create([MONITORING])
    with pytest.raises(RuntimeError), db.transaction(write=True) as tx:
        tx.execute("INSERT INTO test_drift (model, time) VALUES (?, ?)", ("a", 1.0))
        raise RuntimeError("boom")
    assert db.query("SELECT COUNT(*) FROM test_drift") == [(0,)]


def test_conflicts_are_recognised_on_both_backends(db: Database) -> None:
    with db.transaction(write=True) as tx:
        tx.execute(
            "INSERT INTO mfa (key_id, secret, created, last_counter) VALUES (?, ?, ?, ?)", ("k", "s", 0.0, 0)
        )
    with pytest.raises(Exception) as err, db.transaction(write=True) as tx:
        tx.execute(
            "INSERT INTO mfa (key_id, secret, created, last_counter) VALUES (?, ?, ?, ?)", ("k", "s", 0.0, 0)
        )
    assert db.is_conflict(err.value)


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    db = open_database(tmp_path / "new.db")
    assert stat.S_IMODE((tmp_path / "new.db").stat().st_mode) == 0o600
    assert db.dialect == "sqlite" and db.path == tmp_path / "new.db"
    db.close()
    assert open_database(f"sqlite:///{tmp_path / 'url.db'}").path == tmp_path / "url.db"


def test_passwords_never_appear_in_messages() -> None:
    assert (
        redact("postgresql://app:s3cret@db.internal:5432/cvd") == "postgresql://app:***@db.internal:5432/cvd"
    )
    assert redact("/var/lib/cvdeploy.db") == "/var/lib/cvdeploy.db"
    assert "s3cret" not in repr(
        Database("postgresql://app:s3cret@h/d", "postgresql", "postgresql://app:s3cret@h/d")
    )
