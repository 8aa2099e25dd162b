"""The server's :class:`~cvdeploy.serve.security.Authenticator`: API keys, JWTs, client certificates, TOTP.

For each connection (request), in this order:

1. a source address being slowed down after failed authentications → 429 (nothing else is read);
2. credentials in the URL query string (``?api_key=``, ``?access_token=``, a key-shaped value) → 401:
   URLs end up in access logs, proxies and browser history;
3. ``Authorization: Bearer <token>``: a ``cvd_…`` token is an API key (:mod:`~cvdeploy.security.apikeys`),
   a three-part ``ey…`` token a JWT (:mod:`~cvdeploy.security.tokens`); anything else → 401;
4. no header but a client certificate that the TLS layer verified (mutual TLS) → the newest active
   API key whose *name* is the certificate's common name gives the role and scope;
5. nothing at all → the anonymous principal (the policy lets it reach the health probes only);
6. ``X-CVD-OTP``, when sent with an API key, is checked and consumed
   (:mod:`~cvdeploy.security.mfa`): a valid, unused code sets ``principal.mfa = "totp"``; a wrong,
   replayed or unenrolled one is a failed authentication. Send it with state-changing requests only.

Every failure is counted against the source address and written to the audit log with the reason
(never the credential). The principal carries its role, its model scope (``Principal.models``) and
``source`` (the peer address, for the rate limits).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from cvdeploy.security.apikeys import ApiKey, ApiKeys, looks_like_api_key
from cvdeploy.security.errors import AuthFailure
from cvdeploy.security.mfa import Mfa
from cvdeploy.security.policy import ROLES
from cvdeploy.security.ratelimit import FailedAuthThrottle
from cvdeploy.security.tokens import JwtVerifier, looks_like_jwt
from cvdeploy.serve.security import Connection, Event, EventSink, Principal, tls_extension

__all__ = ["OTP_HEADER", "BearerAuthenticator", "credentials_in_query", "principal_for_key", "tls_extension"]

OTP_HEADER = "x-cvd-otp"
_QUERY_NAMES = re.compile(
    r"^(access[_-]?token|token|id[_-]?token|api[_-]?key|apikey|key|auth|authorization|bearer|jwt|otp|"
    r"x-cvd-otp|password|secret)$",
    re.I,
)
_QUERY_VALUES = re.compile(r"(cvd_[0-9a-f]{12}_|ey[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.)")


def credentials_in_query(query: str | bytes) -> bool:
    """Whether a URL query string carries something that looks like a credential."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if not text:
        return False
    for name, value in parse_qsl(text, keep_blank_values=True):
        if _QUERY_NAMES.match(name) or _QUERY_VALUES.search(value) or _QUERY_VALUES.search(name):
            return True
    return False


def principal_for_key(key: ApiKey, kind: str = "api-key", source: str | None = None) -> Principal:
    """The principal an API key stands for: its role, its scope and where it came from."""
    attrs = {"key_id": key.id, "name": key.name}
    if source:
        attrs["source"] = source
    models = frozenset(key.models) if key.models is not None else None
    return Principal(f"key:{key.id}", kind, frozenset({key.role}), attrs, models)


def _client_cert_cn(tls: Mapping[str, Any] | None) -> str | None:
    """The common name of the verified client certificate in an ASGI ``tls`` extension, if any."""
    chain = (tls or {}).get("client_cert_chain") or []
    if not chain:
        return None
    from cvdeploy._deps import require

    require("cryptography", "client certificates")
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    first = chain[0]
    cert = x509.load_pem_x509_certificate(first.encode() if isinstance(first, str) else first)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


