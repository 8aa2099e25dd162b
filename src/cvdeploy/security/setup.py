"""Everything the server needs for authentication, RBAC, rate limits and audit, built from its flags.

    setup = SecuritySetup.build("cvdeploy.db", jwt_issuer=..., jwt_audience=..., jwt_jwks=...)
    security = setup.security()       # a cvdeploy.serve.security.Security for create_app(...)
    ...
    setup.close()                     # at shutdown: writes what is queued for the audit log

The server passes ``security`` to the app; events (state changes, denials, failed authentications,
inference summaries) go to the log *and* the tamper-evident audit log (:attr:`SecuritySetup.events`,
shared by the authenticator, the authorizer and the app).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cvdeploy.security.apikeys import ApiKeys
from cvdeploy.security.audit import AuditLog, AuditSink
from cvdeploy.security.authn import BearerAuthenticator
from cvdeploy.security.authz import RbacAuthorizer
from cvdeploy.security.db import Database, open_database
from cvdeploy.security.mfa import Mfa
from cvdeploy.security.policy import DEFAULT_POLICY, Policy
from cvdeploy.security.ratelimit import FailedAuthThrottle, Rate, RateLimiter
from cvdeploy.security.serverkeys import ServerKeys
from cvdeploy.security.tokens import JwtVerifier
from cvdeploy.serve.security import FanoutEventSink, LogEventSink, Security

__all__ = ["SecuritySetup"]


@dataclass
class SecuritySetup:
    """The security objects of one server, sharing one database and one audit sink."""

    db: Database
    server_keys: ServerKeys
    keys: ApiKeys
    mfa: Mfa
    audit: AuditLog
    sink: AuditSink
    limiter: RateLimiter
    throttle: FailedAuthThrottle
    authenticator: BearerAuthenticator
    authorizer: RbacAuthorizer
    events: FanoutEventSink

    @classmethod
    def build(
        cls,
        db_url: str | Path,
        jwt_issuer: str | None = None,
        jwt_audience: str | None = None,
        jwt_jwks: str | Path | None = None,
        secrets_dir: str | Path | None = None,
        per_principal: Rate | None = Rate(50, 100),
        per_source: Rate | None = Rate(100, 200),
        trust_client_certs: bool = False,
        policy: Policy = DEFAULT_POLICY,
        throttle: FailedAuthThrottle | None = None,
    ) -> SecuritySetup:
        """``per_principal``/``per_source``: the rate limits (None: not limited); ``trust_client_certs``:
        a verified client certificate stands for the API key named by its CN (mutual TLS only);
        ``throttle``: the slowdown after failed authentications (default: 5 free, then 1 s doubling)."""
        jwt = None
        if jwt_jwks is not None or jwt_issuer is not None or jwt_audience is not None:
            if not (jwt_jwks and jwt_issuer and jwt_audience):
                from cvdeploy.errors import ConfigError

                raise ConfigError("JWT needs all three of --jwt-issuer, --jwt-audience and --jwt-jwks")
            jwt = JwtVerifier(jwt_issuer, jwt_audience, jwt_jwks)
        db = open_database(db_url)
        server_keys = ServerKeys(secrets_dir)
        server_keys.signing_key()  # created (or read) now: a missing key is a start-up error, not a request's
        server_keys.wrap_key()
        audit = AuditLog(db, server_keys)
        sink = AuditSink(audit)
        keys = ApiKeys(db, events=sink)
        mfa = Mfa(db, server_keys, events=sink)
        limiter = RateLimiter(per_principal, per_source)
        throttle = throttle or FailedAuthThrottle()
        events = FanoutEventSink([LogEventSink(), sink])  # denials and failed logins: in the log too
        authn = BearerAuthenticator(keys, mfa, jwt, throttle, events, trust_client_certs)
        authz = RbacAuthorizer(policy, limiter, events)
        return cls(db, server_keys, keys, mfa, audit, sink, limiter, throttle, authn, authz, events)

    def security(self) -> Security:
        """The server's :class:`~cvdeploy.serve.security.Security`: these seams, events logged and audited."""
        return Security(self.authenticator, self.authorizer, self.events)

    def close(self) -> None:
        self.sink.close()
        self.db.close()
