"""The audit log: every kind of tampering caught and the first bad row named; writes off the hot path;
no credential ever in the database file or the logs."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pyotp
import pytest

from cvdeploy.security.apikeys import ApiKeys
from cvdeploy.security.audit import AuditLog, AuditSink, scrub
from cvdeploy.security.db import Database
from cvdeploy.security.serverkeys import ServerKeys
from cvdeploy.serve.security import Event


def filled(db: Database, server_keys: ServerKeys, n: int = 6) -> AuditLog:
    log = AuditLog(db, server_keys)
    for i in range(n):
        log.record("infer", f"model:m{i}", f"key:k{i}", "success" if i % 2 else "failure", {"images": i})
    return log


def test_an_untouched_log_verifies(db: Database, server_keys: ServerKeys) -> None:
    log = filled(db, server_keys)
    assert log.verify().to_dict() == {"ok": True, "rows": 6, "first_bad": None, "problem": ""}
    assert AuditLog(db, server_keys).verify().ok  # a fresh reader agrees
    assert [r["seq"] for r in log.tail(3)] == [4, 5, 6]
    assert log.tail(1)[0]["details"] == {"images": 5}


def test_an_empty_log_verifies(db: Database, server_keys: ServerKeys) -> None:
    assert AuditLog(db, server_keys).verify().ok


def swap(db: Database, a: int, b: int) -> None:
    """Exchange the full contents of rows a and b, keeping their numbers (a reorder)."""
    cols = (
        "time, action, resource, principal, outcome, details, request_id, prev_hash, hash, key_id, signature"
    )
    ra = db.query(f"SELECT {cols} FROM audit_log WHERE seq = ?", (a,))[0]
    rb = db.query(f"SELECT {cols} FROM audit_log WHERE seq = ?", (b,))[0]
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    with db.transaction(write=True) as tx:
        tx.execute(f"UPDATE audit_log SET {sets} WHERE seq = ?", (*rb, a))
        tx.execute(f"UPDATE audit_log SET {sets} WHERE seq = ?", (*ra, b))


def rewrite_from(db: Database, start: int, forger: ServerKeys) -> None:
    """Recompute hashes and links from row ``start`` on, signing with a key that is not the server's."""
    from cvdeploy.security.audit import _head_message, _row_message, row_hash

    rows = db.query("SELECT seq, time, action, resource, principal, outcome, details, request_id, prev_hash "
                    "FROM audit_log ORDER BY seq")  # fmt: skip
    prev = rows[start - 2][8] if start > 1 else "0" * 64
    prev = db.query("SELECT hash FROM audit_log WHERE seq = ?", (start - 1,))[0][0] if start > 1 else prev
    with db.transaction(write=True) as tx:
        for r in rows[start - 1 :]:
            h = row_hash(r[0], r[1:8], prev)
            tx.execute("UPDATE audit_log SET prev_hash = ?, hash = ?, signature = ? WHERE seq = ?",
                       (prev, h, forger.sign(_row_message(h)), r[0]))  # fmt: skip
            prev = h
        last = rows[-1][0]
        tx.execute("UPDATE audit_head SET seq = ?, hash = ?, signature = ? WHERE id = 1",
                   (last, prev, forger.sign(_head_message(last, prev)), ))  # fmt: skip


