"""Security for serving and for bundles: who may do what, what happened, and what a model file reveals.

Serving (plugs into the seams of :mod:`cvdeploy.serve.security`):

    db          open_database(url): SQLite file or postgresql:// URL; Schema/register_schema for other tables
    schema      the security tables (API keys, MFA, audit log)
    serverkeys  ServerKeys: the audit signing key and MFA wrap key, kept outside the database
    apikeys     ApiKeys: create/list/revoke/verify keys (hash-only storage, expiry, scope)
    mfa         Mfa: TOTP enrolment and single-use verification
    tokens      JwtVerifier: RS256/ES256 JWTs against a JWKS file
    policy      Policy (RBAC as data), DEFAULT_POLICY
    ratelimit   RateLimiter (token buckets per principal and per source), FailedAuthThrottle
    authn       BearerAuthenticator — an Authenticator
    authz       RbacAuthorizer — an Authorizer (rate limits + policy + audit of denials)
    audit       AuditLog (hash chain, signatures, verify, tail), AuditSink — an EventSink
    certs       dev_certificates, server_context/client_context (TLS ≥ 1.2)
    setup       SecuritySetup.build(...): everything above wired together for the server

Protected bundles:

    keyfiles    keygen, read_model_key/read_private_key/read_public_key
    encryption  AES-256-GCM per artifact file, in memory
    signing     Ed25519 signature over the manifest
    obfuscate   ONNX / OpenVINO IR name and metadata removal, dummy nodes
    protect     protect(bundle, out, ProtectOptions): the protected copy
    bundlekeys  BundleKeys (decrypt key, trust key) used by Bundle.load / load_runtime; using_keys

Heavy or optional packages (cryptography, PyJWT, pyotp, psycopg) are imported only when used; the
names below are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_POLICY",
    "ApiKeys",
    "AuditLog",
    "AuditSink",
    "BearerAuthenticator",
    "BundleKeys",
    "Database",
    "FailedAuthThrottle",
    "JwtVerifier",
    "Mfa",
    "Policy",
    "ProtectOptions",
    "RateLimiter",
    "RbacAuthorizer",
    "Schema",
    "SecuritySetup",
    "ServerKeys",
    "dev_certificates",
    "open_database",
    "protect",
    "register_schema",
    "using_keys",
]

if TYPE_CHECKING:
    from cvdeploy.security.apikeys import ApiKeys
    from cvdeploy.security.audit import AuditLog, AuditSink
    from cvdeploy.security.authn import BearerAuthenticator
    from cvdeploy.security.authz import RbacAuthorizer
    from cvdeploy.security.bundlekeys import BundleKeys, using_keys
    from cvdeploy.security.certs import dev_certificates
    from cvdeploy.security.db import Database, Schema, open_database, register_schema
    from cvdeploy.security.mfa import Mfa
    from cvdeploy.security.policy import DEFAULT_POLICY, Policy
    from cvdeploy.security.protect import ProtectOptions, protect
    from cvdeploy.security.ratelimit import FailedAuthThrottle, RateLimiter
    from cvdeploy.security.serverkeys import ServerKeys
    from cvdeploy.security.setup import SecuritySetup
    from cvdeploy.security.tokens import JwtVerifier

_LAZY = {
    "ApiKeys": "apikeys",
    "AuditLog": "audit",
    "AuditSink": "audit",
    "BearerAuthenticator": "authn",
    "RbacAuthorizer": "authz",
    "BundleKeys": "bundlekeys",
    "using_keys": "bundlekeys",
    "dev_certificates": "certs",
    "Database": "db",
    "Schema": "db",
    "open_database": "db",
    "register_schema": "db",
    "Mfa": "mfa",
    "DEFAULT_POLICY": "policy",
    "Policy": "policy",
    "ProtectOptions": "protect",
    "protect": "protect",
    "FailedAuthThrottle": "ratelimit",
    "RateLimiter": "ratelimit",
    "ServerKeys": "serverkeys",
    "SecuritySetup": "setup",
    "JwtVerifier": "tokens",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cvdeploy.security.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cvdeploy.security' has no attribute {name!r}")
