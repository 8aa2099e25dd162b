"""API keys: shown once, stored as a hash, expiry, immediate revocation, scope — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from cvdeploy.errors import ConfigError, InputError
from cvdeploy.security.apikeys import ApiKeys
from cvdeploy.security.db import Database
from cvdeploy.security.errors import AuthFailure
from cvdeploy.serve.security import RecordingEventSink


def test_created_key_verifies_and_is_stored_only_as_a_hash(db: Database, clock) -> None:  # type: ignore[no-untyped-def]
    keys = ApiKeys(db, clock)
    new = keys.create("ci", "predictor", ["shapes", "people"], expires_in=60)
    assert new.token.startswith(f"cvd_{new.key.id}_") and len(new.token) == 4 + 12 + 1 + 43
    got = keys.verify(new.token)
    assert (got.id, got.role, got.models, got.expires) == (
        new.key.id,
        "predictor",
        ("shapes", "people"),
        clock.now + 60,
    )
    secret = new.token.split("_", 2)[2]
    stored = db.query("SELECT * FROM api_keys")
    text = repr(stored)
    assert secret not in text and new.token not in text
    assert len(str(db.query("SELECT hash FROM api_keys")[0][0])) == 64


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "unknown key or wrong secret"),
        (lambda t: "cvd_000000000000_" + t.split("_", 2)[2], "unknown key or wrong secret"),
        (lambda t: t[:20], "malformed API key"),
        (lambda t: "not-a-key", "malformed API key"),
    ],
)
def test_wrong_or_malformed_keys_are_refused(db: Database, mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    keys = ApiKeys(db)
    token = keys.create("a", "viewer").token
    with pytest.raises(AuthFailure) as err:
        keys.verify(mangle(token))
    assert err.value.status == 401 and err.value.message == "invalid API key"
    assert err.value.reason == reason


def test_expired_key_is_refused(db: Database, clock) -> None:  # type: ignore[no-untyped-def]
    keys = ApiKeys(db, clock)
    token = keys.create("short", "viewer", expires_in=10).token
    clock.advance(9.9)
    keys.verify(token)
    clock.advance(0.2)
    with pytest.raises(AuthFailure, match="API key expired"):
        keys.verify(token)


def test_revocation_takes_effect_at_once_even_through_another_connection(db: Database, db_url: str) -> None:
    from cvdeploy.security.db import open_database

    server_side = ApiKeys(db)
    token = server_side.create("gone", "admin").token
    key_id = server_side.verify(token).id
    other = open_database(db_url)  # the CLI, in another process, has its own connection
    try:
        revoked = ApiKeys(other).revoke(key_id, by="cli:test")
    finally:
        other.close()
    assert revoked.revoked is not None
    with pytest.raises(AuthFailure, match="API key revoked"):
        server_side.verify(token)


def test_key_changes_are_reported_with_who_did_them(db: Database) -> None:
    sink = RecordingEventSink()
    keys = ApiKeys(db, events=sink)
    new = keys.create("ops", "operator", created_by="cli:alice")
    keys.revoke(new.key.id, by="cli:bob")
    keys.revoke(new.key.id, by="cli:bob")  # idempotent: reported once
    assert [(e.action, e.principal, e.resource) for e in sink.events] == [
        ("keys.create", "cli:alice", f"key:{new.key.id}"),
        ("keys.revoke", "cli:bob", f"key:{new.key.id}"),
    ]
    assert new.token not in repr(sink.events)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "x", "role": "root"}, ConfigError, "--role 'root'"),
        ({"name": "bad name!", "role": "viewer"}, ConfigError, "--name"),
        ({"name": "x", "role": "viewer", "expires_in": -5}, ConfigError, "--expires-in"),
        ({"name": "x", "role": "viewer", "models": ["ok", "no/slash"]}, ConfigError, "--models"),
    ],
)
def test_bad_key_requests_are_one_clear_error(db: Database, kwargs, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        ApiKeys(db).create(**kwargs)


def test_list_never_shows_secrets_and_revoking_an_unknown_id_says_so(db: Database, clock) -> None:  # type: ignore[no-untyped-def]
    keys = ApiKeys(db, clock)
    a = keys.create("a", "viewer")
    b = keys.create("b", "admin", expires_in=1)
    clock.advance(2)
    listed = {k.id: k.state(clock.now) for k in keys.list()}
    assert listed == {a.key.id: "active", b.key.id: "expired"}
    assert a.token not in repr(keys.list())
    with pytest.raises(InputError, match="no API key with id 'nope'"):
        keys.revoke("nope")


def test_by_name_finds_the_newest_active_key(db: Database, clock) -> None:  # type: ignore[no-untyped-def]
    keys = ApiKeys(db, clock)
    old = keys.create("device-7", "viewer")
    clock.advance(1)
    new = keys.create("device-7", "predictor")
    found = keys.by_name("device-7")
    assert found is not None and found.id == new.key.id
    keys.revoke(new.key.id)
    found = keys.by_name("device-7")
    assert found is not None and found.id == old.key.id
    assert keys.by_name("nobody") is None
