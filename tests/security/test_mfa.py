"""TOTP: enrolment shown once and stored encrypted; codes accepted once, across connections and processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyotp
import pytest

from cvdeploy.errors import InputError
from cvdeploy.security.apikeys import ApiKeys
from cvdeploy.security.db import Database, open_database
from cvdeploy.security.errors import AuthFailure
from cvdeploy.security.mfa import Mfa
from cvdeploy.security.serverkeys import ServerKeys
from cvdeploy.serve.security import RecordingEventSink


def enrolled(db: Database, server_keys: ServerKeys, clock) -> tuple[Mfa, str, pyotp.TOTP]:  # type: ignore[no-untyped-def]
    key = ApiKeys(db, clock).create("ops", "operator").key
    mfa = Mfa(db, server_keys, clock)
    e = mfa.enroll(key.id)
    return mfa, key.id, pyotp.TOTP(e.secret)


def test_enrolment_gives_secret_and_uri_and_stores_only_ciphertext(
    db: Database, server_keys: ServerKeys, clock
) -> None:  # type: ignore[no-untyped-def]
    key = ApiKeys(db, clock).create("ops", "operator").key
    sink = RecordingEventSink()
    e = Mfa(db, server_keys, clock, events=sink).enroll(key.id, by="cli:alice")
    assert (
        e.uri.startswith("otpauth://totp/") and f"secret={e.secret}" in e.uri and "issuer=cvdeploy" in e.uri
    )
    assert e.secret not in repr(db.query("SELECT * FROM mfa"))
    assert [(ev.action, ev.principal) for ev in sink.events] == [("mfa.enroll", "cli:alice")]
    assert e.secret not in repr(sink.events)
    with pytest.raises(InputError, match="no API key"):
        Mfa(db, server_keys, clock).enroll("000000000000")
    ApiKeys(db, clock).revoke(key.id)
    with pytest.raises(InputError, match="is revoked"):
        Mfa(db, server_keys, clock).enroll(key.id)


def test_a_code_is_accepted_once(db: Database, server_keys: ServerKeys, clock) -> None:  # type: ignore[no-untyped-def]
    mfa, key_id, totp = enrolled(db, server_keys, clock)
    code = totp.at(clock.now)
    mfa.verify(key_id, code)
    with pytest.raises(AuthFailure, match="already used") as err:
        mfa.verify(key_id, code)
    assert err.value.reason == "one-time code replayed"
    clock.advance(30)
    mfa.verify(key_id, totp.at(clock.now))  # the next step's code works


def test_an_older_code_is_refused_after_a_newer_one(db: Database, server_keys: ServerKeys, clock) -> None:  # type: ignore[no-untyped-def]
    mfa, key_id, totp = enrolled(db, server_keys, clock)
    previous = totp.at(clock.now - 30)  # still inside the ±1 step window
    mfa.verify(key_id, totp.at(clock.now))
    with pytest.raises(AuthFailure, match="already used"):
        mfa.verify(key_id, previous)


@pytest.mark.parametrize(("code", "reason"), [("000000", "wrong one-time code"), ("12ab56", "malformed one-time code"),
                                              ("1234567", "malformed one-time code"), ("", "malformed one-time code")])  # fmt: skip
def test_wrong_or_malformed_codes_are_refused(
    db: Database, server_keys: ServerKeys, clock, code: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    mfa, key_id, totp = enrolled(db, server_keys, clock)
    if code == totp.at(clock.now):
        clock.advance(120)
    with pytest.raises(AuthFailure) as err:
        mfa.verify(key_id, code)
    assert err.value.reason == reason


def test_codes_from_far_in_the_past_or_future_are_refused(
    db: Database, server_keys: ServerKeys, clock
) -> None:  # type: ignore[no-untyped-def]
    mfa, key_id, totp = enrolled(db, server_keys, clock)
    for offset in (-120, 120):
        with pytest.raises(AuthFailure, match="invalid one-time code"):
            mfa.verify(key_id, totp.at(clock.now + offset))


def test_not_enrolled_key(db: Database, server_keys: ServerKeys, clock) -> None:  # type: ignore[no-untyped-def]
    key = ApiKeys(db, clock).create("v", "viewer").key
    with pytest.raises(AuthFailure, match="no MFA enrolment"):
        Mfa(db, server_keys, clock).verify(key.id, "123456")


def test_replay_is_refused_across_processes(db: Database, db_url: str, server_keys: ServerKeys) -> None:
    """Another server process on the same database sees the code as used."""
    key = ApiKeys(db).create("ops", "operator").key
    e = Mfa(db, server_keys).enroll(key.id)
    code = pyotp.TOTP(e.secret).now()
    script = textwrap.dedent(
        f"""
        import sys
        from cvdeploy.security.db import open_database
        from cvdeploy.security.mfa import Mfa
        from cvdeploy.security.serverkeys import ServerKeys
        from cvdeploy.security.errors import AuthFailure
        m = Mfa(open_database({db_url!r}), ServerKeys({str(server_keys.directory)!r}))
        try:
            m.verify({key.id!r}, sys.argv[1])
        except AuthFailure as exc:
            print(exc.reason); sys.exit(1)
        print("accepted")
        """
    )
    first = subprocess.run([sys.executable, "-c", script, code], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and first.stdout.strip() == "accepted", first.stderr
    second = subprocess.run([sys.executable, "-c", script, code], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and second.stdout.strip() == "one-time code replayed", second.stderr
    with pytest.raises(AuthFailure, match="already used"):
        Mfa(open_database(db_url), server_keys).verify(key.id, code)


def test_a_wrong_wrap_key_cannot_read_secrets(db: Database, server_keys: ServerKeys, tmp_path, clock) -> None:  # type: ignore[no-untyped-def]
    from cvdeploy.errors import ConfigError

    _, key_id, totp = enrolled(db, server_keys, clock)
    other = ServerKeys(tmp_path / "other-secrets")
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        Mfa(db, other, clock).verify(key_id, totp.at(clock.now))
