"""API keys: random, shown once, stored only as a hash; expiry; revocation that takes effect at once.

A key reads ``cvd_<id>_<secret>``: ``id`` (12 hex digits) is public and finds the row; ``secret`` is
32 random bytes (``secrets.token_urlsafe``, 256 bits). The database keeps only
``SHA-256("cvdeploy-api-key\\0" + key)``, compared in constant time.

Why SHA-256 and not a slow KDF (scrypt, Argon2, PBKDF2): a slow KDF protects *low-entropy* secrets
(passwords) against offline guessing. A 256-bit random key cannot be guessed at any hash speed, so
a slow KDF would add only latency — tens of milliseconds on *every* request, since each request
presents the key — with no security gain. This is the reasoning of GitHub's and PyPI's tokens.

Every lookup reads the database (no cache), so ``cvdeploy keys revoke`` from another process takes
effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cvdeploy.security.schema  # noqa: F401  (registers the tables)
from cvdeploy.errors import ConfigError, InputError
from cvdeploy.security.db import Database
from cvdeploy.security.errors import AuthFailure
from cvdeploy.security.policy import ROLES
from cvdeploy.serve.security import Event, EventSink

__all__ = ["PREFIX", "ApiKey", "ApiKeys", "NewKey", "looks_like_api_key"]

PREFIX = "cvd_"
_TOKEN = re.compile(r"^cvd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _hash(token: str) -> str:
    return hashlib.sha256(b"cvdeploy-api-key\x00" + token.encode()).hexdigest()


def looks_like_api_key(text: str) -> bool:
    return text.startswith(PREFIX)


@dataclass(frozen=True)
class ApiKey:
    """A stored key's record — everything but the secret."""

    id: str
    name: str
    role: str
    models: tuple[str, ...] | None  # None: every model
    created: float  # unix seconds
    expires: float | None
    revoked: float | None
    created_by: str | None = None

    def state(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        doc = asdict(self)
        doc["models"] = list(self.models) if self.models is not None else None
        if now is not None:
            doc["state"] = self.state(now)
        return doc


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``token`` is shown to the user once and never stored."""

    key: ApiKey
    token: str


def _parse_models(models: Sequence[str] | None) -> tuple[str, ...] | None:
    if models is None:
        return None
    out = tuple(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not out:
        return None
    bad = [m for m in out if not _MODEL.match(m)]
    if bad:
        raise ConfigError(f"--models: {bad[0]!r} is not a model name (letters, digits, . _ -)")
    return out


class ApiKeys:
    """Create, list, revoke and verify API keys in the security database."""

    def __init__(
        self, db: Database, clock: Callable[[], float] = time.time, events: EventSink | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.events = events  # key creations and revocations are reported here (the audit log)

    def _report(self, action: str, key: ApiKey, by: str | None, details: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.emit(Event(action, f"key:{key.id}", by or "unknown", "success", details))

    _COLUMNS = "id, name, role, models, created, expires, revoked, created_by"

    @staticmethod
    def _row(row: tuple[Any, ...]) -> ApiKey:
        models = json.loads(row[3]) if row[3] else None
        return ApiKey(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            tuple(models) if models is not None else None,
            float(row[4]),
            None if row[5] is None else float(row[5]),
            None if row[6] is None else float(row[6]),
            row[7],
        )

    def create(
        self,
        name: str,
        role: str,
        models: Sequence[str] | None = None,
        expires_in: float | None = None,
        created_by: str | None = None,
    ) -> NewKey:
        """A new key for ``role``, optionally limited to ``models`` and expiring ``expires_in`` s from now."""
        if not _NAME.match(name or ""):
            raise ConfigError(
                f"--name {name!r}: use 1-64 letters, digits or . _ @ - (starting with a letter/digit)"
            )
        if role not in ROLES:
            raise ConfigError(f"--role {role!r}: use one of {', '.join(ROLES)}")
        if expires_in is not None and expires_in <= 0:
            raise ConfigError(f"--expires-in {expires_in}: give a positive number of seconds")
        scope = _parse_models(models)
        now = self.clock()
        key_id = secrets.token_hex(6)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            key_id, name, role, scope, now, now + expires_in if expires_in else None, None, created_by
        )
        with self.db.transaction(write=True) as tx:
            tx.execute(
                f"INSERT INTO api_keys ({self._COLUMNS}, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, role, json.dumps(list(scope)) if scope else None, now, record.expires, None,
                 created_by, _hash(token)),
            )  # fmt: skip
        self._report("keys.create", record, created_by,
                     {"name": name, "role": role, "models": list(scope) if scope else None, "expires": record.expires})  # fmt: skip
        return NewKey(record, token)

    def list(self) -> list[ApiKey]:
        rows = self.db.query(f"SELECT {self._COLUMNS} FROM api_keys ORDER BY created, id")
        return [self._row(r) for r in rows]

    def get(self, key_id: str) -> ApiKey:
        rows = self.db.query(f"SELECT {self._COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        if not rows:
            raise InputError(f"no API key with id {key_id!r}; see 'cvdeploy keys list'")
        return self._row(rows[0])

    def revoke(self, key_id: str, by: str | None = None) -> ApiKey:
        """Revoke a key now (idempotent); every later request with it is refused."""
        self.get(key_id)
        with self.db.transaction(write=True) as tx:
            tx.execute(
                "UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (self.clock(), key_id)
            )
            changed = tx.rowcount == 1
        key = self.get(key_id)
        if changed:
            self._report("keys.revoke", key, by, {"name": key.name})
        return key

    def by_name(self, name: str) -> ApiKey | None:
        """The newest active key called ``name`` (how a client certificate's CN finds its key)."""
        now = self.clock()
        rows = self.db.query(
            f"SELECT {self._COLUMNS} FROM api_keys WHERE name = ? AND revoked IS NULL ORDER BY created DESC",
            (name,),
        )
        for row in rows:
            key = self._row(row)
            if key.state(now) == "active":
                return key
        return None

    def verify(self, token: str) -> ApiKey:
        """The active key that ``token`` is, or :class:`AuthFailure` (``.reason`` says why, for the audit log)."""
        m = _TOKEN.match(token)
        if not m:
            raise AuthFailure("invalid API key", "malformed API key")
        rows = self.db.query(f"SELECT {self._COLUMNS}, hash FROM api_keys WHERE id = ?", (m.group(1),))
        # compare against a dummy hash when the id is unknown, so timing does not tell ids apart
        stored = str(rows[0][-1]) if rows else "0" * 64
        if not hmac.compare_digest(stored, _hash(token)) or not rows:
            raise AuthFailure("invalid API key", "unknown key or wrong secret", m.group(1))
        key = self._row(rows[0][:-1])
        state = key.state(self.clock())
        if state != "active":
            raise AuthFailure(f"API key {state}", f"key {state}", key.id)
        return key
