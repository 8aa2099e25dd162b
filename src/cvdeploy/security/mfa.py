"""TOTP second factor (RFC 6238, via pyotp) for API keys, with each code accepted once.

``enroll`` makes a new secret for a key and returns it with its ``otpauth://`` URI — shown once, for
an authenticator app; the database keeps it only encrypted (:meth:`ServerKeys.seal`). ``verify``
accepts the code of the current 30-second step or one step either side (clock drift), and only if
that step is *newer* than the last one accepted for the key: the check-and-record is one
conditional ``UPDATE`` in the shared database, so a code used once is refused everywhere after —
by this process, another worker, or another server on the same database.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import cvdeploy.security.schema  # noqa: F401  (registers the tables)
from cvdeploy._deps import require
from cvdeploy.errors import InputError
from cvdeploy.security.apikeys import ApiKeys
from cvdeploy.security.db import Database
from cvdeploy.security.errors import AuthFailure
from cvdeploy.security.serverkeys import ServerKeys
from cvdeploy.serve.security import Event, EventSink

__all__ = ["Enrolment", "Mfa"]

STEP = 30
DIGITS = 6


@dataclass(frozen=True)
class Enrolment:
    """A fresh TOTP secret (base32) and its provisioning URI; shown once."""

    key_id: str
    secret: str
    uri: str


class Mfa:
    """TOTP enrolment and single-use verification for the keys of one database."""

    def __init__(
        self,
        db: Database,
        server_keys: ServerKeys,
        clock: Callable[[], float] = time.time,
        issuer: str = "cvdeploy",
        window: int = 1,
        events: EventSink | None = None,
    ) -> None:
        self.db = db
        self.events = events  # enrolments are reported here (the audit log)
        self.server_keys = server_keys
        self.clock = clock
        self.issuer = issuer
        self.window = window

    def enroll(self, key_id: str, by: str | None = None) -> Enrolment:
        """A new secret for ``key_id`` (replacing any earlier one)."""
        pyotp = require("pyotp", "MFA")
        key = ApiKeys(self.db, self.clock).get(key_id)
        state = key.state(self.clock())
        if state != "active":
            raise InputError(f"API key {key_id} is {state}; create a new key and enroll that one")
        secret = pyotp.random_base32(32)
        sealed = self.server_keys.seal(secret.encode(), f"mfa:{key_id}")
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
            name=f"{key.name} ({key.id})", issuer_name=self.issuer
        )
        with self.db.transaction(write=True) as tx:
            tx.execute("DELETE FROM mfa WHERE key_id = ?", (key_id,))
            tx.execute(
                "INSERT INTO mfa (key_id, secret, created, last_counter) VALUES (?, ?, ?, ?)",
                (key_id, sealed, self.clock(), -1),
            )
        if self.events is not None:
            self.events.emit(
                Event("mfa.enroll", f"key:{key_id}", by or "unknown", "success", {"name": key.name})
            )
        return Enrolment(key_id, secret, uri)

    def enrolled(self, key_id: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM mfa WHERE key_id = ?", (key_id,)))

    def verify(self, key_id: str, code: str) -> None:
        """Accept ``code`` once, or raise :class:`AuthFailure` (not enrolled, wrong, or already used)."""
        pyotp = require("pyotp", "MFA")
        rows = self.db.query("SELECT secret, last_counter FROM mfa WHERE key_id = ?", (key_id,))
        if not rows:
            raise AuthFailure(
                "this key has no MFA enrolment; enroll one with 'cvdeploy mfa enroll'",
                "mfa not enrolled",
                key_id,
            )
        code = code.strip()
        if not (len(code) == DIGITS and code.isdigit()):
            raise AuthFailure("invalid one-time code", "malformed one-time code", key_id)
        secret = self.server_keys.unseal(str(rows[0][0]), f"mfa:{key_id}").decode()
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
        now = int(self.clock() // STEP)
        matched = [c for c in range(now - self.window, now + self.window + 1)
                   if hmac.compare_digest(totp.generate_otp(c), code)]  # fmt: skip
        if not matched:
            raise AuthFailure("invalid one-time code", "wrong one-time code", key_id)
        counter = max(matched)
        with self.db.transaction(write=True) as tx:
            tx.execute(
                "UPDATE mfa SET last_counter = ? WHERE key_id = ? AND last_counter < ?",
                (counter, key_id, counter),
            )
            accepted = tx.rowcount == 1
        if not accepted:
            raise AuthFailure(
                "one-time code already used; wait for the next one", "one-time code replayed", key_id
            )