def tamper(db: Database, kind: str, forger: ServerKeys) -> None:
    from cvdeploy.security.audit import _row_message, row_hash

    with db.transaction(write=True) as tx:
        if kind == "edited details":
            tx.execute("UPDATE audit_log SET details = ? WHERE seq = 3", ('{"images":99}',))
        elif kind == "edited outcome":
            tx.execute("UPDATE audit_log SET outcome = 'success' WHERE seq = 5")
        elif kind == "deleted middle row":
            tx.execute("DELETE FROM audit_log WHERE seq = 3")
        elif kind == "deleted last row":
            tx.execute("DELETE FROM audit_log WHERE seq = 6")
        elif kind == "inserted forged row":
            prev = tx.execute("SELECT hash FROM audit_log WHERE seq = 6").fetchone()[0]  # type: ignore[index]
            fields = ("2026-01-01T00:00:00+00:00", "load", "model:x", "key:evil", "success", "{}", None)
            h = row_hash(7, fields, prev)
            tx.execute("INSERT INTO audit_log (seq, time, action, resource, principal, outcome, details, request_id, "
                       "prev_hash, hash, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (7, *fields, prev, h, "forged", forger.sign(_row_message(h))))  # fmt: skip
    if kind == "reordered rows":
        swap(db, 2, 5)
    elif kind == "rewritten chain":
        rewrite_from(db, 3, forger)


@pytest.mark.parametrize(
    ("kind", "first_bad", "says"),
    [
        ("edited details", 3, "row 3 was edited"),
        ("edited outcome", 5, "row 5 was edited"),
        ("deleted middle row", 3, "row 3 is missing"),
        ("deleted last row", 6, "rows deleted at the end"),
        ("reordered rows", 2, "row 2 was edited"),
        ("inserted forged row", 7, "row 7: its signature does not verify"),
        ("rewritten chain", 3, "row 3: its signature does not verify"),
    ],
)
def test_tampering_is_detected_and_the_first_bad_row_named(
    db: Database, server_keys: ServerKeys, tmp_path: Path, kind: str, first_bad: int, says: str
) -> None:
    log = filled(db, server_keys)
    tamper(db, kind, ServerKeys(tmp_path / "attacker"))
    v = log.verify()
    assert not v.ok and v.first_bad == first_bad, v
    assert says in v.problem


def test_rows_appended_by_someone_without_the_key_are_caught(
    db: Database, server_keys: ServerKeys, tmp_path: Path
) -> None:
    filled(db, server_keys, 3)
    intruder = AuditLog(db, ServerKeys(tmp_path / "intruder"))  # writes with its own key
    intruder.record("load", "model:x", "key:evil")
    v = AuditLog(db, server_keys).verify()
    assert not v.ok and v.first_bad == 4


def test_scrub_removes_credentials_by_name_and_by_shape() -> None:
    doc = {
        "token": "abc", "api_key": "x", "X-CVD-OTP": "123456", "password": "p", "nested": {"Authorization": "Bearer y"},
        "note": "cvd_0123456789ab_" + "A" * 43, "jwt": "eyJhbGciOi.eyJzdWIi.sig", "list": ["Bearer zzz", "fine"],
        "model": "shapes", "images": 3, "key_id": "0123456789ab",
    }  # fmt: skip
    out = scrub(doc)
    assert out["model"] == "shapes" and out["images"] == 3 and out["list"][1] == "fine"
    assert out["key_id"] == "0123456789ab"  # a key's public id is not a secret
    for k in ("token", "api_key", "X-CVD-OTP", "password", "note", "jwt"):
        assert out[k] == "[redacted]", k
    assert out["nested"]["Authorization"] == "[redacted]" and out["list"][0] == "[redacted]"


def test_sink_writes_in_the_background_and_stays_verifiable_under_concurrency(
    db: Database, server_keys: ServerKeys
) -> None:
    sink = AuditSink(AuditLog(db, server_keys), batch=64)
    done = threading.Barrier(8)

    def worker(k: int) -> None:
        done.wait()
        for i in range(50):
            sink.emit(Event("infer", f"model:m{k}", f"key:{k}", "success", {"i": i}))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sink.flush(60)
    sink.close()
    v = AuditLog(db, server_keys).verify()
    assert v.ok and v.rows == 400


def test_two_writers_on_one_database_keep_one_chain(
    db: Database, db_url: str, server_keys: ServerKeys
) -> None:
    """Two server processes (here: two connections from two threads) append to the same chain."""
    from cvdeploy.security.db import open_database

    other = open_database(db_url)
    logs = [AuditLog(db, server_keys), AuditLog(other, ServerKeys(server_keys.directory))]

    def write(log: AuditLog, k: int) -> None:
        for i in range(25):
            log.record("infer", "model:m", f"key:{k}", "success", {"i": i})

    threads = [threading.Thread(target=write, args=(log, k)) for k, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    v = AuditLog(db, server_keys).verify()
    assert v.ok and v.rows == 50, v


def test_a_full_queue_records_how_many_events_were_dropped(db: Database, server_keys: ServerKeys) -> None:
    log = AuditLog(db, server_keys)
    gate = threading.Event()
    original = log.append

    def slow(events: Any) -> int:
        gate.wait(30)
        return original(events)

    log.append = slow  # type: ignore[method-assign]
    sink = AuditSink(log, max_queue=2, batch=1)
    for i in range(10):
        sink.emit(Event("infer", "model:m", "key:k", "success", {"i": i}))
    gate.set()
    assert sink.flush(30)
    sink.emit(Event("infer", "model:m", "key:k", "success", {"i": 99}))
    assert sink.flush(30)
    sink.close()
    rows = AuditLog(db, server_keys).tail(50)
    dropped = sum(r["details"].get("dropped_events", 0) for r in rows)
    assert dropped > 0 and dropped + sum(1 for r in rows if r["action"] == "infer") == 11
    assert AuditLog(db, server_keys).verify().ok


def test_no_key_token_or_otp_reaches_the_database_file_or_the_logs(
    tmp_path: Path, server_keys: ServerKeys, caplog: pytest.LogCaptureFixture
) -> None:
    """The whole flow — create, MFA, authenticate (good, wrong, replayed), deny — then grep for the secrets."""
    from cvdeploy.security.authn import BearerAuthenticator
    from cvdeploy.security.authz import RbacAuthorizer
    from cvdeploy.security.db import open_database
    from cvdeploy.security.errors import AuthFailure
    from cvdeploy.security.mfa import Mfa
    from cvdeploy.serve.errors import ServeError
    from cvdeploy.serve.security import Connection, FanoutEventSink, LogEventSink

    caplog.set_level(logging.DEBUG)
    path = tmp_path / "audit.db"
    db = open_database(path)
    log = AuditLog(db, server_keys)
    sink = AuditSink(log)
    events = FanoutEventSink([LogEventSink(), sink])
    keys = ApiKeys(db, events=events)
    mfa = Mfa(db, server_keys, events=events)
    new = keys.create("ops", "operator", ["shapes"], created_by="cli:test")
    enrolment = mfa.enroll(new.key.id, by="cli:test")
    code = pyotp.TOTP(enrolment.secret).now()
    authn = BearerAuthenticator(keys, mfa, events=events)
    authz = RbacAuthorizer(events=events)
    secrets = [new.token, new.token.split("_", 2)[2], enrolment.secret, code]
    good = {"authorization": f"Bearer {new.token}", "x-cvd-otp": code}
    p = asyncio.run(authn.authenticate(Connection(good, ("1.2.3.4", 1))))
    authz.authorize(p, "load", "model:shapes")
    attempts = [
        {"authorization": f"Bearer {new.token}"},  # authenticates; metrics is denied (operator)
        good,  # the code again: replayed
        {"authorization": f"Bearer {new.token[:-2]}xx"},  # wrong key
        {"authorization": f"Bearer {new.token}", "x-cvd-otp": "000000" if code != "000000" else "111111"},
    ]
    for headers in attempts:
        try:
            p = asyncio.run(authn.authenticate(Connection(headers, ("1.2.3.4", 1))))
            authz.authorize(p, "metrics", "server")
        except (AuthFailure, ServeError):
            pass
    assert sink.flush(30)
    sink.close()
    rows = log.tail(100)
    assert {r["action"] for r in rows} >= {"keys.create", "mfa.enroll", "authenticate", "metrics"}
    assert log.verify().ok
    db.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))  # the file and its WAL
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    for s in secrets:
        assert s.encode() not in blob, "a secret reached the database file"
        assert s not in logged, "a secret reached the logs"
    assert b"keys.create" in blob or b"mfa.enroll" in blob  # the grep reads the real data