class BearerAuthenticator:
    """Resolves a :class:`Connection` to a :class:`Principal` (see the module docstring).

    ``trust_client_certs``: map a client certificate in ``Connection.tls`` to a key — only safe when the
    TLS layer verified it against ``--tls-client-ca`` (``CERT_REQUIRED``), as :func:`cvdeploy.security.certs.server_context` does.
    """

    def __init__(
        self,
        keys: ApiKeys,
        mfa: Mfa | None = None,
        jwt: JwtVerifier | None = None,
        throttle: FailedAuthThrottle | None = None,
        events: EventSink | None = None,
        trust_client_certs: bool = False,
        offload: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.mfa = mfa
        self.jwt = jwt
        self.throttle = throttle or FailedAuthThrottle()
        self.events = events
        self.trust_client_certs = trust_client_certs
        # SQLite lookups take microseconds and run inline; a networked database is asked from a thread
        self.offload = keys.db.dialect != "sqlite" if offload is None else offload
        self.clock = clock

    async def authenticate(self, conn: Connection) -> Principal:
        if self.offload:
            return await asyncio.to_thread(self.resolve, conn)
        return self.resolve(conn)

    def resolve(self, conn: Connection) -> Principal:
        """The synchronous work of :meth:`authenticate` (usable from any transport)."""
        source = conn.client[0] if conn.client else "unknown"
        self.throttle.check(source)
        try:
            return self._resolve(conn, source)
        except AuthFailure as exc:
            self.throttle.failure(source)
            self._audit_failure(exc, source)
            raise

    def _resolve(self, conn: Connection, source: str) -> Principal:
        if credentials_in_query(conn.query):
            raise AuthFailure(
                "credentials in the URL are refused (URLs are logged); send 'Authorization: Bearer <token>'",
                "credentials in the query string",
            )
        header = conn.headers.get("authorization")
        otp = conn.headers.get(OTP_HEADER)
        if header is None:
            cn = _client_cert_cn(conn.tls) if self.trust_client_certs else None
            if cn is not None:
                key = self.keys.by_name(cn)
                if key is None:
                    raise AuthFailure(
                        "client certificate not recognised",
                        f"no active API key named {cn!r} for the certificate",
                    )
                return self._with_otp(principal_for_key(key, "mtls", source), key.id, otp)
            if otp is not None:
                raise AuthFailure("X-CVD-OTP needs an API key in the Authorization header", "OTP without key")
            return Principal("anonymous", "anonymous", frozenset(), {"source": source})
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthFailure(
                "use 'Authorization: Bearer <API key or JWT>'", f"authorization scheme {scheme!r}"
            )
        if looks_like_api_key(token):
            key = self.keys.verify(token)
            return self._with_otp(principal_for_key(key, "api-key", source), key.id, otp)
        if looks_like_jwt(token):
            if self.jwt is None:
                raise AuthFailure(
                    "JWT authentication is not configured on this server", "JWT without --jwt-jwks"
                )
            claims = self.jwt.verify(token)
            if otp is not None:
                raise AuthFailure(
                    "X-CVD-OTP applies to API keys; a JWT carries its second factor in its amr claim",
                    "OTP sent with a JWT",
                )
            attrs = {"sub": claims.sub, "source": source}
            models = frozenset(claims.models) if claims.models is not None else None
            roles = frozenset(r for r in claims.roles if r in ROLES)
            return Principal(
                f"jwt:{claims.sub}", "jwt", roles, attrs, models, "jwt-amr" if claims.mfa else None
            )
        raise AuthFailure("invalid bearer token", "bearer token is neither an API key nor a JWT")

    def _with_otp(self, principal: Principal, key_id: str, otp: str | None) -> Principal:
        if otp is None:
            return principal
        if self.mfa is None:
            raise AuthFailure("MFA is not configured on this server", "OTP sent, MFA not configured", key_id)
        self.mfa.verify(key_id, otp)
        return dataclasses.replace(principal, mfa="totp")

    def _audit_failure(self, exc: AuthFailure, source: str) -> None:
        if self.events is None:
            return
        details: dict[str, Any] = {"reason": exc.reason, "source": source}
        who = f"key:{exc.key_id}" if exc.key_id else "unknown"
        self.events.emit(Event("authenticate", "server", who, "failure", details))
