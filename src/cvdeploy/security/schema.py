"""The security tables: API keys, MFA enrolments and the hash-chained audit log (one schema).

Secrets are never stored in clear: ``api_keys.hash`` is a SHA-256 of the key (see
:mod:`cvdeploy.security.apikeys` for why not a slow KDF), ``mfa.secret`` is the TOTP secret
encrypted with AES-256-GCM under the server's wrap key (see :mod:`cvdeploy.security.serverkeys`).
"""

from __future__ import annotations

from cvdeploy.security.db import Schema, register_schema

SECURITY = register_schema(
    Schema(
        "security",
        (
            """CREATE TABLE IF NOT EXISTS api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                models TEXT,
                hash TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                expires DOUBLE PRECISION,
                revoked DOUBLE PRECISION,
                created_by TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys (name)",
            """CREATE TABLE IF NOT EXISTS mfa (
                key_id TEXT PRIMARY KEY,
                secret TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                last_counter BIGINT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS audit_log (
                seq BIGINT PRIMARY KEY,
                time TEXT NOT NULL,
                action TEXT NOT NULL,
                resource TEXT NOT NULL,
                principal TEXT NOT NULL,
                outcome TEXT NOT NULL,
                details TEXT NOT NULL,
                request_id TEXT,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                key_id TEXT NOT NULL,
                signature TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS audit_head (
                id INTEGER PRIMARY KEY,
                seq BIGINT NOT NULL,
                hash TEXT NOT NULL,
                key_id TEXT NOT NULL,
                signature TEXT NOT NULL
            )""",
        ),
    )
)
